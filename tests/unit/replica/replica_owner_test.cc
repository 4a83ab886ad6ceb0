#include "agent/replica/replica_owner.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

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
  // A host that is not a host name is refused even with a matching check.
  std::string body = "nova-dt-owner 1\nhost a/b\nreleased 0\ntaken-over 0\n";
  EXPECT_FALSE(WriteReplicaOwner("/nonexistent", {"a/b", false, false}).ok());
  EXPECT_TRUE(absl::IsDataLoss(DecodeReplicaOwner(body + "check 0\n").status()));
}

TEST(ReplicaOwnerTest, AnOversizedFileIsRefusedWithoutReadingItAll) {
  novadt::testing::ScratchDir dir;
  dir.Write("owner.rec", std::string(1 << 20, 'a'));
  EXPECT_TRUE(absl::IsDataLoss(ReadReplicaOwner(dir.path()).status()));
}

}  // namespace
}  // namespace novadt::replica
