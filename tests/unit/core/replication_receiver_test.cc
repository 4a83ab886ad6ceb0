#include "agent/core/replication_receiver.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/support/fake_replica_sink.h"

namespace novadt::core {
namespace {

using novadt::testing::FakeReplicaState;
using novadt::testing::FakeSinkFactory;
using novadt::testing::SmallEpoch;
using novadt::testing::TestOpen;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class ReplicationReceiverTest : public ::testing::Test {
 protected:
  std::unique_ptr<ReplicationReceiver> Start(const StreamOpen& open = TestOpen()) {
    auto r = ReplicationReceiver::Start(open, FakeSinkFactory(state_));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *std::move(r) : nullptr;
  }
  // Feeds items; returns the first error, and the acks in *acks.
  Status Feed(ReplicationReceiver& r, const std::vector<StreamItem>& items,
              std::vector<uint64_t>* acks = nullptr) {
    for (const auto& item : items) {
      auto a = r.Handle(item);
      if (!a.ok()) return a.status();
      if (a->has_value() && acks) acks->push_back(**a);
    }
    return absl::OkStatus();
  }

  std::shared_ptr<FakeReplicaState> state_ = std::make_shared<FakeReplicaState>();
};

TEST_F(ReplicationReceiverTest, CompleteEpochsAreCommittedAndAckedInOrder) {
  auto r = Start();
  std::vector<uint64_t> acks;
  ASSERT_TRUE(Feed(*r, SmallEpoch(1), &acks).ok());
  ASSERT_TRUE(Feed(*r, SmallEpoch(2), &acks).ok());
  EXPECT_THAT(acks, ElementsAre(1, 2));
  EXPECT_EQ(r->last_committed(), 2u);
  r->Close(absl::OkStatus());
  EXPECT_THAT(state_->Calls(),
              ElementsAre("begin 1", "pages 2", "disk vda 4096+512", "devstate 10",
                          "devstate 5 last", "commit 1", "begin 2", "pages 2", "disk vda 8192+512",
                          "devstate 10", "devstate 5 last", "commit 2", "close OK"));
}

TEST_F(ReplicationReceiverTest, OpenIsChecked) {
  StreamOpen o = TestOpen();
  o.protocol = kReplicationProtocolVersion + 1;
  auto r = ReplicationReceiver::Start(o, FakeSinkFactory(state_));
  EXPECT_TRUE(absl::IsFailedPrecondition(r.status()));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("protocol version " + std::to_string(kReplicationProtocolVersion + 1)));

  o = TestOpen();
  o.instance_uuid.clear();
  EXPECT_TRUE(absl::IsInvalidArgument(ReplicationReceiver::Start(o, FakeSinkFactory(state_)).status()));
  o = TestOpen();
  o.ram_size_bytes = 1000;
  EXPECT_TRUE(absl::IsInvalidArgument(ReplicationReceiver::Start(o, FakeSinkFactory(state_)).status()));
  o = TestOpen();
  o.disks.push_back({"", 10});
  EXPECT_TRUE(absl::IsInvalidArgument(ReplicationReceiver::Start(o, FakeSinkFactory(state_)).status()));

  auto refusing = [](const StreamOpen&) -> StatusOr<std::unique_ptr<ReplicaSink>> {
    return absl::ResourceExhaustedError("no space for a replica");
  };
  EXPECT_TRUE(absl::IsResourceExhausted(ReplicationReceiver::Start(TestOpen(), refusing).status()));
}

TEST_F(ReplicationReceiverTest, ItemsOutOfOrderEndTheStream) {
  struct Case {
    std::vector<StreamItem> items;
    std::string error;
  };
  const std::vector<Case> cases = {
      {{RamPages{{1}, std::string(4096, 'x')}}, "RamPages outside an epoch"},
      {{EpochEnd{1}}, "EpochEnd outside an epoch"},
      {{EpochBegin{1}, EpochBegin{2}}, "EpochBegin while epoch 1 is still open"},
      {{EpochBegin{1}, EpochEnd{2}}, "EpochEnd 2 for open epoch 1"},
      {{EpochBegin{1}, EpochEnd{1}}, "without the device state"},
      {{EpochBegin{1}, DeviceStateChunk{"x", true}, DeviceStateChunk{"y", true}},
       "DeviceState after the last chunk"},
      {{EpochBegin{1}, DeviceStateChunk{"x", true}, EpochEnd{1, 3, 0, 1}},
       "epoch 1 incomplete: primary sent 3 pages"},
  };
  for (const auto& c : cases) {
    auto r = Start();
    Status st = Feed(*r, c.items);
    EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr(c.error));
  }
  auto r = Start();
  ASSERT_TRUE(Feed(*r, SmallEpoch(1)).ok());
  Status st = Feed(*r, {EpochBegin{3}});
  EXPECT_THAT(std::string(st.message()), HasSubstr("wrong epoch order"));
}

TEST_F(ReplicationReceiverTest, MalformedDataIsRefusedBeforeReachingTheSink) {
  struct Case {
    StreamItem item;
    std::string error;
  };
  const std::vector<Case> cases = {
      {RamPages{{1, 2}, std::string(4096, 'x')}, "2 pages carries 4096 bytes"},
      {RamPages{{64}, std::string(4096, 'x')}, "page 64 beyond guest RAM"},
      {DiskWrite{"vdb", 0, "x"}, "unknown disk 'vdb'"},
      {DiskWrite{"vda", (1 << 20) - 1, "xy"}, "beyond disk 'vda'"},
      {DiskWrite{"vda", ~0ull, "x"}, "beyond disk 'vda'"},
      {DiskWrite{"vda", 0, "x", true, 1}, "zeroes carries data"},
  };
  for (const auto& c : cases) {
    auto r = Start();
    ASSERT_TRUE(Feed(*r, {EpochBegin{1}}).ok());
    Status st = Feed(*r, {c.item});
    EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr(c.error));
  }
  for (const auto& call : state_->Calls()) EXPECT_EQ(call, "begin 1");
}

TEST_F(ReplicationReceiverTest, SinkRefusalIsTheStreamsError) {
  state_->fail_on = "commit 2";
  state_->fail_with = absl::ResourceExhaustedError("replica disk full");
  auto r = Start();
  ASSERT_TRUE(Feed(*r, SmallEpoch(1)).ok());
  Status st = Feed(*r, SmallEpoch(2));
  EXPECT_TRUE(absl::IsResourceExhausted(st));
  EXPECT_EQ(r->last_committed(), 1u);
  r->Close(st);
  EXPECT_EQ(state_->Calls().back(), "close RESOURCE_EXHAUSTED: replica disk full");
}

TEST_F(ReplicationReceiverTest, StreamEndingMidEpochTellsTheSinkToDropIt) {
  auto r = Start();
  ASSERT_TRUE(Feed(*r, SmallEpoch(1)).ok());
  ASSERT_TRUE(Feed(*r, {EpochBegin{2}, RamPages{{3}, std::string(4096, 'z')}}).ok());
  r->Close(absl::OkStatus());
  r->Close(absl::OkStatus());  // idempotent
  auto calls = state_->Calls();
  EXPECT_THAT(calls.back(), HasSubstr("DATA_LOSS: stream ended inside epoch 2"));
  EXPECT_EQ(std::count_if(calls.begin(), calls.end(),
                          [](const auto& c) { return c.rfind("close", 0) == 0; }),
            1);
}

// Identity and geometry from the primary are outside input: refused at the open, before the
// factory makes anything (nothing is asked of it).
TEST_F(ReplicationReceiverTest, MalformedIdentitiesAndOversizedGeometriesAreRefusedAtTheOpen) {
  int made = 0;
  auto counting = [&](const StreamOpen& o) {
    ++made;
    return FakeSinkFactory(state_)(o);
  };
  StreamLimits limits;
  limits.max_guest_ram_bytes = 1 << 20;
  limits.max_disks = 2;
  limits.max_disk_bytes = 1 << 20;
  limits.max_domain_xml_bytes = 100;
  std::vector<std::pair<std::string, StreamOpen>> bad;
  auto with = [&](const std::string& what, auto change) {
    StreamOpen o = TestOpen();
    change(o);
    bad.emplace_back(what, o);
  };
  with("upper-case uuid", [](StreamOpen& o) {
    for (char& c : o.instance_uuid) c = static_cast<char>(std::toupper(c));
  });
  with("braced uuid", [](StreamOpen& o) { o.instance_uuid = "{" + o.instance_uuid + "}"; });
  with("path uuid", [](StreamOpen& o) { o.instance_uuid = "../../x"; });
  with("alias uuid", [](StreamOpen& o) { o.instance_uuid = "./" + o.instance_uuid; });
  with("long uuid", [](StreamOpen& o) { o.instance_uuid += std::string(100, 'a'); });
  with("host", [](StreamOpen& o) { o.primary_host = "../a"; });
  with("disk name", [](StreamOpen& o) { o.disks = {{"../vda", 4096}}; });
  with("duplicate disk", [](StreamOpen& o) { o.disks = {{"vda", 4096}, {"vda", 4096}}; });
  with("ram", [](StreamOpen& o) { o.ram_size_bytes = uint64_t{1} << 40; });
  with("disks", [](StreamOpen& o) { o.disks = {{"a", 4096}, {"b", 4096}, {"c", 4096}}; });
  with("disk size", [](StreamOpen& o) { o.disks = {{"vda", uint64_t{1} << 50}}; });
  with("domain xml", [](StreamOpen& o) { o.domain_xml = std::string(101, 'x'); });
  for (const auto& [what, open] : bad) {
    auto r = ReplicationReceiver::Start(open, counting, limits);
    EXPECT_FALSE(r.ok()) << what;
    EXPECT_TRUE(absl::IsInvalidArgument(r.status()) || absl::IsResourceExhausted(r.status()))
        << what << ": " << r.status();
  }
  EXPECT_EQ(made, 0);
  EXPECT_TRUE(ReplicationReceiver::Start(TestOpen(), counting, limits).ok());
}

// A primary that sends device state without end (130 MiB held after 64 messages, before this
// bound): refused at the limit, before the bytes are held.
TEST_F(ReplicationReceiverTest, DeviceStateBeyondTheLimitEndsTheStreamBeforeItIsHeld) {
  StreamLimits limits;
  limits.max_device_state_bytes = 1 << 20;
  auto r = ReplicationReceiver::Start(TestOpen(), FakeSinkFactory(state_), limits);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(Feed(**r, {EpochBegin{1}}).ok());
  Status st;
  int chunks = 0;
  for (; chunks < 64 && st.ok(); ++chunks) {
    st = Feed(**r, {DeviceStateChunk{std::string(256 << 10, 'd'), false, DeviceStateEncoding::kXorZstd}});
  }
  EXPECT_TRUE(absl::IsResourceExhausted(st)) << st;
  EXPECT_THAT(std::string(st.message()), HasSubstr("max_device_state_bytes"));
  EXPECT_EQ(chunks, 5) << "four chunks fit the 1 MiB bound, the fifth does not";
}

// max_epoch_bytes bounds every epoch after the seed (what the backup journals); the seed itself
// (the stream's first epoch, written in place) may be as large as the replica.
TEST_F(ReplicationReceiverTest, EpochsAfterTheSeedAreBoundedByMaxEpochBytes) {
  StreamLimits limits;
  limits.max_epoch_bytes = 3 * kGuestPageSize;
  auto r = ReplicationReceiver::Start(TestOpen(), FakeSinkFactory(state_), limits);
  ASSERT_TRUE(r.ok());
  const std::string four_pages(4 * kGuestPageSize, 's');
  ASSERT_TRUE(Feed(**r, {EpochBegin{1}, RamPages{{0, 1, 2, 3}, four_pages},
                         DeviceStateChunk{"state", true}, EpochEnd{1, 4, 0, 5}})
                  .ok())
      << "the seed is not bounded by max_epoch_bytes";
  Status st = Feed(**r, {EpochBegin{2}, RamPages{{0, 1}, std::string(2 * kGuestPageSize, 'a')},
                         DiskWrite{"vda", 0, "", true, 2 * kGuestPageSize}});
  EXPECT_TRUE(absl::IsResourceExhausted(st)) << st;
  EXPECT_THAT(std::string(st.message()), HasSubstr("max_epoch_bytes"));
  EXPECT_EQ(r->get()->last_committed(), 1u);
}

// ---------------------------------------------------------------------------------------------
// Boot files (protocol 4): declared in the StreamOpen, their bytes before the first epoch.

StreamOpen WithBootFiles(std::vector<BootFile> files) {
  StreamOpen o = TestOpen();
  o.protocol = kBootFilesProtocolVersion;
  o.boot_files = std::move(files);
  return o;
}

TEST_F(ReplicationReceiverTest, BootFilesReachTheSinkWholeAndEndBeforeTheFirstEpoch) {
  auto r = Start(WithBootFiles({{"kernel", 5000}, {"ramdisk", 10}}));
  ASSERT_TRUE(r);
  std::vector<uint64_t> acks;
  ASSERT_TRUE(Feed(*r,
                   {BootFileChunk{"kernel", 0, std::string(4096, 'k')},
                    BootFileChunk{"kernel", 4096, std::string(904, 'K')},
                    BootFileChunk{"ramdisk", 0, std::string(10, 'r')}},
                   &acks)
                  .ok());
  EXPECT_EQ(state_->boot_files_ended, 0) << "ended before the first epoch began";
  ASSERT_TRUE(Feed(*r, SmallEpoch(1), &acks).ok());
  ASSERT_TRUE(Feed(*r, SmallEpoch(2), &acks).ok());
  EXPECT_THAT(acks, ElementsAre(1, 2));
  EXPECT_EQ(state_->boot_files_ended, 1);
  EXPECT_EQ(state_->boot_files["kernel"], std::string(4096, 'k') + std::string(904, 'K'));
  EXPECT_EQ(state_->boot_files["ramdisk"], std::string(10, 'r'));
  const auto calls = state_->Calls();
  ASSERT_GE(calls.size(), 4u);
  EXPECT_THAT(std::vector<std::string>(calls.begin(), calls.begin() + 4),
              ElementsAre("bootfile kernel 0+4096", "bootfile kernel 4096+904",
                          "bootfile ramdisk 0+10", "begin 1"));
}

// A stream without boot files (an older primary's, or a server booting from none) still ends
// them, once: the replica then keeps none.
TEST_F(ReplicationReceiverTest, StreamsWithoutBootFilesOfEveryAcceptedVersionEndThemOnce) {
  for (uint32_t protocol = kMinReplicationProtocolVersion;
       protocol <= kReplicationProtocolVersion; ++protocol) {
    SCOPED_TRACE(protocol);
    state_ = std::make_shared<FakeReplicaState>();
    StreamOpen o = TestOpen();
    o.protocol = protocol;
    auto r = Start(o);
    ASSERT_TRUE(r);
    ASSERT_TRUE(Feed(*r, SmallEpoch(1)).ok());
    ASSERT_TRUE(Feed(*r, SmallEpoch(2)).ok());
    EXPECT_EQ(state_->boot_files_ended, 1);
    EXPECT_TRUE(state_->boot_files.empty());
  }
}

// What a primary declares is checked at the open, before the factory makes anything: names
// (Nova's two), sizes (not empty, within max_boot_file_bytes), the protocol that has them.
TEST_F(ReplicationReceiverTest, DeclaredBootFilesAreCheckedAtTheOpen) {
  int made = 0;
  auto counting = [&](const StreamOpen& o) {
    ++made;
    return FakeSinkFactory(state_)(o);
  };
  StreamLimits limits;
  limits.max_boot_file_bytes = 1 << 20;
  struct Case {
    std::string what;
    StreamOpen open;
    absl::StatusCode code;
    std::string error;
  };
  StreamOpen v3 = WithBootFiles({{"kernel", 10}});
  v3.protocol = kBasisProtocolVersion;
  const std::vector<Case> cases = {
      {"protocol 3", v3, absl::StatusCode::kInvalidArgument, "boot files in protocol version 3"},
      {"other name", WithBootFiles({{"vmlinuz", 10}}), absl::StatusCode::kInvalidArgument,
       "'vmlinuz' is neither kernel nor ramdisk"},
      {"path", WithBootFiles({{"../kernel", 10}}), absl::StatusCode::kInvalidArgument,
       "neither kernel nor ramdisk"},
      {"empty name", WithBootFiles({{"", 10}}), absl::StatusCode::kInvalidArgument,
       "neither kernel nor ramdisk"},
      {"twice", WithBootFiles({{"kernel", 10}, {"kernel", 10}}),
       absl::StatusCode::kInvalidArgument, "names boot file 'kernel' twice"},
      {"empty", WithBootFiles({{"ramdisk", 0}}), absl::StatusCode::kInvalidArgument,
       "boot file 'ramdisk' is empty"},
      {"too large", WithBootFiles({{"kernel", (1 << 20) + 1}}),
       absl::StatusCode::kResourceExhausted,
       "boot file 'kernel' of 1048577 bytes is larger than this backup accepts ([replication] "
       "max_boot_file_bytes = 1048576)"},
      {"huge", WithBootFiles({{"ramdisk", ~uint64_t{0}}}), absl::StatusCode::kResourceExhausted,
       "max_boot_file_bytes"},
  };
  for (const auto& c : cases) {
    auto r = ReplicationReceiver::Start(c.open, counting, limits);
    EXPECT_EQ(r.status().code(), c.code) << c.what << ": " << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.error)) << c.what;
  }
  EXPECT_EQ(made, 0) << "a refused open made something";
  EXPECT_TRUE(ReplicationReceiver::Start(WithBootFiles({{"kernel", 1 << 20}, {"ramdisk", 1}}),
                                         counting, limits)
                  .ok());
}

TEST_F(ReplicationReceiverTest, BootFileChunksOutOfOrderEndTheStream) {
  struct Case {
    std::vector<StreamItem> items;
    std::string error;
  };
  const std::vector<Case> cases = {
      {{BootFileChunk{"ramdisk", 0, "r"}},
       "BootFileChunk of 'ramdisk' while boot file 'kernel' is incomplete (0 of 5000 bytes)"},
      {{BootFileChunk{"initrd", 0, "r"}}, "BootFileChunk of 'initrd' while boot file 'kernel'"},
      {{BootFileChunk{"kernel", 1, "k"}}, "BootFileChunk of 'kernel' at offset 1, expected 0"},
      {{BootFileChunk{"kernel", 0, std::string(100, 'k')},
        BootFileChunk{"kernel", 0, std::string(100, 'k')}},
       "at offset 0, expected 100"},
      {{BootFileChunk{"kernel", 0, std::string(5001, 'k')}}, "beyond its declared 5000 bytes"},
      {{BootFileChunk{"kernel", 0, ""}}, "empty BootFileChunk of 'kernel'"},
      {{BootFileChunk{"kernel", 0, std::string(4096, 'k')}, EpochBegin{1}},
       "EpochBegin before boot file 'kernel' is complete (4096 of 5000 bytes)"},
      {{BootFileChunk{"kernel", 0, std::string(5000, 'k')}, EpochBegin{1}},
       "EpochBegin before boot file 'ramdisk' is complete (0 of 10 bytes)"},
      {{BootFileChunk{"kernel", 0, std::string(5000, 'k')}, BootFileChunk{"ramdisk", 0, "r"},
        BootFileChunk{"ramdisk", 1, std::string(10, 'r')}},
       "BootFileChunk of 'ramdisk' at 1+10 beyond its declared 10 bytes"},
  };
  for (const auto& c : cases) {
    state_ = std::make_shared<FakeReplicaState>();
    auto r = Start(WithBootFiles({{"kernel", 5000}, {"ramdisk", 10}}));
    ASSERT_TRUE(r);
    Status st = Feed(*r, c.items);
    EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr(c.error));
    EXPECT_EQ(state_->boot_files_ended, 0);
    for (const auto& call : state_->Calls()) EXPECT_EQ(call.rfind("begin", 0), std::string::npos);
  }
  // Complete boot files, then more of them: after (or inside) the first epoch.
  const std::vector<StreamItem> complete = {BootFileChunk{"kernel", 0, std::string(5000, 'k')},
                                            BootFileChunk{"ramdisk", 0, std::string(10, 'r')}};
  {
    auto r = Start(WithBootFiles({{"kernel", 5000}, {"ramdisk", 10}}));
    ASSERT_TRUE(Feed(*r, complete).ok());
    Status st = Feed(*r, {BootFileChunk{"ramdisk", 10, "r"}});
    EXPECT_THAT(std::string(st.message()), HasSubstr("every declared boot file is complete"));
  }
  {
    auto r = Start(WithBootFiles({{"kernel", 5000}, {"ramdisk", 10}}));
    ASSERT_TRUE(Feed(*r, complete).ok());
    ASSERT_TRUE(Feed(*r, {EpochBegin{1}}).ok());
    Status st = Feed(*r, {BootFileChunk{"kernel", 0, "k"}});
    EXPECT_THAT(std::string(st.message()), HasSubstr("BootFileChunk while epoch 1 is still open"));
  }
  {
    auto r = Start(WithBootFiles({{"kernel", 5000}, {"ramdisk", 10}}));
    ASSERT_TRUE(Feed(*r, complete).ok());
    ASSERT_TRUE(Feed(*r, SmallEpoch(1)).ok());
    Status st = Feed(*r, {BootFileChunk{"kernel", 0, "k"}});
    EXPECT_THAT(std::string(st.message()), HasSubstr("after the first epoch began"));
  }
  {
    auto r = Start();  // declares none
    Status st = Feed(*r, {BootFileChunk{"kernel", 0, "k"}});
    EXPECT_THAT(std::string(st.message()), HasSubstr("the StreamOpen declares no boot file"));
  }
}

TEST_F(ReplicationReceiverTest, SinkRefusingTheBootFilesEndsTheStreamBeforeTheSeed) {
  state_->fail_on = "bootfiles end";
  state_->fail_with = absl::ResourceExhaustedError("no space for the boot files");
  auto r = Start(WithBootFiles({{"kernel", 3}}));
  ASSERT_TRUE(Feed(*r, {BootFileChunk{"kernel", 0, "abc"}}).ok());
  Status st = Feed(*r, SmallEpoch(1));
  EXPECT_TRUE(absl::IsResourceExhausted(st)) << st;
  for (const auto& call : state_->Calls()) EXPECT_EQ(call.rfind("begin", 0), std::string::npos);
}

}  // namespace
}  // namespace novadt::core
