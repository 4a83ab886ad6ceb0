// The agent's side of the fencing witness (docs/witness.md, ARCHITECTURE.md invariant 3):
// primaries pause their guests when they can no longer prove their claim, backups fail over only
// after winning the claim.
#include <thread>

#include "agent/common/logging.h"
#include "agent/daemon/agent.h"
#include "agent/witness/etcd_witness.h"

namespace novadt::daemon {

Status Agent::StartWitness() {
  if (!cfg_.witness.enabled()) return absl::OkStatus();
  auto w = witness::NewEtcdWitness(cfg_.witness, clock_, [this](const witness::WitnessEvent& e) {
    loop_.Post([this, e] { OnWitnessEvent(e); });
  });
  if (!w.ok()) {
    return absl::FailedPreconditionError("cannot start the witness: " +
                                         std::string(w.status().message()));
  }
  witness_ = *std::move(w);
  loop_.RunEvery(std::chrono::milliseconds(50), [this] { CheckFence(); });
  spdlog::info("witness: etcd at {} (lease {} ms, fence margin {} ms)",
               fmt::join(cfg_.witness.etcd_endpoints, ","), cfg_.witness.lease_ttl_ms,
               cfg_.witness.fence_margin_ms);
  return absl::OkStatus();
}

// Self-fencing: past the deadline the witness may let this host's claims lapse and a backup
// take over, so every guest this host owns must be paused by then.
void Agent::CheckFence() {
  const auto now = clock_.Now();
  const auto deadline = witness_->FenceDeadline();
  if (now < deadline) return;
  for (auto& [uuid, p] : sessions_) {
    const engine::SessionStatus st = p.session->status();
    if (st.witness_generation == 0 || st.fenced) continue;  // not claimed yet, or done
    if (Status f = p.session->Fence("the witness lease was not renewed by its fence deadline");
        !f.ok()) {
      InstanceLog(uuid).Error("cannot fence the guest: {}", f.ToString());
    }
  }
}

void Agent::OnWitnessEvent(const witness::WitnessEvent& e) {
  using Type = witness::WitnessEvent::Type;
  const auto now = clock_.Now();
  auto unfence = [&](const std::string& uuid, engine::PrimarySession& s) {
    const engine::SessionStatus st = s.status();
    if (!st.fenced || st.handing_over || awaiting_reclaim_.count(uuid) ||
        now >= e.fence_deadline) {
      return;
    }
    if (Status st = s.Unfence(); !st.ok()) {
      InstanceLog(uuid).Error("cannot resume the fenced guest: {}", st.ToString());
    }
  };
  switch (e.type) {
    case Type::kRenewed:
      for (auto& [uuid, p] : sessions_) unfence(uuid, *p.session);
      break;
    case Type::kLeaseLost:
      spdlog::error("witness: lease lost ({}); fencing every owned guest until re-claimed",
                    e.reason.ToString());
      for (auto& [uuid, p] : sessions_) {
        if (p.session->status().witness_generation == 0) continue;
        awaiting_reclaim_.insert(uuid);
        if (Status f = p.session->Fence("the witness lease was lost"); !f.ok()) {
          InstanceLog(uuid).Error("cannot fence the guest: {}", f.ToString());
        }
      }
      break;
    case Type::kReclaimed: {
      awaiting_reclaim_.erase(e.instance_uuid);
      auto it = sessions_.find(e.instance_uuid);
      if (it != sessions_.end()) unfence(e.instance_uuid, *it->second.session);
      break;
    }
    case Type::kOwnershipLost: {
      awaiting_reclaim_.erase(e.instance_uuid);
      if (!sessions_.count(e.instance_uuid)) break;
      StandDown(e.instance_uuid,
                "another host owns the server now (witness: '" + e.ownership.owner +
                    "' at generation " + std::to_string(e.ownership.generation) + "): " +
                    std::string(e.reason.message()),
                e.ownership.owner);
      break;
    }
  }
}

Status Agent::AwaitTakeOver(const std::string& uuid, const std::string& primary_host,
                            int64_t generation, const std::atomic<bool>& cancel) {
  const InstanceLog log(uuid);
  if (generation <= 0) {
    return absl::FailedPreconditionError(
        "the primary " + primary_host + " sent no witness generation (no witness there): not "
        "failing over without fencing");
  }
  std::string last;
  for (;;) {
    if (stopping_ || cancel) return absl::CancelledError("failover called off");
    auto won = witness_->TakeOver(uuid, cfg_.defaults.host, primary_host, generation);
    if (won.ok()) {
      log.Info("witness: took the server over from {} (generation {} -> {})", primary_host,
               generation, won->generation);
      return absl::OkStatus();
    }
    const Status& st = won.status();
    if (!absl::IsFailedPrecondition(st) && !absl::IsUnavailable(st) &&
        !absl::IsDeadlineExceeded(st)) {
      // Aborted: the primary advanced the generation (it released output this replica lacks)
      // or another host won; NotFound: no claim to take over. Either way: not from here.
      return absl::AbortedError("the witness refuses the take-over: " + std::string(st.message()));
    }
    if (last != st.message()) {
      log.Warn("failover waits for the witness: {}", std::string(st.message()));
      last = std::string(st.message());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace novadt::daemon
