#include "agent/witness/etcd_witness.h"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "agent/common/logging.h"

namespace novadt::witness {
namespace {

using etcdserverpb::Compare;
using etcdserverpb::RequestOp;

// Re-reads after a transaction lost to a concurrent change before giving up with Aborted.
constexpr int kMaxAttempts = 4;
// Pause between rounds of re-claims while some held server is not on the current lease.
constexpr auto kReclaimInterval = std::chrono::milliseconds(200);

std::string LeaseHex(int64_t id) { return fmt::format("{:x}", static_cast<uint64_t>(id)); }

// What etcd holds for one server, read atomically (one read-only Txn).
struct Record {
  // <prefix>/servers/<uuid>: present while the owner's claim is live.
  bool live = false;
  std::string live_owner;
  int64_t live_generation = 0;
  int64_t lease = 0;
  int64_t servers_mod = 0;  // 0: absent
  // <prefix>/generations/<uuid>: the last owner and generation.
  bool has_history = false;
  std::string owner;
  int64_t generation = 0;
  bool released = false;
  int64_t generations_mod = 0;  // 0: absent

  bool exists() const { return live || has_history; }

  Ownership ToOwnership() const {
    if (live) return Ownership{live_owner, live_generation, true, false, lease};
    if (has_history) return Ownership{owner, generation, false, released, 0};
    return Ownership{};
  }
};

std::string Describe(const Ownership& o) {
  if (o.owner.empty() && o.generation == 0) return "no record";
  return "'" + o.owner + "' at generation " + std::to_string(o.generation) +
         (o.live       ? " (live)"
          : o.released ? " (released)"
                       : " (claim lapsed)");
}

std::string ServersValue(const std::string& owner, int64_t generation) {
  return nlohmann::json{{"owner", owner}, {"generation", generation}}.dump();
}

std::string GenerationsValue(const std::string& owner, int64_t generation, bool released) {
  return nlohmann::json{{"owner", owner}, {"generation", generation}, {"released", released}}
      .dump();
}

// Parses a value written by ServersValue()/GenerationsValue().
Status ParseValue(const std::string& key, const std::string& value, std::string* owner,
                  int64_t* generation, bool* released) {
  nlohmann::json j = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
  const bool ok = j.is_object() && j.contains("owner") && j["owner"].is_string() &&
                  !j["owner"].get<std::string>().empty() && j.contains("generation") &&
                  j["generation"].is_number_integer() && j["generation"].get<int64_t>() >= 1 &&
                  (released == nullptr || (j.contains("released") && j["released"].is_boolean()));
  if (!ok) {
    return absl::DataLossError("etcd key " + key +
                               " does not hold a nova-dt witness record: " + value.substr(0, 200));
  }
  *owner = j["owner"].get<std::string>();
  *generation = j["generation"].get<int64_t>();
  if (released) *released = j["released"].get<bool>();
  return absl::OkStatus();
}

RequestOp RangeOp(const std::string& key) {
  RequestOp op;
  op.mutable_request_range()->set_key(key);
  return op;
}

RequestOp PutOp(const std::string& key, const std::string& value, int64_t lease) {
  RequestOp op;
  op.mutable_request_put()->set_key(key);
  op.mutable_request_put()->set_value(value);
  op.mutable_request_put()->set_lease(lease);
  return op;
}

RequestOp DeleteOp(const std::string& key) {
  RequestOp op;
  op.mutable_request_delete_range()->set_key(key);
  return op;
}

Compare ModRevisionIs(const std::string& key, int64_t mod_revision) {
  Compare c;
  c.set_key(key);
  c.set_target(Compare::MOD);
  c.set_result(Compare::EQUAL);
  c.set_mod_revision(mod_revision);  // 0 compares equal for an absent key
  return c;
}

class EtcdWitness final : public Witness {
 public:
  EtcdWitness(std::unique_ptr<EtcdClient> client, EtcdWitnessOptions options, const Clock& clock,
              WitnessListener listener)
      : client_(std::move(client)),
        options_(std::move(options)),
        clock_(clock),
        listener_(std::move(listener)),
        thread_([this] { Run(); }) {}

  ~EtcdWitness() override {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  StatusOr<Ownership> Claim(const std::string& uuid, const std::string& host) override {
    if (uuid.empty() || host.empty()) {
      return absl::InvalidArgumentError("Claim: empty instance uuid or host");
    }
    return DoClaim(uuid, host, std::nullopt, HoldMode::kHold);
  }

  StatusOr<Ownership> TakeOver(const std::string& uuid, const std::string& new_host,
                               const std::string& expected_owner,
                               int64_t expected_generation) override {
    if (uuid.empty() || new_host.empty() || expected_owner.empty() || new_host == expected_owner ||
        expected_generation < 1) {
      return absl::InvalidArgumentError(
          "TakeOver: needs an instance uuid, a new host other than the expected owner, and a "
          "generation >= 1");
    }
    const InstanceLog log(uuid);
    for (int attempt = 0; attempt < kMaxAttempts; ++attempt) {
      StatusOr<Record> rec = ReadRecord(uuid);
      if (!rec.ok()) return rec.status();
      if (!rec->exists()) return absl::NotFoundError("no witness record for " + uuid);
      const Ownership now = rec->ToOwnership();
      if (now.owner == new_host && now.generation == expected_generation + 1 && !now.released) {
        // Won already (an earlier attempt whose answer was lost): make sure the claim is live
        // under this witness's lease, as Claim() would.
        return DoClaim(uuid, new_host, now.generation, HoldMode::kHold);
      }
      if (now.owner != expected_owner || now.generation != expected_generation) {
        return absl::AbortedError("take-over of " + uuid + " from '" + expected_owner +
                                  "' at generation " + std::to_string(expected_generation) +
                                  " refused: the witness now holds " + Describe(now));
      }
      if (now.live) {
        std::string expires;
        etcdserverpb::LeaseTimeToLiveRequest q;
        q.set_id(rec->lease);
        if (auto ttl = client_->LeaseTimeToLive(q); ttl.ok() && ttl->ttl() >= 0) {
          expires = ", expires in under " + std::to_string(ttl->ttl() + 1) + " s";
        }
        return absl::FailedPreconditionError(
            "take-over of " + uuid + " refused: '" + expected_owner + "' still holds a live " +
            "claim (lease " + LeaseHex(rec->lease) + expires +
            "); it is safe to take over only after the claim lapses");
      }
      StatusOr<int64_t> lease = EnsureLease();
      if (!lease.ok()) return lease.status();
      const int64_t generation = expected_generation + 1;
      StatusOr<bool> committed =
          Commit(uuid, *rec,
                 {PutOp(ServersKey(uuid), ServersValue(new_host, generation), *lease),
                  PutOp(GenerationsKey(uuid), GenerationsValue(new_host, generation, false), 0)});
      if (absl::IsNotFound(committed.status())) {
        LeaseGone(*lease, committed.status());
        continue;
      }
      if (!committed.ok()) return committed.status();
      if (*committed) {
        Hold(uuid, new_host, generation, *lease, HoldMode::kHold);
        log.Info("witness: took over from '{}' at generation {}: '{}' owns generation {}",
                 expected_owner, expected_generation, new_host, generation);
        return Ownership{new_host, generation, true, false, *lease};
      }
      // Someone changed the record meanwhile: re-read and judge again.
    }
    return absl::AbortedError("take-over of " + uuid + ": the record kept changing");
  }

  StatusOr<Ownership> AdvanceGeneration(const std::string& uuid,
                                        const std::string& host) override {
    if (uuid.empty() || host.empty()) {
      return absl::InvalidArgumentError("AdvanceGeneration: empty instance uuid or host");
    }
    for (int attempt = 0; attempt < kMaxAttempts; ++attempt) {
      StatusOr<Record> rec = ReadRecord(uuid);
      if (!rec.ok()) return rec.status();
      if (!rec->exists()) return absl::NotFoundError("no witness record for " + uuid);
      const Ownership now = rec->ToOwnership();
      if (!rec->live || now.owner != host) {
        return absl::FailedPreconditionError("advancing the generation of " + uuid + " by '" +
                                             host + "' refused: the witness holds " +
                                             Describe(now));
      }
      const int64_t generation = now.generation + 1;
      // Same lease as the live key: the claim stays exactly as alive as it was.
      StatusOr<bool> committed =
          Commit(uuid, *rec,
                 {PutOp(ServersKey(uuid), ServersValue(host, generation), rec->lease),
                  PutOp(GenerationsKey(uuid), GenerationsValue(host, generation, false), 0)});
      if (absl::IsNotFound(committed.status())) {
        return absl::FailedPreconditionError("advancing the generation of " + uuid +
                                             ": the claim's lease is gone");
      }
      if (!committed.ok()) return committed.status();
      if (*committed) {
        Hold(uuid, host, generation, rec->lease, HoldMode::kIfStillHeld);
        InstanceLog(uuid).Info("witness: '{}' advanced to generation {}", host, generation);
        return Ownership{host, generation, true, false, rec->lease};
      }
    }
    return absl::AbortedError("advancing the generation of " + uuid + ": the record kept changing");
  }

  Status Release(const std::string& uuid, const std::string& host) override {
    Unhold(uuid);  // no re-claim from now on, whatever the outcome
    for (int attempt = 0; attempt < kMaxAttempts; ++attempt) {
      StatusOr<Record> rec = ReadRecord(uuid);
      if (!rec.ok()) return rec.status();
      if (!rec->exists()) return absl::NotFoundError("no witness record for " + uuid);
      const Ownership now = rec->ToOwnership();
      if (now.owner != host) {
        return absl::FailedPreconditionError("release of " + uuid + " by '" + host +
                                             "' refused: the witness holds " + Describe(now));
      }
      if (now.released) return absl::OkStatus();
      std::vector<RequestOp> ops;
      if (rec->live) ops.push_back(DeleteOp(ServersKey(uuid)));
      ops.push_back(PutOp(GenerationsKey(uuid), GenerationsValue(host, now.generation, true), 0));
      StatusOr<bool> committed = Commit(uuid, *rec, std::move(ops));
      if (!committed.ok()) return committed.status();
      if (*committed) {
        InstanceLog(uuid).Info("witness: '{}' released generation {}", host, now.generation);
        return absl::OkStatus();
      }
    }
    return absl::AbortedError("release of " + uuid + ": the record kept changing");
  }

  Status Forget(const std::string& uuid, const std::string& host) override {
    Unhold(uuid);
    for (int attempt = 0; attempt < kMaxAttempts; ++attempt) {
      StatusOr<Record> rec = ReadRecord(uuid);
      if (!rec.ok()) return rec.status();
      if (!rec->exists()) return absl::OkStatus();
      const Ownership now = rec->ToOwnership();
      if (now.owner != host && !now.released) {
        return absl::FailedPreconditionError("forgetting " + uuid + " by '" + host +
                                             "' refused: the witness holds " + Describe(now));
      }
      StatusOr<bool> committed =
          Commit(uuid, *rec, {DeleteOp(ServersKey(uuid)), DeleteOp(GenerationsKey(uuid))});
      if (!committed.ok()) return committed.status();
      if (*committed) return absl::OkStatus();
    }
    return absl::AbortedError("forgetting " + uuid + ": the record kept changing");
  }

  StatusOr<Ownership> Read(const std::string& uuid) override {
    StatusOr<Record> rec = ReadRecord(uuid);
    if (!rec.ok()) return rec.status();
    if (!rec->exists()) return absl::NotFoundError("no witness record for " + uuid);
    return rec->ToOwnership();
  }

  Clock::TimePoint FenceDeadline() const override {
    std::lock_guard<std::mutex> l(mu_);
    return lease_id_ == 0 ? Clock::TimePoint::min() : deadline_;
  }

 private:
  // A server this witness claimed: re-claimed after the lease is lost.
  struct Held {
    std::string host;
    int64_t generation = 0;
    int64_t lease = 0;  // the lease its key is attached to
  };

  std::string ServersKey(const std::string& uuid) const {
    return options_.key_prefix + "/servers/" + uuid;
  }
  std::string GenerationsKey(const std::string& uuid) const {
    return options_.key_prefix + "/generations/" + uuid;
  }

  // etcd's bare "permission denied" (its authentication is on and this client's user may not
  // use the keys) with what the operator must grant; other errors unchanged.
  Status WithAccessHint(const Status& s) const {
    if (!absl::IsPermissionDenied(s)) return s;
    return absl::PermissionDeniedError(
        std::string(s.message()) + " for the witness's keys under '" + options_.key_prefix +
        "/' ([witness] key_prefix): the etcd user named by the client certificate's common name "
        "([witness] tls_cert_file) needs a role granting readwrite on that prefix "
        "(docs/witness.md)");
  }

  // Both keys of `uuid` in one linearizable read-only transaction.
  StatusOr<Record> ReadRecord(const std::string& uuid) {
    etcdserverpb::TxnRequest txn;
    *txn.add_success() = RangeOp(ServersKey(uuid));
    *txn.add_success() = RangeOp(GenerationsKey(uuid));
    StatusOr<etcdserverpb::TxnResponse> r = client_->Txn(txn);
    if (!r.ok()) return WithAccessHint(r.status());
    return ParseRecord(uuid, *r);
  }

  // The record in the two range responses of `r` (ReadRecord's, or Commit's failure branch).
  StatusOr<Record> ParseRecord(const std::string& uuid, const etcdserverpb::TxnResponse& r) {
    if (r.responses_size() != 2 || !r.responses(0).has_response_range() ||
        !r.responses(1).has_response_range()) {
      return absl::InternalError("etcd answered a witness read with an unexpected shape");
    }
    Record rec;
    if (r.responses(0).response_range().kvs_size() > 0) {
      const mvccpb::KeyValue& kv = r.responses(0).response_range().kvs(0);
      NOVA_DT_RETURN_IF_ERROR(
          ParseValue(kv.key(), kv.value(), &rec.live_owner, &rec.live_generation, nullptr));
      rec.live = true;
      rec.lease = kv.lease();
      rec.servers_mod = kv.mod_revision();
    }
    if (r.responses(1).response_range().kvs_size() > 0) {
      const mvccpb::KeyValue& kv = r.responses(1).response_range().kvs(0);
      NOVA_DT_RETURN_IF_ERROR(
          ParseValue(kv.key(), kv.value(), &rec.owner, &rec.generation, &rec.released));
      rec.has_history = true;
      rec.generations_mod = kv.mod_revision();
    }
    return rec;
  }

  // Applies `ops` if neither key changed since `read`. True when applied, false when a
  // concurrent change won; etcd's error otherwise (NotFound: a put named a dead lease).
  StatusOr<bool> Commit(const std::string& uuid, const Record& read, std::vector<RequestOp> ops) {
    etcdserverpb::TxnRequest txn;
    *txn.add_compare() = ModRevisionIs(ServersKey(uuid), read.servers_mod);
    *txn.add_compare() = ModRevisionIs(GenerationsKey(uuid), read.generations_mod);
    for (RequestOp& op : ops) *txn.add_success() = std::move(op);
    StatusOr<etcdserverpb::TxnResponse> r = client_->Txn(txn);
    if (!r.ok()) return WithAccessHint(r.status());
    return r->succeeded();
  }

  // Whether a successful claim adds the server to held_ (a caller's claim) or only updates it
  // when it is still there (a re-claim: Release() may have dropped it meanwhile).
  enum class HoldMode { kHold, kIfStillHeld };

  // Claim(); with `required_generation` (re-claims and a won TakeOver()) only a record of
  // `host` at that generation is claimed, never a missing or released one.
  StatusOr<Ownership> DoClaim(const std::string& uuid, const std::string& host,
                              std::optional<int64_t> required_generation, HoldMode mode) {
    const InstanceLog log(uuid);
    for (int attempt = 0; attempt < kMaxAttempts; ++attempt) {
      StatusOr<Record> rec = ReadRecord(uuid);
      if (!rec.ok()) return rec.status();
      const Ownership now = rec->ToOwnership();
      int64_t generation = 0;
      if (rec->live) {
        if (now.owner != host) {
          return absl::FailedPreconditionError("claim of " + uuid + " by '" + host +
                                               "' refused: the witness holds " + Describe(now));
        }
        generation = now.generation;
      } else if (!rec->has_history) {
        generation = 1;
      } else if (rec->released) {
        generation = rec->generation + 1;
      } else if (rec->owner == host) {
        generation = rec->generation;  // our own claim lapsed; nobody owned it since
      } else {
        return absl::FailedPreconditionError(
            "claim of " + uuid + " by '" + host + "' refused: the witness holds " + Describe(now) +
            "; only a take-over naming that owner and generation may move it");
      }
      if (required_generation &&
          (!rec->exists() || rec->released || generation != *required_generation)) {
        return absl::FailedPreconditionError(
            "re-claim of " + uuid + " by '" + host + "' at generation " +
            std::to_string(*required_generation) + " refused: the witness holds " + Describe(now));
      }
      StatusOr<int64_t> lease = EnsureLease();
      if (!lease.ok()) return lease.status();
      if (rec->live && rec->lease == *lease) {
        Hold(uuid, host, generation, *lease, mode);
        return now;
      }
      StatusOr<bool> committed =
          Commit(uuid, *rec,
                 {PutOp(ServersKey(uuid), ServersValue(host, generation), *lease),
                  PutOp(GenerationsKey(uuid), GenerationsValue(host, generation, false), 0)});
      if (absl::IsNotFound(committed.status())) {
        LeaseGone(*lease, committed.status());
        continue;
      }
      if (!committed.ok()) return committed.status();
      if (*committed) {
        Hold(uuid, host, generation, *lease, mode);
        log.Info("witness: '{}' owns generation {} (lease {})", host, generation, LeaseHex(*lease));
        return Ownership{host, generation, true, false, *lease};
      }
    }
    return absl::AbortedError("claim of " + uuid + ": the record kept changing");
  }

  // The current lease; grants one when there is none (one grant at a time).
  StatusOr<int64_t> EnsureLease() {
    std::lock_guard<std::mutex> grant(grant_mu_);
    {
      std::lock_guard<std::mutex> l(mu_);
      if (lease_id_ != 0) return lease_id_;
    }
    const int64_t ttl_s = std::max<int64_t>(
        1, std::chrono::duration_cast<std::chrono::seconds>(options_.lease_ttl).count());
    etcdserverpb::LeaseGrantRequest req;
    req.set_ttl(ttl_s);
    const Clock::TimePoint sent_at = clock_.Now();
    StatusOr<etcdserverpb::LeaseGrantResponse> r = client_->LeaseGrant(req);
    if (!r.ok()) return r.status();
    if (r->ttl() != ttl_s) {
      spdlog::info("witness: etcd granted lease {} with TTL {} s (asked for {} s)",
                   LeaseHex(r->id()), r->ttl(), ttl_s);
    } else {
      spdlog::info("witness: etcd granted lease {} (TTL {} s)", LeaseHex(r->id()), r->ttl());
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      lease_id_ = r->id();
      lease_ttl_ = std::chrono::seconds(r->ttl());
      deadline_ = sent_at + lease_ttl_ - options_.fence_margin;
      next_renewal_ = std::chrono::steady_clock::now() + RenewInterval();
      failed_renewals_ = 0;
      wake_ = true;  // the thread may be waiting for a later time
    }
    cv_.notify_all();
    return r->id();
  }

  // etcd says lease `id` is gone. If it is the current one: drop it, tell the owner, and wake
  // the keep-alive thread to re-claim what this witness held.
  void LeaseGone(int64_t id, const Status& why) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (id == 0 || id != lease_id_) return;
      lease_id_ = 0;
      deadline_ = Clock::TimePoint::min();
      spdlog::error("witness: lease {} is gone ({}): every claim of this host lapsed", LeaseHex(id),
                    std::string(why.message()));
      WitnessEvent e;
      e.type = WitnessEvent::Type::kLeaseLost;
      e.fence_deadline = Clock::TimePoint::min();
      e.reason = why;
      events_.push_back(std::move(e));
      wake_ = true;
    }
    cv_.notify_all();
  }

  void Hold(const std::string& uuid, const std::string& host, int64_t generation, int64_t lease,
            HoldMode mode) {
    std::lock_guard<std::mutex> l(mu_);
    if (mode == HoldMode::kIfStillHeld && held_.count(uuid) == 0) return;
    held_[uuid] = Held{host, generation, lease};
  }

  void Unhold(const std::string& uuid) {
    std::lock_guard<std::mutex> l(mu_);
    held_.erase(uuid);
  }

  // TTL/3 of the granted lease. REQUIRES: mu_ held.
  std::chrono::steady_clock::duration RenewInterval() const {
    return std::max<std::chrono::steady_clock::duration>(lease_ttl_ / 3,
                                                         std::chrono::milliseconds(100));
  }
  // After a failed renewal: TTL/10. REQUIRES: mu_ held.
  std::chrono::steady_clock::duration RetryInterval() const {
    return std::max<std::chrono::steady_clock::duration>(lease_ttl_ / 10,
                                                         std::chrono::milliseconds(100));
  }

  // The keep-alive thread: renews the lease when due, re-claims after a lease loss, delivers
  // events.
  void Run() {
    pthread_setname_np(pthread_self(), "witness-renew");
    std::unique_lock<std::mutex> l(mu_);
    while (true) {
      DeliverEvents(l);
      if (stop_) break;
      auto wake_at = lease_id_ != 0 ? next_renewal_
                                    : std::chrono::steady_clock::now() + std::chrono::seconds(1);
      if (NeedsReclaim()) wake_at = std::min(wake_at, last_reclaim_ + kReclaimInterval);
      cv_.wait_until(l, wake_at, [&] { return stop_ || wake_ || !events_.empty(); });
      if (stop_) break;
      if (!events_.empty()) continue;
      wake_ = false;
      const int64_t lease = lease_id_;
      if (lease != 0 && std::chrono::steady_clock::now() >= next_renewal_) {
        l.unlock();
        Renew(lease);
        l.lock();
      }
      if (!stop_ && NeedsReclaim() &&
          std::chrono::steady_clock::now() >= last_reclaim_ + kReclaimInterval) {
        last_reclaim_ = std::chrono::steady_clock::now();
        l.unlock();
        ReclaimAll();
        l.lock();
      }
    }
    DeliverEvents(l);  // what happened before the destructor still reaches the owner
  }

  // Hands queued events to the listener, without holding mu_ during the calls.
  void DeliverEvents(std::unique_lock<std::mutex>& l) {
    while (!events_.empty()) {
      WitnessEvent e = std::move(events_.front());
      events_.pop_front();
      if (listener_) {
        l.unlock();
        listener_(e);
        l.lock();
      }
    }
  }

  // REQUIRES: mu_ held.
  bool NeedsReclaim() const {
    for (const auto& [uuid, held] : held_) {
      if (held.lease != lease_id_ || lease_id_ == 0) return true;
    }
    return false;
  }

  void Renew(int64_t lease) {
    StatusOr<EtcdClient::KeepAliveResult> r = client_->KeepAliveOnce(lease);
    if (r.ok() && r->ttl_s <= 0) {
      LeaseGone(lease, absl::NotFoundError("etcd says lease " + LeaseHex(lease) +
                                           " expired or was revoked"));
      return;
    }
    std::unique_lock<std::mutex> l(mu_);
    if (lease != lease_id_) return;  // replaced meanwhile
    if (!r.ok()) {
      next_renewal_ = std::chrono::steady_clock::now() + RetryInterval();
      // The first failure of a streak is a warning; the owner hears nothing until the lease is
      // renewed again or lost (its fence deadline does not move meanwhile).
      spdlog::log(failed_renewals_++ == 0 ? spdlog::level::warn : spdlog::level::debug,
                  "witness: renewing lease {} failed (retrying every {} ms): {}", LeaseHex(lease),
                  std::chrono::duration_cast<std::chrono::milliseconds>(RetryInterval()).count(),
                  std::string(r.status().message()));
      return;
    }
    if (failed_renewals_ > 0) {
      spdlog::info("witness: lease {} renewed again after {} failed attempts", LeaseHex(lease),
                   failed_renewals_);
      failed_renewals_ = 0;
    }
    lease_ttl_ = std::chrono::seconds(r->ttl_s);
    deadline_ = std::max(deadline_, r->sent_at + lease_ttl_ - options_.fence_margin);
    next_renewal_ = std::chrono::steady_clock::now() + RenewInterval();
    WitnessEvent e;
    e.type = WitnessEvent::Type::kRenewed;
    e.fence_deadline = deadline_;
    events_.push_back(std::move(e));
  }

  // Re-claims every held server whose key is not on the current lease: same host, same
  // generation, never from another host.
  void ReclaimAll() {
    std::vector<std::pair<std::string, Held>> todo;
    {
      std::lock_guard<std::mutex> l(mu_);
      for (const auto& [uuid, held] : held_) {
        if (held.lease != lease_id_ || lease_id_ == 0) todo.emplace_back(uuid, held);
      }
    }
    for (const auto& [uuid, held] : todo) {
      {
        std::lock_guard<std::mutex> l(mu_);
        // A renewal of the current lease comes first: the rest waits for the next round.
        if (stop_ || (lease_id_ != 0 && std::chrono::steady_clock::now() >= next_renewal_)) {
          return;
        }
        auto it = held_.find(uuid);
        // Released, or claimed again by a caller meanwhile.
        if (it == held_.end() || (it->second.lease == lease_id_ && lease_id_ != 0)) continue;
      }
      const InstanceLog log(uuid);
      StatusOr<Ownership> o = DoClaim(uuid, held.host, held.generation, HoldMode::kIfStillHeld);
      WitnessEvent e;
      e.instance_uuid = uuid;
      if (o.ok()) {
        log.Info("witness: re-claimed generation {} for '{}' under lease {}", o->generation,
                 held.host, LeaseHex(o->lease_id));
        e.type = WitnessEvent::Type::kReclaimed;
        e.ownership = *o;
      } else if (!absl::IsFailedPrecondition(o.status()) && !absl::IsDataLoss(o.status())) {
        return;  // etcd unreachable, or the record kept changing: the next round tries again
      } else {
        log.Error("witness: '{}' lost generation {}: {}", held.host, held.generation,
                  std::string(o.status().message()));
        e.type = WitnessEvent::Type::kOwnershipLost;
        e.reason = o.status();
        if (StatusOr<Ownership> now = Read(uuid); now.ok()) e.ownership = *now;
      }
      std::lock_guard<std::mutex> l(mu_);
      if (e.type == WitnessEvent::Type::kOwnershipLost) {
        auto it = held_.find(uuid);
        if (it != held_.end() && it->second.generation == held.generation &&
            it->second.lease == held.lease) {
          held_.erase(it);
        }
      }
      e.fence_deadline = lease_id_ == 0 ? Clock::TimePoint::min() : deadline_;
      events_.push_back(std::move(e));
    }
  }

  const std::unique_ptr<EtcdClient> client_;
  const EtcdWitnessOptions options_;
  const Clock& clock_;
  const WitnessListener listener_;

  std::mutex grant_mu_;  // one LeaseGrant at a time; taken before mu_
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool wake_ = false;
  int64_t lease_id_ = 0;  // 0: none
  Clock::Duration lease_ttl_{0};
  Clock::TimePoint deadline_ = Clock::TimePoint::min();
  std::chrono::steady_clock::time_point next_renewal_{};
  std::chrono::steady_clock::time_point last_reclaim_{};
  int failed_renewals_ = 0;
  std::map<std::string, Held> held_;
  std::deque<WitnessEvent> events_;
  std::thread thread_;  // last: starts after every member above is initialised
};

}  // namespace

EtcdWitnessOptions EtcdWitnessOptionsFromConfig(const config::WitnessSection& witness) {
  EtcdWitnessOptions o;
  o.key_prefix = witness.key_prefix;
  o.lease_ttl = std::chrono::milliseconds(witness.lease_ttl_ms);
  o.fence_margin = std::chrono::milliseconds(witness.fence_margin_ms);
  return o;
}

std::unique_ptr<Witness> NewEtcdWitness(std::unique_ptr<EtcdClient> client,
                                        EtcdWitnessOptions options, const Clock& clock,
                                        WitnessListener listener) {
  return std::make_unique<EtcdWitness>(std::move(client), std::move(options), clock,
                                       std::move(listener));
}

StatusOr<std::unique_ptr<Witness>> NewEtcdWitness(const config::WitnessSection& witness,
                                                  const Clock& clock, WitnessListener listener) {
  if (!witness.enabled()) {
    return absl::InvalidArgumentError("[witness] etcd_endpoints is empty: no witness configured");
  }
  StatusOr<EtcdClientOptions> client_options = EtcdClientOptionsFromConfig(witness);
  if (!client_options.ok()) return client_options.status();
  StatusOr<std::unique_ptr<EtcdClient>> client =
      EtcdClient::Create(*std::move(client_options), clock);
  if (!client.ok()) return client.status();
  return NewEtcdWitness(*std::move(client), EtcdWitnessOptionsFromConfig(witness), clock,
                        std::move(listener));
}

}  // namespace novadt::witness
