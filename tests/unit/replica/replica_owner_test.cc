#include "agent/replica/replica_owner.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "tests/support/test_util.h"

namespace novadt::replica {
namespace {

TEST(ReplicaOwnerTest, RoundTripsThroughItsFile) {
  novadt::testing::ScratchDir dir;
  for (const ReplicaOwner& o : {ReplicaOwner{"rig-a", false, false},
                                ReplicaOwner{"compute-2.example.org", true, false},
                                ReplicaOwner{"rig-b", false, true}}) {
    ASSERT_TRUE(WriteReplicaOwner(dir.path(), o).ok());
    auto read = ReadReplicaOwner(dir.path());
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_EQ(*read, o);
  }
  struct stat st;
  ASSERT_EQ(::stat((dir.path() + "/owner.rec").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(ReplicaOwnerTest, NoRecordIsNotFound) {
  novadt::testing::ScratchDir dir;
  EXPECT_TRUE(absl::IsNotFound(ReadReplicaOwner(dir.path()).status()));
}

TEST(ReplicaOwnerTest, AnythingButTheExactShapeIsDataLoss) {
  const std::string good = EncodeReplicaOwner({"rig-a", false, false});
  ASSERT_TRUE(DecodeReplicaOwner(good).ok());
  std::string flipped = good;
  flipped[good.find("rig-a")] = 'x';  // same shape, check no longer matches
  std::string other_host = good;
  other_host.replace(good.find("rig-a"), 5, "../..");
  for (const std::string& bad :
       {std::string(""), good.substr(0, good.size() - 1), good + "x\n", flipped,
        EncodeReplicaOwner({"rig-a", false, false}).replace(0, 15, "nova-dt-owner 2"),
        std::string(100000, 'a'), std::string("nova-dt-owner 1\n\n\n\n\n"), other_host}) {
    EXPECT_TRUE(absl::IsDataLoss(DecodeReplicaOwner(bad).status())) << bad.substr(0, 80);
  }
  // A host that is not a host name is refused even with a matching check: EncodeReplicaOwner
  // seals whatever it is given, so only the decoder's host validation stands in the way.
  novadt::testing::ScratchDir dir;
  EXPECT_TRUE(absl::IsInvalidArgument(WriteReplicaOwner(dir.path(), {"a/b", false, false})));
  for (const std::string& host :
       std::vector<std::string>{"a/b", "../..", "", "-rig", "rig a", std::string(256, 'a')}) {
    const std::string sealed = EncodeReplicaOwner({host, false, false});
    const Status st = DecodeReplicaOwner(sealed).status();
    EXPECT_TRUE(absl::IsDataLoss(st)) << host << ": " << st;
    EXPECT_EQ(st.message().find("check value"), std::string_view::npos)
        << host << ": refused for its check, not its host: " << st;
    EXPECT_NE(st.message().find("host"), std::string_view::npos) << st;
  }
}

TEST(ReplicaOwnerTest, AnOversizedFileIsRefusedWithoutReadingItAll) {
  novadt::testing::ScratchDir dir;
  dir.Write("owner.rec", std::string(1 << 20, 'a'));
  EXPECT_TRUE(absl::IsDataLoss(ReadReplicaOwner(dir.path()).status()));
}

}  // namespace
}  // namespace novadt::replica
