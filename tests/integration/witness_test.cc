// The etcd witness (agent/witness) against a real etcd (Debian's etcd-server) started by the
// test on 127.0.0.1: claims, refusals, one winner among racing take-overs, stale generations,
// the self-fence deadline coming before etcd expires a dead owner's key, a revoked lease
// (re-claim, never steal), an etcd restart, endpoint failover and TLS. Real time throughout,
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

  // Plaintext to the TLS port fails too.
  StatusOr<Ownership> plain =
      MakeWitness(ClientOptions({"127.0.0.1:" + std::to_string(etcd.client_port())}))->Read(u);
  EXPECT_FALSE(plain.ok());

  // Unreadable files are a configuration error.
  config::WitnessSection missing = cfg;
  missing.tls_ca_file = etcd.dir() + "/missing.pem";
  EXPECT_TRUE(absl::IsInvalidArgument(NewEtcdWitness(missing, TheClock()).status()));
}

}  // namespace
}  // namespace novadt::witness
