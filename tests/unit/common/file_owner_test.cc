#include "agent/common/file_owner.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "tests/support/test_util.h"

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
