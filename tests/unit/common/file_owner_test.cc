#include "agent/common/file_owner.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <grp.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include "tests/support/test_util.h"

// getgrouplist() as ResolveFileOwner() sees it: the C library's, unless a test scripts it.
// Defined here, it takes the place of the C library's in this binary (nova_dt_common is a static
// library: its call resolves to this definition).
namespace {
struct ScriptedGroupList {
  bool on = false;
  int calls = 0;
  std::vector<int> needed;      // per call: -1 = fill in `groups` and succeed, else fail with it
  std::vector<gid_t> groups;
};
ScriptedGroupList scripted;
}  // namespace

extern "C" int getgrouplist(const char* user, gid_t group, gid_t* groups, int* ngroups) noexcept {
  if (!scripted.on) {
    using Fn = int (*)(const char*, gid_t, gid_t*, int*);
    static const Fn real = reinterpret_cast<Fn>(::dlsym(RTLD_NEXT, "getgrouplist"));
    return real(user, group, groups, ngroups);
  }
  const int call = scripted.calls++;
  const int needed = call < static_cast<int>(scripted.needed.size()) ? scripted.needed[call] : -1;
  if (needed >= 0) {
    *ngroups = needed;
    return -1;
  }
  if (*ngroups < static_cast<int>(scripted.groups.size())) {
    *ngroups = static_cast<int>(scripted.groups.size());
    return -1;
  }
  std::copy(scripted.groups.begin(), scripted.groups.end(), groups);
  *ngroups = static_cast<int>(scripted.groups.size());
  return *ngroups;
}

namespace novadt {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

TEST(ResolveFileOwnerTest, NamesAndNumbersAsQemuConfSpellsThem) {
  auto root = ResolveFileOwner("root", "root");
  ASSERT_TRUE(root.ok()) << root.status();
  EXPECT_EQ(root->uid, 0u);
  EXPECT_EQ(root->gid, 0u);
  EXPECT_THAT(root->groups, ::testing::Contains(0u));
  EXPECT_EQ(root->name, "root:root");

  auto numeric = ResolveFileOwner("+64990", "+64991");  // no account needed
  ASSERT_TRUE(numeric.ok()) << numeric.status();
  EXPECT_EQ(numeric->uid, 64990u);
  EXPECT_EQ(numeric->gid, 64991u);
  EXPECT_EQ(numeric->groups, std::vector<gid_t>{64991u});
}

class ScriptedGroupListTest : public ::testing::Test {
 protected:
  void SetUp() override { scripted = {true, 0, {}, {}}; }
  void TearDown() override { scripted = {}; }
};

// More groups than the first buffer holds: the second call gets a buffer of the size asked for.
TEST_F(ScriptedGroupListTest, AUserWithManyGroupsGetsThemAll) {
  scripted.needed = {100};
  for (gid_t g = 0; g < 100; ++g) scripted.groups.push_back(1000 + g);
  auto owner = ResolveFileOwner("root", "+64991");
  ASSERT_TRUE(owner.ok()) << owner.status();
  EXPECT_EQ(scripted.calls, 2);
  EXPECT_EQ(owner->groups.size(), 101u);
  EXPECT_EQ(owner->groups.front(), 64991u);
  EXPECT_THAT(owner->groups, ::testing::Not(::testing::Contains(0u)));
}

// The groups changed between the two calls (or the lookup failed): the buffer was never filled,
// and its padding must not become groups (gid 0 would pass root's group bits).
TEST_F(ScriptedGroupListTest, ASecondFailureIsAnErrorNeverGroupZero) {
  scripted.needed = {100, 120};
  auto owner = ResolveFileOwner("root", "+64991");
  EXPECT_EQ(scripted.calls, 2);
  ASSERT_FALSE(owner.ok()) << "groups: " << ::testing::PrintToString(owner->groups);
  EXPECT_THAT(owner.status().message(), HasSubstr("cannot list the groups of user 'root'"));
}

TEST(ResolveFileOwnerTest, AnUnknownOrMalformedNameIsAClearError) {
  auto user = ResolveFileOwner("no-such-user-nova-dt", "root");
  EXPECT_EQ(user.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(user.status().message(), HasSubstr("no such user 'no-such-user-nova-dt'"));
  auto group = ResolveFileOwner("root", "no-such-group-nova-dt");
  EXPECT_EQ(group.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(group.status().message(), HasSubstr("no such group 'no-such-group-nova-dt'"));
  EXPECT_EQ(ResolveFileOwner("", "root").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveFileOwner("+x", "root").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(FileOwnerTest, OwnedDirectoriesAndFilesGetExactlyWhatIsAsked) {
  ASSERT_EQ(::geteuid(), 0u) << "chown to another user: run as root";
  testing::ScratchDir scratch("nova-dt-owner");
  const std::string dir = scratch.path() + "/d";
  ASSERT_TRUE(MakeOwnedDir(dir, 64990, 64991, 0710).ok());
  struct stat st {};
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 64990u);
  EXPECT_EQ(st.st_gid, 64991u);
  EXPECT_EQ(st.st_mode & 07777, 0710u);
  // An existing directory is fixed; the group alone can be kept.
  ASSERT_EQ(::chmod(dir.c_str(), 0777), 0);
  ASSERT_TRUE(MakeOwnedDir(dir, 0, FileOwner::kKeepGid, 0700).ok());
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_gid, 64991u);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  // Never through a symbolic link, never onto a file.
  fs::create_symlink(dir, scratch.path() + "/link");
  EXPECT_EQ(MakeOwnedDir(scratch.path() + "/link", 1, 1, 0777).code(),
            absl::StatusCode::kFailedPrecondition);
  const std::string file = scratch.Write("f", "x");
  EXPECT_EQ(MakeOwnedDir(file, 1, 1, 0777).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);

  FileOwner q;
  q.uid = 64990;
  q.gid = 64991;
  q.name = "q";
  const int fd = ::open(file.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(SetFileOwner(fd, q, 0600, file).ok());
  ::close(fd);
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 64990u);
  EXPECT_EQ(st.st_gid, 64991u);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST(FileOwnerTest, CheckSearchableFollowsOwnerGroupAndOtherBits) {
  ASSERT_EQ(::geteuid(), 0u) << "chown to another user: run as root";
  testing::ScratchDir scratch("nova-dt-owner");
  FileOwner q;
  q.uid = 64990;
  q.gid = 64991;
  q.groups = {64991, 64992};
  q.name = "q:q";
  const std::string a = scratch.path() + "/a", b = a + "/b";
  fs::create_directories(b);
  // mkdtemp's 0700: the first directory it cannot pass is named.
  Status st = CheckSearchable(b, q);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr(scratch.path() + " (mode 0700, owner 0:"));
  EXPECT_THAT(st.message(), HasSubstr("not searchable by q:q"));

  ASSERT_EQ(::chmod(scratch.path().c_str(), 0711), 0);  // other x
  ASSERT_EQ(::chmod(a.c_str(), 0710), 0);
  ASSERT_EQ(::chown(a.c_str(), 0, 64992), 0);  // a supplementary group's x
  ASSERT_EQ(::chmod(b.c_str(), 0700), 0);
  ASSERT_EQ(::chown(b.c_str(), 64990, 0), 0);  // the owner's x
  EXPECT_TRUE(CheckSearchable(b, q).ok());
  EXPECT_TRUE(CheckSearchable(b + "/", q).ok());

  ASSERT_EQ(::chown(a.c_str(), 0, 64993), 0);  // a group q is not in
  EXPECT_THAT(CheckSearchable(b, q).message(), HasSubstr(a + " (mode 0710"));
  EXPECT_TRUE(CheckSearchable(b, FileOwner{}).ok()) << "keeping the creator's ids";
  ASSERT_EQ(::chown(a.c_str(), 0, 64992), 0);
  EXPECT_EQ(CheckSearchable(a + "/missing", q).code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace novadt
