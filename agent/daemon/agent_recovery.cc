// Agent restart recovery on the primary side (issue 6 item 5; ARCHITECTURE.md invariant 4):
// the protection table survives a crash of the agent, and a restarted agent protects the listed
// servers again (re-seed towards the same backup). What the dead agent left in QEMU:
//   - filter-buffer objects holding the guest's output since the last commit: adopted by the new
//     session's EgressGate and released with the new stream's first commit (never before: the
//     backup holds no checkpoint taken after those frames until then);
//   - the libvirt block copy into the dead agent's NBD socket: aborted (StopStaleDiskCaptures)
//     before the new capture starts (a new job cannot start while it exists);
//   - migration capabilities (x-ignore-shared): set again by the new session;
//   - a guest paused by its QMP `stop` (killed inside a checkpoint or a hand-over): resumed, its
//     output still held by those buffers.
#include <thread>

#include "agent/common/identifiers.h"
#include "agent/common/logging.h"
#include "agent/daemon/agent.h"
#include "agent/engine/qmp.h"

namespace novadt::daemon {

void Agent::LoadProtections() {
  table_ = std::make_unique<core::ProtectionTable>(cfg_.defaults.state_path + "/protection.table");
  auto loaded = table_->Load();
  if (!loaded.ok()) {
    // Never fatal: an agent that cannot read its table still serves (nothing to recover), and
    // says so loudly; the bad file is kept aside for the operator.
    spdlog::error("protection table: {}; starting without recovery (file moved to {}.corrupt)",
                  loaded.status().ToString(), table_->path());
    if (Status q = table_->QuarantineCorrupt(); !q.ok()) {
      spdlog::error("protection table: {}", q.ToString());
    }
    protections_.clear();
    return;
  }
  protections_ = *std::move(loaded);
  if (!protections_.empty()) {
    spdlog::info("protection table {}: {} server(s) were protected from here before this start",
                 table_->path(), protections_.size());
  }
}

void Agent::PersistProtections() {
  if (!table_) return;
  if (Status st = table_->Save(protections_); !st.ok()) {
    spdlog::error("cannot persist the protection table {}: {} (a restart now would not recover "
                  "the latest change)",
                  table_->path(), st.ToString());
  }
}

Status Agent::StopStaleDiskCaptures(const std::string& uuid, const std::vector<std::string>& disks) {
  const InstanceLog log(uuid);
  for (const auto& disk : disks) {
    auto ready = hypervisor_->DiskCaptureReady(uuid, disk);
    if (absl::IsFailedPrecondition(ready.status())) continue;  // no job on this disk
    const auto t0 = std::chrono::steady_clock::now();
    if (Status st = hypervisor_->StopDiskCapture(uuid, disk); !st.ok()) {
      return absl::FailedPreconditionError("cannot stop the stale disk capture of " + disk +
                                           ": " + std::string(st.message()));
    }
    log.Warn("stopped a stale disk capture of {} (a previous agent's, job was {}) in {} ms", disk,
             ready.ok() ? (*ready ? "mirroring" : "copying") : ready.status().ToString(),
             std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::steady_clock::now() - t0)
                 .count());
  }
  return absl::OkStatus();
}

void Agent::ForgetProtection(const std::string& uuid, const std::string& why) {
  if (protections_.erase(uuid) == 0) return;
  InstanceLog(uuid).Info("removed from the protection table: {}", why);
  PersistProtections();
}

void Agent::RecoverProtections(core::ProtectionMap listed) {
  auto sleep = [this](std::chrono::milliseconds d) {
    const auto until = std::chrono::steady_clock::now() + d;
    while (!stopping_ && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  };
  auto forget = [this](const std::string& uuid, const std::string& why) {
    loop_.Post([this, uuid, why] { ForgetProtection(uuid, why); });
  };
  for (const auto& [uuid, entry] : listed) {
    if (stopping_) return;
    // The table is this agent's own file, but a path is never built from an unchecked string.
    if (Status bad = ValidateInstanceUuid(uuid); !bad.ok()) {
      spdlog::error("protection table entry dropped: {}", std::string(bad.message()));
      forget(uuid, "not a canonical instance UUID");
      continue;
    }
    const InstanceLog log(uuid);
    const bool pending = entry.backup_host == core::kReprotectPending;
    if (pending && cfg_.replication.reprotect_hosts.empty()) {
      forget(uuid, "waited for re-protection, but [replication] reprotect_hosts is empty now");
      continue;
    }
    log.Info("recovering protection towards {} after an agent restart",
             pending ? "[replication] reprotect_hosts" : entry.backup_host);
    // The hypervisor connection comes up asynchronously: wait for it (bounded).
    StatusOr<core::DomainInfo> info = absl::UnavailableError("not asked yet");
    for (int i = 0; i < 300 && !stopping_; ++i) {
      info = hypervisor_->LookupDomain(uuid);
      if (!absl::IsUnavailable(info.status())) break;
      sleep(std::chrono::milliseconds(100));
    }
    if (absl::IsNotFound(info.status())) {
      forget(uuid, "the domain is gone from this host");
      continue;
    }
    if (!info.ok()) {
      log.Error("cannot recover protection: {} (kept in the table for the next start)",
                info.status().ToString());
      continue;
    }
    if (info->state != core::DomainState::kRunning && info->state != core::DomainState::kPaused) {
      // Its QEMU died with (or while) this agent was down. If another host runs the server now,
      // the disks left here are the basis of a re-protection towards here.
      if (witness_) {
        auto owner = witness_->Read(uuid);
        if (owner.ok() && owner->owner != cfg_.defaults.host) KeepAsBasis(uuid, owner->owner);
      }
      forget(uuid, "the domain is " + std::string(core::DomainStateName(info->state)));
      continue;
    }
    if (witness_) {
      // Same host: the claim moves to this agent's lease with the same generation. Another
      // host owns it: it was failed over while this agent was down; this copy must never be
      // heard from again (its held output is never released) — destroy it, as on ownership loss.
      bool claimed = false;
      std::string last;
      while (!stopping_ && !claimed) {
        auto c = witness_->Claim(uuid, cfg_.defaults.host);
        if (c.ok()) {
          log.Info("witness: re-claimed after the restart (generation {})", c->generation);
          claimed = true;
          break;
        }
        if (absl::IsUnavailable(c.status()) || absl::IsDeadlineExceeded(c.status())) {
          if (last != c.status().message()) log.Warn("recovery waits for the witness: {}", c.status().ToString());
          last = std::string(c.status().message());
          sleep(std::chrono::milliseconds(500));
          continue;
        }
        const std::string why = "another host owns the server now (" +
                                std::string(c.status().message()) + ")";
        if (absl::IsFailedPrecondition(c.status())) {
          log.Error("destroying the stale copy after the agent restart, its held output never "
                    "released: {}",
                    why);
          if (auto owner = witness_->Read(uuid); owner.ok() && owner->owner != cfg_.defaults.host) {
            KeepAsBasis(uuid, owner->owner);
          }
          if (Status d = launcher_->Destroy(uuid); !d.ok()) {
            log.Error("cannot destroy the stale copy: {}", d.ToString());
          }
          forget(uuid, why);
        } else {
          log.Error("cannot recover protection: witness: {}", c.status().ToString());
        }
        break;
      }
      if (!claimed) continue;
    }
    // The previous agent died between an epoch's `stop` and `cont` (or during a switchover's
    // hand-over): nobody else resumes the guest. Resumed here, its output stays held in the
    // filter-buffers the new session adopts, released with that session's first commit — or
    // never, when the backup runs the server now and this copy stands down. A pause with any
    // other reason (Nova's pause, a save) is not the agent's to end.
    if (info->state == core::DomainState::kPaused && info->paused_by_monitor) {
      if (auto cont = engine::QmpCall(*hypervisor_, uuid, {{"execute", "cont"}}); cont.ok()) {
        log.Info("resumed the guest the previous agent had paused (its output stays held)");
      } else {
        log.Error("cannot resume the guest the previous agent had paused: {}",
                  cont.status().ToString());
      }
    }
    loop_.Post([this, uuid, backup = entry.backup_host, pending] {
      if (sessions_.count(uuid)) return;  // protected again meanwhile (RPC)
      const InstanceLog log(uuid);
      if (pending) {  // it failed or switched over to here: TryReprotect picks the host
        reprotect_[uuid] = {"(before the agent restart)", clock_.Now(), ""};
        return;
      }
      if (Status st = StartSession(uuid, backup); !st.ok()) {
        const std::string reason = "protection after the agent restart failed: " +
                                   std::string(st.message());
        log.Error("{}", reason);
        dt_servers_[uuid] = {reason, backup};
        Emit({.event_type = "dt.pair.protect.error",
              .priority = "ERROR",
              .instance_uuid = uuid,
              .role = "primary",
              .state = "unprotected",
              .reason = reason,
              .peer_host = backup});
        return;
      }
      auto it = protections_.find(uuid);
      if (it != protections_.end()) {
        ++it->second.incarnation;
        PersistProtections();
      }
    });
  }
}

}  // namespace novadt::daemon
