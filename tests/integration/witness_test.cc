// The etcd witness (agent/witness) against a real etcd (Debian's etcd-server) started by the
// test on 127.0.0.1: claims, refusals, one winner among racing take-overs, stale generations,
// the self-fence deadline coming before etcd expires a dead owner's key, a revoked lease
// (re-claim, never steal), an etcd restart, endpoint failover, TLS with client certificates,
// deployments sharing one etcd under their own key prefixes, and etcd's own access control (a
// role per key prefix, the user named by the client certificate). Real time throughout,
// every wait bounded. Lease TTL 2 s (etcd's minimum with its default election timeout),
// fence margin 500 ms, request timeout 500 ms.
#include "agent/witness/witness.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <latch>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "agent/common/clock.h"
#include "agent/witness/etcd_client.h"
#include "agent/witness/etcd_witness.h"
#include "tests/support/etcd_server.h"
#include "tests/support/test_util.h"

namespace novadt::witness {
namespace {

using std::chrono::milliseconds;
using testing::EtcdServer;
using ::testing::HasSubstr;

constexpr milliseconds kTtl{2000};
constexpr milliseconds kMargin{500};
constexpr milliseconds kRequestTimeout{500};
// Upper bound for anything that waits on a lease running out (TTL + etcd's 500 ms expiry scan +
// slack).
constexpr milliseconds kLeaseLapse{6000};

const SystemClock& TheClock() {
  static const SystemClock clock;
  return clock;
}

// Collects a witness's events; thread-safe.
class Events {
 public:
  WitnessListener Listener() {
    return [this](const WitnessEvent& e) {
      std::lock_guard<std::mutex> l(mu_);
      events_.push_back(e);
      cv_.notify_all();
    };
  }
  // Waits until an event after the first `from` ones satisfies `pred`; returns its index or -1.
  int WaitFor(const std::function<bool(const WitnessEvent&)>& pred, milliseconds timeout,
              size_t from = 0) {
    std::unique_lock<std::mutex> l(mu_);
    int found = -1;
    cv_.wait_for(l, timeout, [&] {
      for (size_t i = from; i < events_.size(); ++i) {
        if (pred(events_[i])) {
          found = static_cast<int>(i);
          return true;
        }
      }
      return false;
    });
    return found;
  }
  std::vector<WitnessEvent> All() {
    std::lock_guard<std::mutex> l(mu_);
    return events_;
  }
  size_t size() {
    std::lock_guard<std::mutex> l(mu_);
    return events_.size();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<WitnessEvent> events_;
};

bool IsType(const WitnessEvent& e, WitnessEvent::Type t) { return e.type == t; }

EtcdClientOptions ClientOptions(std::vector<std::string> endpoints) {
  EtcdClientOptions o;
  o.endpoints = std::move(endpoints);
  o.request_timeout = kRequestTimeout;
  return o;
}

std::unique_ptr<EtcdClient> MakeClient(EtcdClientOptions o) {
  StatusOr<std::unique_ptr<EtcdClient>> c = EtcdClient::Create(std::move(o), TheClock());
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *std::move(c) : nullptr;
}

std::unique_ptr<Witness> MakeWitness(EtcdClientOptions o, Events* events = nullptr,
                                     std::string prefix = "/nova-dt") {
  EtcdWitnessOptions w;
  w.key_prefix = std::move(prefix);
  w.lease_ttl = kTtl;
  w.fence_margin = kMargin;
  return NewEtcdWitness(MakeClient(std::move(o)), w, TheClock(),
                        events ? events->Listener() : WitnessListener());
}

std::string Uuid(const std::string& name) {
  static std::atomic<int> n{0};
  return "00000000-0000-4000-8000-" + std::to_string(getpid()) + "-" + std::to_string(n++) + "-" +
         name;
}

// Polls until the server's claim is no longer live (or the bound passes). Returns the time on
// TheClock() when it was first seen gone, or nullopt.
std::optional<Clock::TimePoint> WaitUntilLapsed(Witness& observer, const std::string& uuid,
                                                milliseconds bound = kLeaseLapse) {
  const auto end = std::chrono::steady_clock::now() + bound;
  while (std::chrono::steady_clock::now() < end) {
    StatusOr<Ownership> o = observer.Read(uuid);
    const Clock::TimePoint seen = TheClock().Now();
    if (o.ok() && !o->live) return seen;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return std::nullopt;
}

// Every key under `prefix` + "/" with what a change to it would alter: value, mod revision and
// lease. Read with `client` (a Range over the prefix).
struct KeyState {
  std::string value;
  int64_t mod_revision = 0;
  int64_t lease = 0;
  bool operator==(const KeyState&) const = default;
};
std::map<std::string, KeyState> KeysUnder(EtcdClient& client, const std::string& prefix) {
  etcdserverpb::RangeRequest range;
  range.set_key(prefix + "/");
  range.set_range_end(prefix + "0");  // '0' follows '/': every key starting with prefix + "/"
  StatusOr<etcdserverpb::RangeResponse> r = client.Range(range);
  EXPECT_TRUE(r.ok()) << r.status();
  std::map<std::string, KeyState> keys;
  if (!r.ok()) return keys;
  for (const mvccpb::KeyValue& kv : r->kvs()) {
    keys[kv.key()] = KeyState{kv.value(), kv.mod_revision(), kv.lease()};
  }
  return keys;
}

double Ms(Clock::Duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

class WitnessTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    etcd_ = new EtcdServer();
    start_status_ = new absl::Status(etcd_->Start());
  }
  static void TearDownTestSuite() {
    delete etcd_;
    delete start_status_;
    etcd_ = nullptr;
    start_status_ = nullptr;
  }
  void SetUp() override {
    // Fails (never skips) when etcd cannot run here.
    ASSERT_TRUE(start_status_->ok()) << *start_status_;
  }

  static std::unique_ptr<Witness> Host(Events* events = nullptr) {
    return MakeWitness(ClientOptions({etcd_->address()}), events);
  }

  static EtcdServer* etcd_;
  static absl::Status* start_status_;
};

EtcdServer* WitnessTest::etcd_ = nullptr;
absl::Status* WitnessTest::start_status_ = nullptr;

TEST_F(WitnessTest, ClaimReadReleaseForget) {
  const std::string u = Uuid("claim");
  std::unique_ptr<Witness> c1 = Host();
  EXPECT_TRUE(absl::IsNotFound(c1->Read(u).status()));
  EXPECT_EQ(c1->FenceDeadline(), Clock::TimePoint::min());  // no lease yet

  StatusOr<Ownership> o = c1->Claim(u, "compute-1");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->owner, "compute-1");
  EXPECT_EQ(o->generation, 1);
  EXPECT_TRUE(o->live);
  EXPECT_FALSE(o->released);
  EXPECT_NE(o->lease_id, 0);
  StatusOr<Ownership> read = c1->Read(u);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, *o);
  // Claiming again is a no-op.
  StatusOr<Ownership> again = c1->Claim(u, "compute-1");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, *o);

  // The fence deadline lies ahead, by at most TTL - margin.
  const Clock::TimePoint now = TheClock().Now();
  EXPECT_GT(c1->FenceDeadline(), now);
  EXPECT_LE(c1->FenceDeadline(), now + kTtl - kMargin);

  ASSERT_TRUE(c1->Release(u, "compute-1").ok());
  read = c1->Read(u);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, (Ownership{"compute-1", 1, false, true, 0}));
  EXPECT_TRUE(c1->Release(u, "compute-1").ok());  // idempotent

  // A released server may be claimed again, with the next generation.
  o = c1->Claim(u, "compute-1");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->generation, 2);
  EXPECT_TRUE(o->live);

  ASSERT_TRUE(c1->Forget(u, "compute-1").ok());
  EXPECT_TRUE(absl::IsNotFound(c1->Read(u).status()));
  EXPECT_TRUE(c1->Forget(u, "compute-1").ok());  // nothing left: fine
  EXPECT_TRUE(absl::IsNotFound(c1->Release(u, "compute-1")));
}

TEST_F(WitnessTest, SecondHostCannotClaimReleaseOrTakeOverALiveClaim) {
  const std::string u = Uuid("second");
  std::unique_ptr<Witness> c1 = Host();
  std::unique_ptr<Witness> c2 = Host();
  ASSERT_TRUE(c1->Claim(u, "compute-1").ok());

  StatusOr<Ownership> o = c2->Claim(u, "compute-2");
  EXPECT_TRUE(absl::IsFailedPrecondition(o.status())) << o.status();
  EXPECT_THAT(std::string(o.status().message()), HasSubstr("'compute-1' at generation 1 (live)"));
  Status s = c2->Release(u, "compute-2");
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  s = c2->Forget(u, "compute-2");
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  // The owner renews: taking over is refused, and says how long the lease may still run.
  o = c2->TakeOver(u, "compute-2", "compute-1", 1);
  EXPECT_TRUE(absl::IsFailedPrecondition(o.status())) << o.status();
  EXPECT_THAT(std::string(o.status().message()), HasSubstr("still holds a live claim"));
  EXPECT_THAT(std::string(o.status().message()), HasSubstr("expires in under"));

  StatusOr<Ownership> read = c2->Read(u);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->owner, "compute-1");
  EXPECT_EQ(read->generation, 1);
  EXPECT_TRUE(read->live);
  EXPECT_TRUE(c1->Forget(u, "compute-1").ok());
}

TEST_F(WitnessTest, AgentRestartReclaimsUnderItsNewLease) {
  const std::string u = Uuid("restart");
  std::unique_ptr<Witness> before = Host();
  StatusOr<Ownership> o = before->Claim(u, "compute-1");
  ASSERT_TRUE(o.ok()) << o.status();
  before.reset();  // the agent stops; its lease still runs

  std::unique_ptr<Witness> after = Host();
  StatusOr<Ownership> again = after->Claim(u, "compute-1");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->generation, 1);  // the same host: ownership did not move
  EXPECT_TRUE(again->live);
  EXPECT_NE(again->lease_id, o->lease_id);  // moved onto the new agent's lease
  StatusOr<Ownership> read = after->Read(u);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->lease_id, again->lease_id);
}

TEST_F(WitnessTest, RacingTakeOversHaveExactlyOneWinner) {
  constexpr int kServers = 3;
  constexpr int kContenders = 4;
  std::vector<std::string> uuids;
  {
    std::unique_ptr<Witness> owner = Host();
    for (int i = 0; i < kServers; ++i) {
      uuids.push_back(Uuid("race" + std::to_string(i)));
      ASSERT_TRUE(owner->Claim(uuids.back(), "compute-1").ok());
    }
  }  // the owner dies without releasing: its claims lapse after the TTL
  std::vector<std::unique_ptr<Witness>> contenders;
  for (int i = 0; i < kContenders; ++i) contenders.push_back(Host());
  for (const std::string& u : uuids) {
    ASSERT_TRUE(WaitUntilLapsed(*contenders[0], u).has_value()) << u;
  }

  for (const std::string& u : uuids) {
    std::vector<StatusOr<Ownership>> results(kContenders, absl::UnknownError("not run"));
    std::latch go(kContenders);
    std::vector<std::thread> threads;
    for (int i = 0; i < kContenders; ++i) {
      threads.emplace_back([&, i] {
        go.arrive_and_wait();
        results[i] = contenders[i]->TakeOver(u, "compute-" + std::to_string(i + 2), "compute-1", 1);
      });
    }
    for (std::thread& t : threads) t.join();
    int winner = -1;
    for (int i = 0; i < kContenders; ++i) {
      if (results[i].ok()) {
        EXPECT_EQ(winner, -1) << "two winners for " << u;
        winner = i;
      } else {
        EXPECT_TRUE(absl::IsAborted(results[i].status())) << results[i].status();
      }
    }
    ASSERT_NE(winner, -1) << "no winner for " << u;
    const std::string winner_host = "compute-" + std::to_string(winner + 2);
    EXPECT_EQ(results[winner]->owner, winner_host);
    EXPECT_EQ(results[winner]->generation, 2);
    StatusOr<Ownership> read = contenders[0]->Read(u);
    ASSERT_TRUE(read.ok());
    EXPECT_EQ(*read, *results[winner]);
    // Repeating: the winner gets its record again, a loser is still refused.
    StatusOr<Ownership> repeat = contenders[winner]->TakeOver(u, winner_host, "compute-1", 1);
    ASSERT_TRUE(repeat.ok()) << repeat.status();
    EXPECT_EQ(*repeat, *results[winner]);
    const int loser = (winner + 1) % kContenders;
    EXPECT_TRUE(
        absl::IsAborted(contenders[loser]
                            ->TakeOver(u, "compute-" + std::to_string(loser + 2), "compute-1", 1)
                            .status()));
    // The old owner coming back cannot claim it.
    EXPECT_TRUE(absl::IsFailedPrecondition(Host()->Claim(u, "compute-1").status()));
  }
}

TEST_F(WitnessTest, TakeOverWithAStaleGenerationFails) {
  const std::string u = Uuid("stale");
  std::unique_ptr<Witness> c1 = Host();
  std::unique_ptr<Witness> c2 = Host();
  std::unique_ptr<Witness> c3 = Host();
  EXPECT_TRUE(absl::IsNotFound(c2->TakeOver(u, "compute-2", "compute-1", 1).status()));
  ASSERT_TRUE(c1->Claim(u, "compute-1").ok());
  // Planned hand-over: the owner releases, the other host takes over at once.
  ASSERT_TRUE(c1->Release(u, "compute-1").ok());
  StatusOr<Ownership> o = c2->TakeOver(u, "compute-2", "compute-1", 1);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(*o, (Ownership{"compute-2", 2, true, false, o->lease_id}));

  for (const auto& [owner, generation] : std::vector<std::pair<std::string, int64_t>>{
           {"compute-1", 1}, {"compute-2", 1}, {"compute-2", 3}, {"compute-1", 2}}) {
    SCOPED_TRACE(owner + " @" + std::to_string(generation));
    StatusOr<Ownership> stale = c3->TakeOver(u, "compute-3", owner, generation);
    EXPECT_TRUE(absl::IsAborted(stale.status())) << stale.status();
    EXPECT_THAT(std::string(stale.status().message()),
                HasSubstr("'compute-2' at generation 2 (live)"));
  }
  // The right expectation, but compute-2 is alive.
  EXPECT_TRUE(absl::IsFailedPrecondition(c3->TakeOver(u, "compute-3", "compute-2", 2).status()));
  // The previous owner cannot claim it back either.
  EXPECT_TRUE(absl::IsFailedPrecondition(c1->Claim(u, "compute-1").status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(c1->Release(u, "compute-1")));
  StatusOr<Ownership> read = c3->Read(u);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(*read, *o);
  // Bad arguments.
  EXPECT_TRUE(absl::IsInvalidArgument(c3->TakeOver(u, "compute-2", "compute-2", 2).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(c3->TakeOver(u, "compute-3", "compute-2", 0).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(c3->Claim("", "compute-3").status()));
}

// Invariant 3's timing: while renewals succeed the deadline stays ahead; when they stop, the
// owner's deadline passes at least fence_margin before etcd deletes the key (which is what lets
// a backup take over).
// A primary whose pair degraded advances the generation before releasing output: the backup's
// take-over at the replica's generation is refused for good, even after the owner's claim lapses.
TEST_F(WitnessTest, AdvancedGenerationMakesOlderReplicasUselessForATakeOver) {
  const std::string u = Uuid("advance");
  std::unique_ptr<Witness> primary = Host();
  std::unique_ptr<Witness> backup = Host();
  EXPECT_TRUE(absl::IsNotFound(primary->AdvanceGeneration(u, "compute-1").status()));
  ASSERT_TRUE(primary->Claim(u, "compute-1").ok());
  StatusOr<Ownership> o = primary->AdvanceGeneration(u, "compute-1");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->generation, 2);
  EXPECT_TRUE(o->live);
  EXPECT_TRUE(absl::IsFailedPrecondition(backup->AdvanceGeneration(u, "compute-2").status()))
      << "only the live owner advances";
  StatusOr<Ownership> read = backup->Read(u);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(*read, *o) << "same lease, still live";

  primary.reset();  // stops renewing: the claim lapses
  ASSERT_TRUE(WaitUntilLapsed(*backup, u).has_value());
  EXPECT_TRUE(absl::IsAborted(backup->TakeOver(u, "compute-2", "compute-1", 1).status()))
      << "the replica taken at generation 1 predates released output";
  StatusOr<Ownership> won = backup->TakeOver(u, "compute-2", "compute-1", 2);
  ASSERT_TRUE(won.ok()) << won.status();
  EXPECT_EQ(won->generation, 3);
}

TEST_F(WitnessTest, SelfFenceDeadlinePassesBeforeEtcdDeletesTheKey) {
  const std::string u = Uuid("fence");
  Events events;
  std::unique_ptr<Witness> owner = Host(&events);
  std::unique_ptr<Witness> observer = Host();
  ASSERT_TRUE(owner->Claim(u, "compute-1").ok());

  // Healthy renewals for 2.5 TTL/3 periods: the deadline never comes close to now.
  const auto healthy_end = std::chrono::steady_clock::now() + milliseconds(1500);
  Clock::Duration min_lead = Clock::Duration::max();
  while (std::chrono::steady_clock::now() < healthy_end) {
    min_lead = std::min(min_lead, owner->FenceDeadline() - TheClock().Now());
    std::this_thread::sleep_for(milliseconds(20));
  }
  // About TTL - margin - renewal interval (2000 - 500 - 667 ms) minus latency; never gone.
  EXPECT_GT(Ms(min_lead), 0.0);
  std::printf("while renewing, the fence deadline stayed >= %.0f ms ahead\n", Ms(min_lead));
  ASSERT_GE(events.WaitFor([](auto& e) { return IsType(e, WitnessEvent::Type::kRenewed); },
                           milliseconds(2000)),
            0);

  // The owner stops renewing (as if crashed or cut off). Its last word on the deadline:
  Clock::TimePoint deadline = owner->FenceDeadline();
  owner.reset();  // delivers every queued event first
  for (const WitnessEvent& e : events.All()) deadline = std::max(deadline, e.fence_deadline);
  ASSERT_GT(deadline, TheClock().Now());

  std::optional<Clock::TimePoint> gone = WaitUntilLapsed(*observer, u);
  ASSERT_TRUE(gone.has_value()) << "etcd did not expire the dead owner's key";
  // The deadline passed before etcd deleted the key, by at least the margin; and etcd did not
  // take absurdly long (TTL + its 500 ms expiry scan + polling).
  EXPECT_LT(deadline, *gone);
  EXPECT_GE(Ms(*gone - deadline), Ms(kMargin) - 1.0);
  EXPECT_LE(Ms(*gone - deadline), Ms(kMargin) + 2000.0);
  std::printf("self-fence deadline came %.0f ms before etcd deleted the key (margin %.0f ms)\n",
              Ms(*gone - deadline), Ms(kMargin));
  // Now a backup may take over.
  StatusOr<Ownership> o = observer->TakeOver(u, "compute-2", "compute-1", 1);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->generation, 2);
}

// etcd itself revokes the owner's lease (as after an expiry the owner did not see): the owner
// hears kLeaseLost, re-claims what is still its own under a new lease, and gives up what another
// host took over meanwhile.
TEST_F(WitnessTest, LostLeaseIsReclaimedButNeverStolen) {
  const std::string mine = Uuid("mine");
  const std::string taken = Uuid("taken");
  Events events;
  std::unique_ptr<Witness> owner = Host(&events);
  std::unique_ptr<Witness> other = Host();
  StatusOr<Ownership> o = owner->Claim(mine, "compute-1");
  ASSERT_TRUE(o.ok()) << o.status();
  ASSERT_TRUE(owner->Claim(taken, "compute-1").ok());
  const int64_t old_lease = o->lease_id;

  // Right after a renewal, so the next one (TTL/3 later) comes after the take-over below.
  const size_t before = events.size();
  ASSERT_GE(events.WaitFor([](auto& e) { return IsType(e, WitnessEvent::Type::kRenewed); },
                           milliseconds(2000), before),
            0);
  std::unique_ptr<EtcdClient> admin = MakeClient(ClientOptions({etcd_->address()}));
  etcdserverpb::LeaseRevokeRequest revoke;
  revoke.set_id(old_lease);
  ASSERT_TRUE(admin->LeaseRevoke(revoke).ok());
  StatusOr<Ownership> took = other->TakeOver(taken, "compute-2", "compute-1", 1);
  ASSERT_TRUE(took.ok()) << took.status();

  const int lost = events.WaitFor([](auto& e) { return IsType(e, WitnessEvent::Type::kLeaseLost); },
                                  milliseconds(3000));
  ASSERT_GE(lost, 0);
  EXPECT_EQ(events.All()[lost].fence_deadline, Clock::TimePoint::min());
  const int reclaimed = events.WaitFor(
      [&](auto& e) { return IsType(e, WitnessEvent::Type::kReclaimed) && e.instance_uuid == mine; },
      milliseconds(3000), lost);
  ASSERT_GE(reclaimed, 0);
  const WitnessEvent r = events.All()[reclaimed];
  EXPECT_EQ(r.ownership.owner, "compute-1");
  EXPECT_EQ(r.ownership.generation, 1);
  EXPECT_NE(r.ownership.lease_id, old_lease);
  EXPECT_GT(r.fence_deadline, TheClock().Now());
  const int gave_up = events.WaitFor(
      [&](auto& e) {
        return IsType(e, WitnessEvent::Type::kOwnershipLost) && e.instance_uuid == taken;
      },
      milliseconds(3000), lost);
  ASSERT_GE(gave_up, 0);
  const WitnessEvent g = events.All()[gave_up];
  EXPECT_EQ(g.ownership, *took);
  EXPECT_TRUE(absl::IsFailedPrecondition(g.reason)) << g.reason;

  StatusOr<Ownership> read = other->Read(mine);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->owner, "compute-1");
  EXPECT_TRUE(read->live);
  EXPECT_EQ(read->lease_id, r.ownership.lease_id);
  read = other->Read(taken);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(*read, *took);
  EXPECT_GT(owner->FenceDeadline(), TheClock().Now());
}

// Two deployments share one etcd, each under its own [witness] key_prefix. The same server
// (instance UUID) is claimed in both by different hosts; whatever happens to it in one — its
// owner dies and the claim lapses, a take-over, advancing the generation, a release, forgetting
// it — leaves the other's keys exactly as they were (values, mod revisions, leases).
TEST_F(WitnessTest, DeploymentsUnderTheirOwnPrefixesAreIndependent) {
  const std::string u = Uuid("two-deployments");
  const std::string one = "/nova-dt/region-one";
  const std::string two = "/nova-dt/region-two";
  auto in = [](const std::string& prefix) {
    return MakeWitness(ClientOptions({etcd_->address()}), nullptr, prefix);
  };
  std::unique_ptr<Witness> one_a = in(one);  // compute-1, deployment one
  std::unique_ptr<Witness> one_b = in(one);  // compute-2
  std::unique_ptr<Witness> two_a = in(two);  // compute-8, deployment two
  std::unique_ptr<Witness> two_b = in(two);  // compute-9
  std::unique_ptr<EtcdClient> admin = MakeClient(ClientOptions({etcd_->address()}));

  StatusOr<Ownership> in_one = one_a->Claim(u, "compute-1");
  ASSERT_TRUE(in_one.ok()) << in_one.status();
  StatusOr<Ownership> in_two = two_a->Claim(u, "compute-8");
  ASSERT_TRUE(in_two.ok()) << in_two.status();
  EXPECT_EQ(*in_one, (Ownership{"compute-1", 1, true, false, in_one->lease_id}));
  EXPECT_EQ(*in_two, (Ownership{"compute-8", 1, true, false, in_two->lease_id}));
  StatusOr<Ownership> read = one_b->Read(u);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, *in_one);
  read = two_b->Read(u);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, *in_two);
  // The other deployment's owner counts for nothing here.
  EXPECT_TRUE(absl::IsAborted(one_b->TakeOver(u, "compute-2", "compute-8", 1).status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(two_b->Claim(u, "compute-1").status()));

  const std::map<std::string, KeyState> two_before = KeysUnder(*admin, two);
  ASSERT_EQ(two_before.size(), 2u);
  ASSERT_EQ(two_before.count(two + "/servers/" + u), 1u);
  ASSERT_EQ(two_before.count(two + "/generations/" + u), 1u);
  EXPECT_EQ(two_before.at(two + "/servers/" + u).lease, in_two->lease_id);

  // Deployment one: advance, then compute-1 dies and its claim lapses; compute-2 takes over,
  // releases and forgets the server.
  StatusOr<Ownership> advanced = one_a->AdvanceGeneration(u, "compute-1");
  ASSERT_TRUE(advanced.ok()) << advanced.status();
  EXPECT_EQ(advanced->generation, 2);
  one_a.reset();
  ASSERT_TRUE(WaitUntilLapsed(*one_b, u).has_value());
  read = two_b->Read(u);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, *in_two) << "deployment two's claim lives on its own lease";
  EXPECT_TRUE(absl::IsFailedPrecondition(two_b->TakeOver(u, "compute-9", "compute-8", 1).status()))
      << "deployment one's lapse says nothing about deployment two";
  EXPECT_TRUE(absl::IsAborted(one_b->TakeOver(u, "compute-2", "compute-1", 1).status()));
  StatusOr<Ownership> took = one_b->TakeOver(u, "compute-2", "compute-1", 2);
  ASSERT_TRUE(took.ok()) << took.status();
  EXPECT_EQ(took->generation, 3);
  ASSERT_TRUE(one_b->Release(u, "compute-2").ok());
  read = one_b->Read(u);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, (Ownership{"compute-2", 3, false, true, 0}));
  ASSERT_TRUE(one_b->Forget(u, "compute-2").ok());
  EXPECT_TRUE(absl::IsNotFound(one_b->Read(u).status()));
  EXPECT_TRUE(KeysUnder(*admin, one).empty());

  EXPECT_EQ(KeysUnder(*admin, two), two_before) << "deployment one touched deployment two's keys";
  read = two_a->Read(u);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, *in_two);

  // And the other way round: deployment one claims the server afresh (generation 1); in
  // deployment two it is released, taken over, advanced and forgotten.
  in_one = one_b->Claim(u, "compute-2");
  ASSERT_TRUE(in_one.ok()) << in_one.status();
  EXPECT_EQ(in_one->generation, 1);
  const std::map<std::string, KeyState> one_before = KeysUnder(*admin, one);
  ASSERT_EQ(one_before.size(), 2u);
  ASSERT_TRUE(two_a->Release(u, "compute-8").ok());
  took = two_b->TakeOver(u, "compute-9", "compute-8", 1);
  ASSERT_TRUE(took.ok()) << took.status();
  EXPECT_EQ(took->generation, 2);
  advanced = two_b->AdvanceGeneration(u, "compute-9");
  ASSERT_TRUE(advanced.ok()) << advanced.status();
  EXPECT_EQ(advanced->generation, 3);
  ASSERT_TRUE(two_b->Forget(u, "compute-9").ok());
  EXPECT_TRUE(KeysUnder(*admin, two).empty());
  EXPECT_EQ(KeysUnder(*admin, one), one_before) << "deployment two touched deployment one's keys";
  read = one_b->Read(u);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, *in_one);
  EXPECT_TRUE(one_b->Forget(u, "compute-2").ok());
}

// One dead endpoint (refuses connections) and one black hole (accepts TCP, never speaks) before
// the live one: calls fail over in order, then stick to the endpoint that answered.
TEST_F(WitnessTest, EndpointsAreTriedInOrder) {
  const int refused = testing::FreeTcpPort();
  const int hole = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(hole, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(hole, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(hole, 16), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(getsockname(hole, reinterpret_cast<sockaddr*>(&a), &len), 0);
  const std::string hole_address = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  const std::string refused_address = "127.0.0.1:" + std::to_string(refused);

  EtcdClientOptions options = ClientOptions({refused_address, hole_address, etcd_->address()});
  std::unique_ptr<EtcdClient> client = MakeClient(options);
  etcdserverpb::RangeRequest range;
  range.set_key("/nova-dt/none");
  auto begin = std::chrono::steady_clock::now();
  StatusOr<etcdserverpb::RangeResponse> r = client->Range(range);
  const auto first = std::chrono::steady_clock::now() - begin;
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(client->preferred_endpoint(), etcd_->address());
  // At most one timeout (the black hole) plus a refused connection.
  EXPECT_LT(first, 2 * kRequestTimeout + milliseconds(500));
  begin = std::chrono::steady_clock::now();
  ASSERT_TRUE(client->Range(range).ok());
  EXPECT_LT(std::chrono::steady_clock::now() - begin, kRequestTimeout);

  // The witness works through the same list.
  const std::string u = Uuid("endpoints");
  std::unique_ptr<Witness> w = MakeWitness(options);
  StatusOr<Ownership> o = w->Claim(u, "compute-1");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_TRUE(w->Release(u, "compute-1").ok());

  // Nothing alive: a bounded failure.
  std::unique_ptr<EtcdClient> dead = MakeClient(ClientOptions({refused_address, hole_address}));
  begin = std::chrono::steady_clock::now();
  r = dead->Range(range);
  EXPECT_TRUE(absl::IsUnavailable(r.status()) || absl::IsDeadlineExceeded(r.status()))
      << r.status();
  EXPECT_LT(std::chrono::steady_clock::now() - begin, 2 * kRequestTimeout + milliseconds(500));
  close(hole);
}

// etcd restarts (killed, same data dir): the owner's renewals resume, its key, lease and
// generation are unchanged, and it never hears kLeaseLost.
TEST(WitnessEtcdRestartTest, OwnershipSurvivesAnEtcdRestart) {
  EtcdServer etcd;
  ASSERT_TRUE(etcd.Start().ok()) << etcd.LogTail();
  const std::string u = Uuid("etcd-restart");
  Events events;
  std::unique_ptr<Witness> owner = MakeWitness(ClientOptions({etcd.address()}), &events);
  StatusOr<Ownership> o = owner->Claim(u, "compute-1");
  ASSERT_TRUE(o.ok()) << o.status();

  etcd.Kill();
  const auto down_at = TheClock().Now();
  std::this_thread::sleep_for(milliseconds(300));
  ASSERT_TRUE(etcd.Start().ok()) << etcd.LogTail();
  const Clock::TimePoint up_at = TheClock().Now();
  std::printf("etcd was down %.0f ms\n", Ms(up_at - down_at));

  // A renewal sent after etcd came back.
  ASSERT_GE(events.WaitFor(
                [&](auto& e) {
                  return IsType(e, WitnessEvent::Type::kRenewed) &&
                         e.fence_deadline > up_at + kTtl - kMargin - milliseconds(1);
                },
                milliseconds(4000)),
            0)
      << "no renewal after the restart";
  StatusOr<Ownership> read = MakeWitness(ClientOptions({etcd.address()}))->Read(u);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, *o);
  for (const WitnessEvent& e : events.All()) {
    EXPECT_NE(e.type, WitnessEvent::Type::kLeaseLost);
    EXPECT_NE(e.type, WitnessEvent::Type::kOwnershipLost);
  }
  EXPECT_GT(owner->FenceDeadline(), TheClock().Now());
}

// TLS with client certificates: the right CA works (through [witness] config too); a wrong CA,
// or no client certificate, is refused within the request timeout.
TEST(WitnessTlsTest, GoodCaWorksWrongCaIsRefused) {
  EtcdServer::Options tls;
  tls.tls = true;
  EtcdServer etcd(tls);
  ASSERT_TRUE(etcd.Start().ok()) << etcd.LogTail();
  const std::string u = Uuid("tls");

  config::WitnessSection cfg;
  cfg.etcd_endpoints = {etcd.endpoint()};
  cfg.tls_ca_file = etcd.ca_file();
  cfg.tls_cert_file = etcd.client_cert_file();
  cfg.tls_key_file = etcd.client_key_file();
  cfg.lease_ttl_ms = 2000;
  cfg.fence_margin_ms = 500;
  cfg.request_timeout_ms = 500;
  StatusOr<std::unique_ptr<Witness>> good = NewEtcdWitness(cfg, TheClock());
  ASSERT_TRUE(good.ok()) << good.status();
  StatusOr<Ownership> o = (*good)->Claim(u, "compute-1");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->generation, 1);

  config::WitnessSection wrong_ca = cfg;
  wrong_ca.tls_ca_file = etcd.other_ca_file();
  StatusOr<std::unique_ptr<Witness>> bad = NewEtcdWitness(wrong_ca, TheClock());
  ASSERT_TRUE(bad.ok()) << bad.status();
  auto begin = std::chrono::steady_clock::now();
  StatusOr<Ownership> refused = (*bad)->Read(u);
  EXPECT_TRUE(absl::IsUnavailable(refused.status()) || absl::IsDeadlineExceeded(refused.status()))
      << refused.status();
  EXPECT_LT(std::chrono::steady_clock::now() - begin, kRequestTimeout + milliseconds(500));

  config::WitnessSection no_cert = cfg;
  no_cert.tls_cert_file.clear();
  no_cert.tls_key_file.clear();
  StatusOr<std::unique_ptr<Witness>> anonymous = NewEtcdWitness(no_cert, TheClock());
  ASSERT_TRUE(anonymous.ok()) << anonymous.status();
  refused = (*anonymous)->Read(u);
  EXPECT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("requires a client certificate"));

  // Plaintext to the TLS port fails too.
  StatusOr<Ownership> plain =
      MakeWitness(ClientOptions({"127.0.0.1:" + std::to_string(etcd.client_port())}))->Read(u);
  EXPECT_FALSE(plain.ok());

  // Unreadable files are a configuration error.
  config::WitnessSection missing = cfg;
  missing.tls_ca_file = etcd.dir() + "/missing.pem";
  EXPECT_TRUE(absl::IsInvalidArgument(NewEtcdWitness(missing, TheClock()).status()));
}

// [witness] for `etcd` over https with `cert` ("<name>.pem"/".key" of the etcd's PKI) as the
// client certificate; TTL 2 s, margin 500 ms, request timeout 500 ms.
config::WitnessSection TlsConfig(const EtcdServer& etcd, const std::string& cert,
                                 const std::string& key_prefix = "/nova-dt") {
  config::WitnessSection cfg;
  cfg.etcd_endpoints = {etcd.endpoint()};
  cfg.tls_ca_file = etcd.ca_file();
  cfg.tls_cert_file = etcd.cert_file(cert);
  cfg.tls_key_file = etcd.key_file(cert);
  cfg.key_prefix = key_prefix;
  cfg.lease_ttl_ms = 2000;
  cfg.fence_margin_ms = 500;
  cfg.request_timeout_ms = 500;
  return cfg;
}

// A client certificate that names the right host but comes from a CA etcd does not trust (the
// agent itself trusts etcd's server certificate): etcd refuses the handshake, every witness call
// fails with Unavailable naming the endpoint within the request timeout, and nothing reaches
// etcd — no key, no lease, no new revision.
TEST(WitnessTlsTest, ClientCertificateFromAnUntrustedCaIsRefused) {
  EtcdServer::Options tls;
  tls.tls = true;
  EtcdServer etcd(tls);
  ASSERT_TRUE(etcd.Start().ok()) << etcd.LogTail();
  etcd.IssueCertificate("rogue-compute-1", "compute-1", "other-ca");
  const std::string u = Uuid("untrusted-client");
  StatusOr<std::unique_ptr<Witness>> trusted =
      NewEtcdWitness(TlsConfig(etcd, "compute-1"), TheClock());
  ASSERT_TRUE(trusted.ok()) << trusted.status();
  std::unique_ptr<EtcdClient> admin =
      MakeClient(*EtcdClientOptionsFromConfig(TlsConfig(etcd, "compute-1")));
  etcdserverpb::RangeRequest everything;
  everything.set_key(std::string(1, '\0'));
  everything.set_range_end(std::string(1, '\0'));
  StatusOr<etcdserverpb::RangeResponse> before = admin->Range(everything);
  ASSERT_TRUE(before.ok()) << before.status();

  Events events;
  StatusOr<std::unique_ptr<Witness>> rogue =
      NewEtcdWitness(TlsConfig(etcd, "rogue-compute-1"), TheClock(), events.Listener());
  ASSERT_TRUE(rogue.ok()) << rogue.status();
  const auto begin = std::chrono::steady_clock::now();
  StatusOr<Ownership> claim = (*rogue)->Claim(u, "compute-1");
  const auto took = std::chrono::steady_clock::now() - begin;
  std::printf("claim with an untrusted client certificate: %s\n",
              claim.status().ToString().c_str());
  EXPECT_TRUE(absl::IsUnavailable(claim.status())) << claim.status();
  EXPECT_THAT(std::string(claim.status().message()), HasSubstr("etcd " + etcd.address()));
  EXPECT_THAT(std::string(claim.status().message()),
              HasSubstr("does not accept the client certificate [witness] tls_cert_file"));
  EXPECT_LT(took, kRequestTimeout + milliseconds(500));
  StatusOr<Ownership> take = (*rogue)->TakeOver(u, "compute-1", "compute-2", 1);
  EXPECT_TRUE(absl::IsUnavailable(take.status())) << take.status();
  EXPECT_TRUE(absl::IsUnavailable((*rogue)->Release(u, "compute-1"))) << "release";
  EXPECT_TRUE(absl::IsUnavailable((*rogue)->Forget(u, "compute-1"))) << "forget";
  EXPECT_EQ((*rogue)->FenceDeadline(), Clock::TimePoint::min()) << "no lease was granted";

  EXPECT_TRUE(absl::IsNotFound((*trusted)->Read(u).status()));
  StatusOr<etcdserverpb::RangeResponse> after = admin->Range(everything);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->count(), 0);
  EXPECT_EQ(after->header().revision(), before->header().revision()) << "something was written";
  rogue->reset();
  EXPECT_EQ(events.size(), 0u);
  // The same host with the certificate etcd trusts is served.
  StatusOr<Ownership> o = (*trusted)->Claim(u, "compute-1");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->generation, 1);
}

// etcd's own access control as docs/witness.md sets it up ("etcd's own access control"):
// authentication enabled, the user taken from the client certificate's common name, and a role
// granting readwrite on "<key_prefix>/" only. Everything the witness does — claim, keep-alive,
// advance, release, take-over (after a release, and after the owner died), forget — works under
// that prefix; a prefix outside the role, and a certificate whose common name is no etcd user,
// get PermissionDenied naming the prefix, and write nothing.
TEST(WitnessEtcdAuthTest, ARoleOnTheKeyPrefixIsAllTheWitnessNeeds) {
  EtcdServer::Options options;
  options.tls = true;
  options.auth = true;
  EtcdServer etcd(options);
  const absl::Status started = etcd.Start();
  ASSERT_TRUE(started.ok()) << started;
  const std::string one = "/nova-dt/region-one";
  const absl::Status added = etcd.AddUser("nova-dt-region-one", one + "/");
  ASSERT_TRUE(added.ok()) << added;
  const config::WitnessSection cfg = TlsConfig(etcd, "nova-dt-region-one", one);
  const std::string u = Uuid("auth");

  Events events;
  StatusOr<std::unique_ptr<Witness>> primary = NewEtcdWitness(cfg, TheClock(), events.Listener());
  ASSERT_TRUE(primary.ok()) << primary.status();
  StatusOr<std::unique_ptr<Witness>> backup = NewEtcdWitness(cfg, TheClock());
  ASSERT_TRUE(backup.ok()) << backup.status();

  StatusOr<Ownership> o = (*primary)->Claim(u, "compute-1");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->generation, 1);
  // Two renewals (LeaseKeepAlive) after the claim.
  const int first = events.WaitFor([](auto& e) { return IsType(e, WitnessEvent::Type::kRenewed); },
                                   milliseconds(2000));
  ASSERT_GE(first, 0) << "no renewal under authentication";
  ASSERT_GE(events.WaitFor([](auto& e) { return IsType(e, WitnessEvent::Type::kRenewed); },
                           milliseconds(2000), first + 1),
            0);
  EXPECT_GT((*primary)->FenceDeadline(), TheClock().Now());
  StatusOr<Ownership> advanced = (*primary)->AdvanceGeneration(u, "compute-1");
  ASSERT_TRUE(advanced.ok()) << advanced.status();
  EXPECT_EQ(advanced->generation, 2);
  // Planned hand-over: release, take-over.
  ASSERT_TRUE((*primary)->Release(u, "compute-1").ok());
  StatusOr<Ownership> took = (*backup)->TakeOver(u, "compute-2", "compute-1", 2);
  ASSERT_TRUE(took.ok()) << took.status();
  EXPECT_EQ(*took, (Ownership{"compute-2", 3, true, false, took->lease_id}));
  // Failover: the owner dies, its claim lapses (etcd expires the lease), the other takes over.
  backup->reset();
  ASSERT_TRUE(WaitUntilLapsed(**primary, u).has_value());
  took = (*primary)->TakeOver(u, "compute-1", "compute-2", 3);
  ASSERT_TRUE(took.ok()) << took.status();
  EXPECT_EQ(took->generation, 4);
  ASSERT_TRUE((*primary)->Forget(u, "compute-1").ok());
  EXPECT_TRUE(absl::IsNotFound((*primary)->Read(u).status()));
  for (const WitnessEvent& e : events.All()) {
    EXPECT_NE(e.type, WitnessEvent::Type::kLeaseLost) << e.reason;
    EXPECT_NE(e.type, WitnessEvent::Type::kOwnershipLost) << e.reason;
  }

  // Outside the role: another deployment's prefix, and one that only starts with the same
  // characters (the grant ends with '/').
  for (const std::string& other : {std::string("/nova-dt/region-two"), one + "-b"}) {
    SCOPED_TRACE(other);
    StatusOr<std::unique_ptr<Witness>> outside =
        NewEtcdWitness(TlsConfig(etcd, "nova-dt-region-one", other), TheClock());
    ASSERT_TRUE(outside.ok()) << outside.status();
    StatusOr<Ownership> refused = (*outside)->Claim(u, "compute-1");
    std::printf("claim under %s: %s\n", other.c_str(), refused.status().ToString().c_str());
    EXPECT_TRUE(absl::IsPermissionDenied(refused.status())) << refused.status();
    EXPECT_THAT(std::string(refused.status().message()), HasSubstr("'" + other + "/'"));
    EXPECT_TRUE(absl::IsPermissionDenied((*outside)->Read(u).status()));
    EXPECT_EQ((*outside)->FenceDeadline(), Clock::TimePoint::min());
  }
  // A certificate etcd trusts whose common name ("compute-1") is no etcd user.
  StatusOr<std::unique_ptr<Witness>> nobody =
      NewEtcdWitness(TlsConfig(etcd, "compute-1", one), TheClock());
  ASSERT_TRUE(nobody.ok()) << nobody.status();
  StatusOr<Ownership> refused = (*nobody)->Claim(u, "compute-1");
  std::printf("claim by a certificate that names no user: %s\n",
              refused.status().ToString().c_str());
  EXPECT_TRUE(absl::IsPermissionDenied(refused.status())) << refused.status();

  // Nothing was written outside region one; region one holds nothing (forgotten above).
  std::unique_ptr<EtcdClient> root =
      MakeClient(*EtcdClientOptionsFromConfig(TlsConfig(etcd, "root")));
  etcdserverpb::RangeRequest everything;
  everything.set_key(std::string(1, '\0'));
  everything.set_range_end(std::string(1, '\0'));
  StatusOr<etcdserverpb::RangeResponse> all = root->Range(everything);
  ASSERT_TRUE(all.ok()) << all.status();
  for (const mvccpb::KeyValue& kv : all->kvs()) ADD_FAILURE() << "left behind: " << kv.key();
}

}  // namespace
}  // namespace novadt::witness
