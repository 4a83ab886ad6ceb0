#include "agent/engine/egress_gate.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/support/fake_hypervisor.h"

namespace novadt::engine {
namespace {

using novadt::testing::FakeHypervisor;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;

constexpr char kUuid[] = "3f0c2b8e-6d41-4a5e-9c3a-7b2d1e0f4a10";

class EgressGateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    hv_.Returns("query-rx-filter", json::array({{{"name", "net0"}}, {{"name", "net1"}}}));
    hv_.On("qom-get", [](const json& a) {
      return json{{"return", a["path"] == "/machine/peripheral/net0" ? "hostnet0" : "hostnet1"}};
    });
  }
  std::unique_ptr<EgressGate> Gate() {
    auto g = EgressGate::Create(hv_, kUuid);
    EXPECT_TRUE(g.ok()) << g.status();
    hv_.ClearCommands();
    return g.ok() ? *std::move(g) : nullptr;
  }
  // The "execute" and "id" of every command sent since the gate was made.
  std::vector<std::string> Ops() {
    std::vector<std::string> out;
    for (const auto& c : hv_.Commands()) {
      json j = json::parse(c);
      out.push_back(j["execute"].get<std::string>() + " " + j["arguments"].value("id", ""));
    }
    return out;
  }

  FakeHypervisor hv_;
};

TEST_F(EgressGateTest, FindsEveryNicsNetdev) {
  auto gate = Gate();
  EXPECT_THAT(gate->netdevs(), ElementsAre("hostnet0", "hostnet1"));
}

TEST_F(EgressGateTest, OpenAddsATailBufferPerNicThatNeverReleasesByItself) {
  auto gate = Gate();
  ASSERT_TRUE(gate->Open(7).ok());
  auto cmds = hv_.Commands();
  ASSERT_EQ(cmds.size(), 2u);
  json add = json::parse(cmds[0]);
  EXPECT_EQ(add["execute"], "object-add");
  EXPECT_EQ(add["arguments"]["qom-type"], "filter-buffer");
  EXPECT_EQ(add["arguments"]["netdev"], "hostnet0");
  EXPECT_EQ(add["arguments"]["queue"], "rx");
  EXPECT_EQ(add["arguments"]["interval"], 4000000000u);
  // Tail position is QEMU's default; "insert: before" would make releases release nothing.
  EXPECT_FALSE(add["arguments"].contains("insert"));
  EXPECT_FALSE(add["arguments"].contains("position"));
  EXPECT_THAT(gate->held_epochs(), ElementsAre(7));
}

TEST_F(EgressGateTest, ReleaseDeletesOldestFirstUpToTheCommittedEpoch) {
  auto gate = Gate();
  for (uint64_t e : {1, 2, 3}) ASSERT_TRUE(gate->Open(e).ok());
  hv_.ClearCommands();
  ASSERT_TRUE(gate->Release(2).ok());
  EXPECT_THAT(Ops(), ElementsAre("object-del dt-egress-hostnet0-1", "object-del dt-egress-hostnet1-1",
                                 "object-del dt-egress-hostnet0-2", "object-del dt-egress-hostnet1-2"));
  EXPECT_THAT(gate->held_epochs(), ElementsAre(3));
  ASSERT_TRUE(gate->Release(2).ok());  // nothing left at or below 2
  ASSERT_TRUE(gate->ReleaseAll().ok());
  EXPECT_TRUE(gate->held_epochs().empty());
}

TEST_F(EgressGateTest, FailedOpenLeavesNoHalfGate) {
  auto gate = Gate();
  ASSERT_TRUE(gate->Open(1).ok());
  hv_.ClearCommands();
  // Second NIC's object-add fails: the first NIC's buffer for epoch 2 is removed again.
  hv_.On("object-add", [n = 0](const json&) mutable {
    return ++n == 2 ? json{{"error", {{"class", "GenericError"}, {"desc", "no memory"}}}}
                    : json{{"return", json::object()}};
  });
  Status st = gate->Open(2);
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(std::string(st.message()), HasSubstr("no memory"));
  EXPECT_THAT(Ops(), ElementsAre("object-add dt-egress-hostnet0-2", "object-add dt-egress-hostnet1-2",
                                 "object-del dt-egress-hostnet0-2"));
  EXPECT_THAT(gate->held_epochs(), ElementsAre(1));
}

TEST_F(EgressGateTest, FailedReleaseKeepsTheEpochHeldAndARetryFinishesIt) {
  auto gate = Gate();
  ASSERT_TRUE(gate->Open(1).ok());
  hv_.On("object-del", [n = 0](const json&) mutable {
    // hostnet0 deleted, hostnet1 fails; on retry hostnet0 is already gone.
    ++n;
    if (n == 2) return json{{"error", {{"class", "GenericError"}, {"desc", "busy"}}}};
    if (n == 3) return json{{"error", {{"class", "GenericError"}, {"desc", "object 'dt-egress-hostnet0-1' not found"}}}};
    return json{{"return", json::object()}};
  });
  EXPECT_FALSE(gate->Release(1).ok());
  EXPECT_THAT(gate->held_epochs(), ElementsAre(1));
  EXPECT_TRUE(gate->Release(1).ok());
  EXPECT_TRUE(gate->held_epochs().empty());
}

TEST_F(EgressGateTest, CancelRemovesOnlyTheNewestEpoch) {
  auto gate = Gate();
  for (uint64_t e : {1, 2}) ASSERT_TRUE(gate->Open(e).ok());
  hv_.ClearCommands();
  EXPECT_TRUE(absl::IsFailedPrecondition(gate->Cancel(1)));  // not the newest: nothing done
  EXPECT_TRUE(Ops().empty());
  ASSERT_TRUE(gate->Cancel(2).ok());
  EXPECT_THAT(Ops(), ElementsAre("object-del dt-egress-hostnet0-2", "object-del dt-egress-hostnet1-2"));
  EXPECT_THAT(gate->held_epochs(), ElementsAre(1));
  ASSERT_TRUE(gate->Open(2).ok()) << "the cancelled epoch can be opened again";
}

TEST_F(EgressGateTest, FailedCancelKeepsTheEpochHeld) {
  auto gate = Gate();
  ASSERT_TRUE(gate->Open(1).ok());
  hv_.FailNext("object-del", "GenericError", "busy");
  EXPECT_FALSE(gate->Cancel(1).ok());
  EXPECT_THAT(gate->held_epochs(), ElementsAre(1));
  ASSERT_TRUE(gate->ReleaseAll().ok());
  EXPECT_TRUE(gate->held_epochs().empty());
}

TEST_F(EgressGateTest, EpochsMustIncrease) {
  auto gate = Gate();
  ASSERT_TRUE(gate->Open(5).ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(gate->Open(5)));
  EXPECT_TRUE(absl::IsFailedPrecondition(gate->Open(4)));
}

TEST_F(EgressGateTest, DomainWithoutNicsIsRefused) {
  hv_.Returns("query-rx-filter", json::array());
  EXPECT_TRUE(absl::IsFailedPrecondition(EgressGate::Create(hv_, kUuid).status()));
}

// Agent restart recovery: the buffers a dead agent left are held output, older than anything
// the new gate holds, released only with the new stream's first commit (or ReleaseAll), oldest
// first; the new gate's buffers never collide with them.
TEST_F(EgressGateTest, AdoptsADeadAgentsBuffersAndReleasesThemFirstOldestFirst) {
  hv_.Returns("qom-list", json::array({
      {{"name", "dt-egress-hostnet0-12"}, {"type", "child<filter-buffer>"}},
      {{"name", "pc.ram"}, {"type", "child<memory-backend-file>"}},
      {{"name", "dt-egress-hostnet1-11"}, {"type", "child<filter-buffer>"}},
      {{"name", "dt-egress-hostnet0-11"}, {"type", "child<filter-buffer>"}},
      {{"name", "dt-egress-hostnet0-r2-1"}, {"type", "child<filter-buffer>"}},
      {{"name", "dt-egress-hostnet1-12"}, {"type", "child<filter-buffer>"}},
      {{"name", "dt-egress-hostnet9-3"}, {"type", "child<filter-buffer>"}},    // not our NIC
      {{"name", "dt-egress-hostnet0-junk"}, {"type", "child<filter-buffer>"}},  // not ours
  }));
  auto gate = Gate();
  auto adopted = gate->AdoptLeftovers();
  ASSERT_TRUE(adopted.ok()) << adopted.status();
  EXPECT_EQ(*adopted, 3u);  // (0,11), (0,12), (2,1)
  EXPECT_TRUE(gate->holds_output());
  EXPECT_TRUE(gate->held_epochs().empty());
  hv_.ClearCommands();
  // The new gate is incarnation 3: epoch 1 does not collide with the adopted r2-1.
  ASSERT_TRUE(gate->Open(1).ok());
  EXPECT_THAT(Ops(), ElementsAre("object-add dt-egress-hostnet0-r3-1",
                                 "object-add dt-egress-hostnet1-r3-1"));
  ASSERT_TRUE(gate->Open(2).ok());
  hv_.ClearCommands();
  ASSERT_TRUE(gate->Release(1).ok());
  EXPECT_THAT(Ops(), ElementsAre("object-del dt-egress-hostnet0-11", "object-del dt-egress-hostnet1-11",
                                 "object-del dt-egress-hostnet0-12", "object-del dt-egress-hostnet1-12",
                                 "object-del dt-egress-hostnet0-r2-1",
                                 "object-del dt-egress-hostnet0-r3-1",
                                 "object-del dt-egress-hostnet1-r3-1"));
  EXPECT_EQ(gate->adopted_epochs(), 0u);
  EXPECT_THAT(gate->held_epochs(), ElementsAre(2));
}

TEST_F(EgressGateTest, AdoptedBuffersStayHeldUntilReleasedAndSurviveAFailedDelete) {
  hv_.Returns("qom-list", json::array({{{"name", "dt-egress-hostnet0-5"}},
                                       {{"name", "dt-egress-hostnet1-5"}}}));
  auto gate = Gate();
  ASSERT_EQ(*gate->AdoptLeftovers(), 1u);
  ASSERT_TRUE(gate->Open(1).ok());
  ASSERT_TRUE(gate->Cancel(1).ok()) << "a failed first checkpoint keeps the adopted output";
  EXPECT_EQ(gate->adopted_epochs(), 1u);
  hv_.FailNext("object-del", "GenericError", "busy");
  EXPECT_FALSE(gate->ReleaseAll().ok());
  EXPECT_EQ(gate->adopted_epochs(), 1u) << "still held after a failed release";
  hv_.ClearCommands();
  ASSERT_TRUE(gate->ReleaseAll().ok());
  EXPECT_THAT(Ops(), ElementsAre("object-del dt-egress-hostnet0-5", "object-del dt-egress-hostnet1-5"));
  EXPECT_FALSE(gate->holds_output());
}

TEST_F(EgressGateTest, NothingLeftOverKeepsTheFirstIncarnationsNames) {
  hv_.Returns("qom-list", json::array({{{"name", "pc.ram"}}}));
  auto gate = Gate();
  ASSERT_EQ(*gate->AdoptLeftovers(), 0u);
  hv_.ClearCommands();
  ASSERT_TRUE(gate->Open(1).ok());
  EXPECT_THAT(Ops(), ElementsAre("object-add dt-egress-hostnet0-1", "object-add dt-egress-hostnet1-1"));
  EXPECT_TRUE(absl::IsFailedPrecondition(gate->AdoptLeftovers().status()));
}

TEST_F(EgressGateTest, AdoptionFailsCleanlyWhenQemuCannotListObjects) {
  auto gate = Gate();
  hv_.FailNext("qom-list");
  EXPECT_FALSE(gate->AdoptLeftovers().ok());
  EXPECT_FALSE(gate->holds_output());
}

}  // namespace
}  // namespace novadt::engine
