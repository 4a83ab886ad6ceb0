// An in-memory witness::Witness with the same ownership rules as the etcd one (agent/witness/
// witness.h), for unit tests: one record per server, leases simulated by Lapse(), any call can
// be made to fail, the fence deadline is set by the test. Thread-safe.
#pragma once

#include <deque>
#include <map>
#include <mutex>
#include <string>

#include "agent/witness/witness.h"

namespace novadt::testing {

class FakeWitness final : public witness::Witness {
 public:
  using Ownership = witness::Ownership;

  // The next call of `method` ("Claim", "TakeOver", "AdvanceGeneration", "Release", "Forget",
  // "Read") fails with `st` and changes nothing.
  void FailNext(const std::string& method, Status st) {
    std::lock_guard<std::mutex> l(mu_);
    failures_[method].push_back(std::move(st));
  }
  // The owner's claim lapses (its lease expired), as etcd would after the TTL.
  void Lapse(const std::string& uuid) {
    std::lock_guard<std::mutex> l(mu_);
    records_[uuid].live = false;
  }
  void SetFenceDeadline(Clock::TimePoint t) {
    std::lock_guard<std::mutex> l(mu_);
    deadline_ = t;
  }
  int calls(const std::string& method) {
    std::lock_guard<std::mutex> l(mu_);
    return calls_[method];
  }

  StatusOr<Ownership> Claim(const std::string& uuid, const std::string& host) override {
    std::lock_guard<std::mutex> l(mu_);
    NOVA_DT_RETURN_IF_ERROR(Injected("Claim"));
    auto it = records_.find(uuid);
    if (it == records_.end()) return records_[uuid] = Ownership{host, 1, true, false, 1};
    Ownership& o = it->second;
    if (o.released) return o = Ownership{host, o.generation + 1, true, false, 1};
    if (o.owner != host) return absl::FailedPreconditionError("owned by '" + o.owner + "'");
    o.live = true;
    return o;
  }
  StatusOr<Ownership> TakeOver(const std::string& uuid, const std::string& new_host,
                               const std::string& expected_owner,
                               int64_t expected_generation) override {
    std::lock_guard<std::mutex> l(mu_);
    NOVA_DT_RETURN_IF_ERROR(Injected("TakeOver"));
    auto it = records_.find(uuid);
    if (it == records_.end()) return absl::NotFoundError("no record");
    Ownership& o = it->second;
    if (o.owner == new_host && o.generation == expected_generation + 1) return o;
    if (o.owner != expected_owner || o.generation != expected_generation) {
      return absl::AbortedError("record is '" + o.owner + "' at generation " +
                                std::to_string(o.generation));
    }
    if (o.live && !o.released) return absl::FailedPreconditionError("claim still live");
    return o = Ownership{new_host, expected_generation + 1, true, false, 2};
  }
  StatusOr<Ownership> AdvanceGeneration(const std::string& uuid, const std::string& host) override {
    std::lock_guard<std::mutex> l(mu_);
    NOVA_DT_RETURN_IF_ERROR(Injected("AdvanceGeneration"));
    auto it = records_.find(uuid);
    if (it == records_.end()) return absl::NotFoundError("no record");
    Ownership& o = it->second;
    if (o.owner != host || !o.live || o.released) {
      return absl::FailedPreconditionError("no live claim of '" + host + "'");
    }
    ++o.generation;
    return o;
  }
  Status Release(const std::string& uuid, const std::string& host) override {
    std::lock_guard<std::mutex> l(mu_);
    NOVA_DT_RETURN_IF_ERROR(Injected("Release"));
    auto it = records_.find(uuid);
    if (it == records_.end()) return absl::NotFoundError("no record");
    if (it->second.owner != host) return absl::FailedPreconditionError("not '" + host + "''s");
    it->second.live = false;
    it->second.released = true;
    return absl::OkStatus();
  }
  Status Forget(const std::string& uuid, const std::string& host) override {
    std::lock_guard<std::mutex> l(mu_);
    NOVA_DT_RETURN_IF_ERROR(Injected("Forget"));
    auto it = records_.find(uuid);
    if (it == records_.end()) return absl::OkStatus();
    if (it->second.owner != host && !it->second.released) {
      return absl::FailedPreconditionError("not '" + host + "''s");
    }
    records_.erase(it);
    return absl::OkStatus();
  }
  StatusOr<Ownership> Read(const std::string& uuid) override {
    std::lock_guard<std::mutex> l(mu_);
    NOVA_DT_RETURN_IF_ERROR(Injected("Read"));
    auto it = records_.find(uuid);
    if (it == records_.end()) return absl::NotFoundError("no record");
    return it->second;
  }
  Clock::TimePoint FenceDeadline() const override {
    std::lock_guard<std::mutex> l(mu_);
    return deadline_;
  }

 private:
  // REQUIRES: mu_ held.
  Status Injected(const std::string& method) {
    ++calls_[method];
    auto& f = failures_[method];
    if (f.empty()) return absl::OkStatus();
    Status st = f.front();
    f.pop_front();
    return st;
  }

  mutable std::mutex mu_;
  std::map<std::string, Ownership> records_;
  std::map<std::string, std::deque<Status>> failures_;
  std::map<std::string, int> calls_;
  Clock::TimePoint deadline_ = Clock::TimePoint::max();
};

}  // namespace novadt::testing
