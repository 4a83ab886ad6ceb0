// Planned switchover / failback and automatic re-protection (issue 6 item 3).
//
// Switchover, primary side (Agent::Switchover):
//   1. the session takes a final checkpoint with the guest left paused, the backup commits it
//      and every held frame leaves (PrimarySession::HandOver) — nothing the guest sent is held
//      back any more, and it sends nothing new;
//   2. with a witness, the claim is released, so the backup may take ownership at once;
//   3. the backup restores the server from exactly that epoch (peer API TakeOver) and answers
//      once it runs there;
//   4. the paused copy here is destroyed and the server forgotten here.
// A client sees the guest pause for the length of steps 1-3 and no output lost or repeated.
// If the backup does not take over, the paused guest resumes here only when this host may run
// it (RecoverFailedSwitchover); when that cannot be known it stays paused: never two copies.
//
// Re-protection (Agent::TryReprotect): a server that failed over or switched over to this host
// is protected again towards the first [replication] reprotect_hosts entry that answers hellos
// and that Nova has not disabled — e.g. the old primary once it is back. The seed sends only what
// differs from the basis the old host kept (Agent::KeepAsBasis: the paused copy of a switchover,
// or the disks a dead or stale copy left). A pending re-protection is persisted in the
// protection table (core::kReprotectPending).
#include <chrono>
#include <future>
#include <thread>

#include "agent/common/identifiers.h"
#include "agent/common/logging.h"
#include "agent/daemon/agent.h"
#include "agent/engine/qmp.h"

namespace novadt::daemon {
namespace {

constexpr auto kTakeOverTimeout = std::chrono::seconds(60);

int64_t Ms(Clock::Duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

}  // namespace

StatusOr<core::SwitchoverResult> Agent::Switchover(const std::string& uuid) {
  NOVA_DT_RETURN_IF_ERROR(ValidateInstanceUuid(uuid));
  struct Target {
    std::shared_ptr<engine::PrimarySession> session;
    std::string host, address;
  };
  auto target = OnLoop<StatusOr<Target>>(
      [this, uuid]() -> StatusOr<Target> {
        auto it = sessions_.find(uuid);
        if (it == sessions_.end()) {
          return absl::NotFoundError("server " + uuid + " is not protected from here");
        }
        if (it->second.switching_over) {
          return absl::FailedPreconditionError("a switchover of " + uuid + " is under way");
        }
        Target t{it->second.session, it->second.backup_host, ""};
        for (const auto& p : cfg_.peer.peers) {
          if (p.host == t.host) t.address = p.address;
        }
        if (t.address.empty()) {
          return absl::FailedPreconditionError("backup host " + t.host + " is not a [peer] peer");
        }
        it->second.switching_over = true;
        return t;
      },
      std::chrono::seconds(2));
  if (!target.ok()) return target.status();
  if (!target->ok()) return target->status();
  const Target t = **target;
  const InstanceLog log(uuid);
  auto done_switching = [this, uuid] {
    loop_.Post([this, uuid] {
      if (auto it = sessions_.find(uuid); it != sessions_.end()) it->second.switching_over = false;
    });
  };
  log.Info("switchover to {} requested", t.host);

  auto handed = t.session->HandOver();  // 1
  if (!handed.ok()) {
    done_switching();
    log.Warn("switchover to {} not started: {}", t.host, handed.status().ToString());
    return handed.status();  // the guest runs here (or never paused)
  }
  // If this copy runs on a replica it once took over here, the backup's re-protection stream
  // towards this host must not be refused as taken over (the backup would then stand down the
  // copy it just resumed). The backup only re-protects once it runs the server.
  const bool on_replica = registry_->TakenOverHere(uuid);
  registry_->Relinquish(uuid, t.host, /*released=*/true);
  if (witness_) {  // 2
    if (Status released = witness_->Release(uuid, cfg_.defaults.host); !released.ok()) {
      return RecoverFailedSwitchover(uuid, t.session, t.host,
                                     absl::AbortedError("the witness did not release the claim: " +
                                                        std::string(released.message())),
                                     /*definite=*/true, on_replica);
    }
  }
  auto taken = peer_link_->TakeOver(t.address, uuid, handed->epoch, kTakeOverTimeout);  // 3
  if (!taken.ok()) {
    const bool definite =
        absl::IsFailedPrecondition(taken.status()) || absl::IsInternal(taken.status());
    return RecoverFailedSwitchover(uuid, t.session, t.host, taken.status(), definite, on_replica);
  }
  const auto paused = clock_.Now() - handed->paused_at;
  // 4. The server runs on the backup: this copy must never run again.
  t.session->Abandon("switched over to " + t.host + " at epoch " + std::to_string(handed->epoch));
  // The paused copy holds exactly the final epoch: the best basis for the new primary's
  // re-protection towards here (if it ran on a replica taken over here, those files are it).
  KeepAsBasis(uuid, t.host);
  if (Status destroyed = launcher_->Destroy(uuid); !destroyed.ok()) {
    log.Error("switched over, but the paused copy here cannot be destroyed: {}",
              destroyed.ToString());
  }
  (void)OnLoop<bool>(
      [this, uuid, host = t.host] {
        sessions_.erase(uuid);
        ForgetProtection(uuid, "switched over to " + host);
        return true;
      },
      std::chrono::seconds(2));
  log.Info("switched over to {} at epoch {}: guest paused {} ms (restore there {} ms)", t.host,
           handed->epoch, Ms(paused), taken->restore.count());
  return core::SwitchoverResult{t.host, handed->epoch,
                                std::chrono::duration_cast<std::chrono::milliseconds>(paused)};
}

StatusOr<core::SwitchoverResult> Agent::RecoverFailedSwitchover(
    const std::string& uuid, const std::shared_ptr<engine::PrimarySession>& session,
    const std::string& backup_host, const Status& why, bool definite, bool on_replica) {
  const InstanceLog log(uuid);
  bool may_resume = definite;
  std::string whose;
  if (witness_) {
    // Only the owner may run the guest: winning the claim back proves the backup did not
    // take over (and, with the generation bumped, never can from that replica).
    // A backup whose restore failed gives its claim back before it answers; when it said so,
    // retry for a few seconds all the same (a slow witness, an older backup).
    const auto until = clock_.Now() + std::chrono::seconds(definite ? 5 : 0);
    auto claimed = witness_->Claim(uuid, cfg_.defaults.host);
    while (!claimed.ok() && absl::IsFailedPrecondition(claimed.status()) &&
           clock_.Now() < until && !stopping_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      claimed = witness_->Claim(uuid, cfg_.defaults.host);
    }
    may_resume = claimed.ok();
    if (!claimed.ok()) whose = "; witness: " + std::string(claimed.status().message());
  }
  if (!may_resume) {
    const std::string msg = "switchover to " + backup_host + " has no known outcome (" +
                            std::string(why.message()) + whose +
                            "): the guest stays paused here so that two copies never run; "
                            "check the server on " + backup_host;
    log.Error("{}", msg);  // the session's status says "handed over ...: guest paused here"
    return absl::UnknownError(msg);
  }
  // The paused copy is the only one: run it again and protect it afresh. If it runs on a
  // replica this host took over, those files are the running copy's again: every stream for
  // the server is refused as taken over, as before the switchover relinquished them.
  if (on_replica) {
    if (auto refenced = registry_->Fence(uuid, /*handed_over=*/true); !refenced.ok()) {
      log.Error("the replica this copy runs on is not fenced again: {}",
                refenced.status().ToString());
    }
  }
  session->Stop();
  Status resumed =
      engine::QmpCall(*hypervisor_, uuid, {{"execute", "cont"}}).status();
  auto restarted = OnLoop<Status>(
      [this, uuid, backup_host, resumed] {
        sessions_.erase(uuid);
        if (!resumed.ok()) return resumed;
        return StartSession(uuid, backup_host);
      },
      std::chrono::seconds(10));
  if (!resumed.ok()) {
    log.Error("switchover failed and the guest cannot be resumed: {}", resumed.ToString());
    return absl::InternalError("switchover to " + backup_host + " failed (" +
                               std::string(why.message()) +
                               ") and the guest cannot be resumed here: " + resumed.ToString());
  }
  const Status protect = restarted.ok() ? *restarted : restarted.status();
  log.Warn("switchover to {} failed: {}; guest resumed here{}", backup_host,
           std::string(why.message()),
           protect.ok() ? ", re-seeding" : ", unprotected: " + protect.ToString());
  return absl::AbortedError("switchover to " + backup_host + " failed (" +
                            std::string(why.message()) + "); the guest runs here again" +
                            (protect.ok() ? " and is re-seeded" : ""));
}

StatusOr<core::TakeOverResult> Agent::AcceptTakeOver(const std::string& primary_host,
                                                     const std::string& uuid, uint64_t epoch) {
  NOVA_DT_RETURN_IF_ERROR(ValidateInstanceUuid(uuid));
  // Only the replica's owner hands its server over (replica_owner.h), as recorded on disk.
  if (Status owner = registry_->CheckOwner(primary_host, uuid); !owner.ok()) {
    InstanceLog(uuid).Warn("take-over request from {} refused: {}", primary_host,
                           owner.ToString());
    return absl::IsNotFound(owner)
               ? absl::FailedPreconditionError("no replica of " + uuid + " here")
               : owner;
  }
  auto waiter = std::make_shared<std::promise<StatusOr<engine::RestoreResult>>>();
  auto outcome = waiter->get_future();
  // The primary saw epoch `epoch` acked; this loop may learn of the commit a moment later.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (;;) {
    auto started = OnLoop<Status>(
        [this, uuid, primary_host, epoch, waiter]() -> Status {
          auto it = backups_.find(uuid);
          if (it == backups_.end()) {
            return absl::FailedPreconditionError("no replica of " + uuid + " here");
          }
          Backup& b = it->second;
          if (b.open.primary_host != primary_host) {
            return absl::FailedPreconditionError("the replica of " + uuid + " comes from " +
                                                 b.open.primary_host + ", not " + primary_host);
          }
          // (Released: the switchover's final stream ended cleanly just before this request.)
          if (b.phase != Backup::Phase::kReplicating && b.phase != Backup::Phase::kReleased) {
            return absl::FailedPreconditionError("the replica of " + uuid +
                                                 " is not replicating (" + b.view.state + ")");
          }
          if (b.view.last_committed_epoch < epoch) {
            return absl::UnavailableError("replica at epoch " +
                                          std::to_string(b.view.last_committed_epoch));
          }
          if (b.view.last_committed_epoch != epoch) {
            return absl::FailedPreconditionError(
                "the replica committed epoch " + std::to_string(b.view.last_committed_epoch) +
                ", not the final epoch " + std::to_string(epoch));
          }
          b.waiters.push_back(waiter);
          StartFailover(uuid, "planned switchover: " + primary_host + " handed over epoch " +
                                  std::to_string(epoch));
          return absl::OkStatus();
        },
        std::chrono::seconds(2));
    if (!started.ok()) return started.status();
    if (started->ok()) break;
    if (!absl::IsUnavailable(*started)) return *started;
    if (std::chrono::steady_clock::now() > give_up) {
      return absl::FailedPreconditionError("the final epoch " + std::to_string(epoch) +
                                           " is not committed here: " +
                                           std::string(started->message()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // Bounded by the restore and, with a witness, the (released) claim's take-over; a stopping
  // agent's loop may never deliver the outcome, and its server waits for this call to return.
  while (outcome.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready) {
    if (stopping_) return absl::UnavailableError("agent stopping during the take-over");
  }
  StatusOr<engine::RestoreResult> restored = outcome.get();
  if (!restored.ok()) {
    return absl::InternalError("restore failed: " + std::string(restored.status().message()));
  }
  return core::TakeOverResult{restored->epoch,
                              std::chrono::duration_cast<std::chrono::milliseconds>(
                                  restored->timings.to_running)};
}

void Agent::TryReprotect() {
  const auto now = clock_.Now();
  std::map<std::string, bool> reachable;
  for (const auto& p : peers_.Snapshot()) reachable[p.host] = p.reachable;
  for (auto it = reprotect_.begin(); it != reprotect_.end();) {
    const std::string& uuid = it->first;
    Reprotect& r = it->second;
    if (sessions_.count(uuid)) {  // protected meanwhile (e.g. by nova-dt-controller)
      it = reprotect_.erase(it);
      continue;
    }
    if (now < r.next_try) {
      ++it;
      continue;
    }
    std::string target;
    for (const auto& host : cfg_.replication.reprotect_hosts) {
      if (reachable[host] && !unusable_hosts_.count(host)) {
        target = host;
        break;
      }
    }
    if (target.empty()) {
      r.next_try = now + std::chrono::seconds(1);
      if (auto b = backups_.find(uuid); b != backups_.end()) {
        b->second.view.reason = "waiting for a re-protection host ([replication] reprotect_hosts)";
      }
      ++it;
      continue;
    }
    const InstanceLog log(uuid);
    Status st = StartSession(uuid, target);
    if (!st.ok()) {
      r.next_try = now + std::chrono::seconds(5);
      if (auto b = backups_.find(uuid); b != backups_.end()) {
        b->second.view.reason = "re-protection towards " + target + " failed (retried every 5 s): " +
                                std::string(st.message());
      }
      if (r.last_error != st.message()) {
        log.Warn("re-protection towards {} failed (retried): {}", target, st.ToString());
        r.last_error = std::string(st.message());
      }
      ++it;
      continue;
    }
    log.Info("re-protecting towards {} (was primary on {})", target, r.old_primary);
    // The server is a primary here now: its session reports it, the replica's entry goes.
    backups_.erase(uuid);
    it = reprotect_.erase(it);
  }
}

}  // namespace novadt::daemon
