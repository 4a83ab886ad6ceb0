#include "agent/daemon/agent.h"

#include <fstream>
#include <future>

#include "agent/bus/notifier.h"
#include "agent/bus/rpc_server.h"
#include "agent/common/identifiers.h"
#include "agent/common/logging.h"
#include "agent/common/version.h"
#include "agent/libvirt/domain_xml.h"
#include "agent/libvirt/libvirt_hypervisor.h"
#include "agent/libvirt/libvirt_launcher.h"
#include "agent/libvirt/restore_xml.h"
#include "agent/replica/store_sink.h"
#include "agent/rpc/agent_server.h"
#include "agent/rpc/grpc_peer_link.h"
#include "agent/rpc/grpc_replication.h"
#include "agent/engine/disk_capture.h"
#include "agent/engine/egress_gate.h"
#include "agent/engine/qmp.h"
#include "agent/engine/ram_stager.h"

namespace novadt::daemon {
namespace {

// QEMU's pid from libvirt's pid file (for soft-dirty tracking); 0 when unknown.
pid_t QemuPid(const std::string& domain_name) {
  std::ifstream in("/run/libvirt/qemu/" + domain_name + ".pid");
  long pid = 0;
  return (in >> pid) ? static_cast<pid_t>(pid) : 0;
}

}  // namespace

Agent::Agent(config::AgentConfig cfg, const Clock& clock, FileOwner qemu)
    : cfg_(std::move(cfg)),
      clock_(clock),
      qemu_(std::move(qemu)),
      started_(clock.Now()),
      loop_(clock),
      peers_(clock, cfg_.peer.peers, 3 * std::chrono::milliseconds(cfg_.peer.hello_interval_ms)),
      link_meter_(cfg_.defaults.host,
                  static_cast<uint64_t>(cfg_.peer.link_capacity_mbit) * 1'000'000 / 8) {}

Agent::~Agent() = default;

Status Agent::Run() {
  rpc::ServiceHandlers handlers;
  handlers.host = cfg_.defaults.host;
  handlers.version = kVersion;
  handlers.status = [this] { return Snapshot(std::chrono::seconds(2)); };
  // (A configured peer is reached at its configured address, whatever it says its own is.)
  handlers.hello_received = [this](const std::string& host, const std::string&,
                                   const std::string& version) {
    loop_.Post([this, host, version] { peers_.OnHelloReceived(host, version); });
  };
  replica::ReplicaEvents replica_events;
  replica_events.opened = [this](const core::StreamOpen& open) {
    loop_.Post([this, open] { OnReplicaOpened(open); });
  };
  replica_events.heard = [this](const std::string& uuid) {
    loop_.Post([this, uuid] {
      auto it = backups_.find(uuid);
      if (it == backups_.end()) return;
      it->second.last_heard = clock_.Now();
      it->second.detector.Heartbeat(it->second.last_heard);
    });
  };
  replica_events.committed = [this](const std::string& uuid, uint64_t epoch) {
    loop_.Post([this, uuid, epoch] { OnReplicaCommitted(uuid, epoch); });
  };
  replica_events.closed = [this](const std::string& uuid, const Status& why) {
    loop_.Post([this, uuid, why] { OnReplicaClosed(uuid, why); });
  };
  // QEMU must reach replicas (failover) and capture sockets (protection): warned, not fatal,
  // for an agent that may serve neither role.
  if (Status st = replica::PrepareReplicaRoot(cfg_.replication.replica_path, qemu_); !st.ok()) {
    spdlog::warn("{}: failover to this host will fail", std::string(st.message()));
  }
  if (Status st = engine::PrepareNbdSocketRoot(cfg_.defaults.state_path + "/nbd", qemu_);
      !st.ok()) {
    spdlog::warn("{}: protecting servers of this host will fail", std::string(st.message()));
  }
  replica::ReplicaOptions replica_options;
  replica_options.qemu = qemu_;
  registry_ = std::make_unique<replica::ReplicaRegistry>(
      replica::RegistryOptions{cfg_.replication.replica_path, cfg_.defaults.host,
                               cfg_.replication.max_streams_per_peer, replica_options},
      std::move(replica_events));
  handlers.open_replica = [this, factory = registry_->Factory()](const core::StreamOpen& open)
      -> StatusOr<std::unique_ptr<core::ReplicaSink>> {
    NOVA_DT_RETURN_IF_ERROR(CheckReplicaAllowed(open));
    return factory(open);
  };
  handlers.stream_limits = {
      .max_guest_ram_bytes = cfg_.replication.max_guest_ram_bytes,
      .max_disks = static_cast<size_t>(cfg_.replication.max_disks),
      .max_disk_bytes = cfg_.replication.max_disk_bytes,
      .max_device_state_bytes = cfg_.replication.max_device_state_bytes,
      .max_epoch_bytes = cfg_.replication.max_epoch_bytes,
      .max_boot_file_bytes = cfg_.replication.max_boot_file_bytes};
  handlers.replica_basis = [this](const std::string& primary, const std::string& uuid) {
    return registry_->Basis(primary, uuid);
  };
  handlers.release_replica = [this](const std::string& primary, const std::string& uuid) {
    NOVA_DT_RETURN_IF_ERROR(registry_->Release(primary, uuid));
    // Answered once the failure detector knows too (the registry refuses a failover's fence of
    // a released replica in any case).
    auto marked = OnLoop<bool>([this, uuid] { return MarkReleased(uuid); },
                               std::chrono::seconds(2));
    return marked.ok() ? absl::OkStatus() : marked.status();
  };
  handlers.protect = [this](const std::string& uuid, const std::string& backup) {
    return Protect(uuid, backup);
  };
  handlers.unprotect = [this](const std::string& uuid) { return Unprotect(uuid); };
  handlers.switchover = [this](const std::string& uuid) { return Switchover(uuid); };
  handlers.take_over = [this](const std::string& primary, const std::string& uuid,
                              uint64_t epoch) { return AcceptTakeOver(primary, uuid, epoch); };
  handlers.replication_heartbeat =
      std::chrono::milliseconds(cfg_.replication.heartbeat_interval_ms);
  auto credentials = rpc::PeerCredentials::Load(cfg_.peer);
  if (!credentials.ok()) return credentials.status();
  handlers.peer_credentials = *credentials;
  auto server = rpc::StartAgentServer(cfg_.defaults.control_address, cfg_.peer.listen_address,
                                      std::move(handlers));
  if (!server.ok()) return server.status();
  server_ = *std::move(server);

  replication_link_ =
      rpc::MakeGrpcReplicationLink(*credentials, rpc::PeerHostsByAddress(cfg_.peer));
  peer_link_ = rpc::MakeGrpcPeerLink({cfg_.defaults.host, kVersion, server_->peer_address()},
                                     *credentials, rpc::PeerHostsByAddress(cfg_.peer));

  core::HypervisorObserver observer;
  observer.on_domain_event = [this](const core::DomainEvent& ev) {
    loop_.Post([this, ev] { OnDomainEvent(ev); });
  };
  observer.on_connection_change = [this](bool up) {
    loop_.Post([up] {
      if (up) {
        spdlog::info("hypervisor connection is up");
      } else {
        spdlog::warn("hypervisor connection lost; reconnecting");
      }
    });
  };
  hypervisor_ = libvirt::MakeLibvirtHypervisor(cfg_.libvirt, std::move(observer));
  launcher_ = libvirt::MakeLibvirtLauncher(cfg_.libvirt);
  engine::FailoverRestorerOptions restore_options;
  restore_options.arm_dir = cfg_.replication.replica_path;
  restore_options.qemu = qemu_;
  restore_options.instances_path = cfg_.libvirt.instances_path;
  restorer_ = std::make_unique<engine::FailoverRestorer>(*launcher_, *hypervisor_, clock_,
                                                         restore_options);
  last_detector_tick_ = clock_.Now();
  loop_.RunEvery(std::chrono::milliseconds(50), [this] { CheckPrimaries(); });

  if (!cfg_.peer.peers.empty()) {
    loop_.Post([this] { GreetPeers(); });
    loop_.RunEvery(std::chrono::milliseconds(cfg_.peer.hello_interval_ms),
                   [this] { GreetPeers(); });
  }

  loop_.RunEvery(std::chrono::milliseconds(100), [this] { ReportPairStates(); });
  if (!cfg_.replication.reprotect_hosts.empty()) {
    loop_.RunEvery(std::chrono::milliseconds(500), [this] { TryReprotect(); });
  }
  NOVA_DT_RETURN_IF_ERROR(StartWitness());
  StartBus();
  LoadProtections();
  if (!protections_.empty()) {
    recovery_thread_ = std::thread([this, listed = protections_] { RecoverProtections(listed); });
  }

  for (const std::string& w : SecurityWarnings()) spdlog::warn("INSECURE SETTING: {}", w);
  spdlog::info("nova-dt-agent {} running as host '{}'", kVersion, cfg_.defaults.host);
  loop_.Run();

  spdlog::info("shutting down");
  StopBus();
  // Protection ends with the agent: held output is released, captures stop (the backup keeps
  // its replica). The session threads are joined here, before the parts they use go away.
  stopping_ = true;
  if (recovery_thread_.joinable()) recovery_thread_.join();
  // The protection table stays as it is: the next start protects the same servers again.
  for (auto& [uuid, protection] : sessions_) protection.session->Stop();
  sessions_.clear();
  for (auto& t : failovers_) t.join();  // a restore in progress finishes (bounded by its steps)
  server_->Shutdown(std::chrono::seconds(2));
  witness_.reset();
  hypervisor_.reset();
  peer_link_.reset();
  spdlog::info("stopped");
  return absl::OkStatus();
}

void Agent::Stop() { loop_.Stop(); }

void Agent::GreetPeers() {
  const auto timeout = std::chrono::milliseconds(cfg_.peer.hello_interval_ms);
  for (const auto& peer : peers_.configured()) {
    peer_link_->Hello(peer.address, timeout, [this, peer](StatusOr<core::HelloResult> r) {
      loop_.Post([this, peer, r = std::move(r)] {
        if (r.ok()) {
          peers_.OnHelloAnswered(peer, r->host, r->version, r->rtt);
        } else {
          peers_.OnHelloFailed(peer, std::string(r.status().message()));
        }
      });
    });
  }
}

void Agent::OnDomainEvent(const core::DomainEvent& ev) {
  InstanceLog(ev.uuid).Info("domain '{}' {} (detail {})", ev.name,
                            core::DomainEventKindName(ev.kind), ev.detail);
}

void Agent::OnReplicaOpened(const core::StreamOpen& open) {
  Backup& b = backups_[open.instance_uuid];
  if (b.phase == Backup::Phase::kFailingOver || b.phase == Backup::Phase::kFailoverFailed) {
    // The primary streams again (it never lost its claim): a failover still waiting for the
    // witness is called off. (One past the witness has fenced the replica: no new stream.)
    if (b.cancel_failover) *b.cancel_failover = true;
    b.phase = Backup::Phase::kReplicating;
    InstanceLog(open.instance_uuid).Info("primary {} streams again: failover called off",
                                         open.primary_host);
  }
  b.open = open;
  b.last_heard = clock_.Now();
  core::FailureDetectorOptions fd;
  fd.heartbeat_interval = std::chrono::milliseconds(cfg_.replication.heartbeat_interval_ms);
  fd.min_silence = std::chrono::milliseconds(cfg_.replication.heartbeat_timeout_ms);
  fd.max_silence = 10 * fd.min_silence;
  fd.phi_threshold = static_cast<double>(cfg_.replication.failure_phi_threshold);
  b.detector = core::AccrualFailureDetector(fd);
  b.detector.Heartbeat(b.last_heard);
  b.suspected = false;
  b.long_silence = false;
  b.phase = Backup::Phase::kReplicating;
  b.view = {open.instance_uuid, "backup", "seeding",
            "replication stream open, replica not yet seeded", open.primary_host, 0};
}

void Agent::OnReplicaCommitted(const std::string& uuid, uint64_t epoch) {
  auto it = backups_.find(uuid);
  if (it == backups_.end() || it->second.phase != Backup::Phase::kReplicating) return;
  it->second.view.last_committed_epoch = epoch;
  it->second.view.state = "protected";
  it->second.view.reason.clear();
}

void Agent::OnReplicaClosed(const std::string& uuid, const Status& why) {
  auto it = backups_.find(uuid);
  if (it == backups_.end() || it->second.phase != Backup::Phase::kReplicating) return;
  if (why.ok()) {
    MarkReleased(uuid);
    return;
  }
  it->second.view.state = "degraded";
  it->second.view.reason = "replication stream ended: " + std::string(why.message());
}

bool Agent::MarkReleased(const std::string& uuid) {
  auto it = backups_.find(uuid);
  if (it == backups_.end() || it->second.phase != Backup::Phase::kReplicating) return false;
  // Its primary ended protection on purpose (unprotect, switchover, its agent stopping): from
  // now on it may release output this replica never got, so the replica must never be resumed
  // by a failover (ReplicaRegistry records it as released: a basis only).
  Backup& b = it->second;
  b.phase = Backup::Phase::kReleased;
  b.view.state = "unprotected";
  b.view.reason = "primary " + b.open.primary_host + " ended protection at epoch " +
                  std::to_string(b.view.last_committed_epoch) +
                  ": replica kept only as the basis of a re-protection, never failed over";
  InstanceLog(uuid).Info("{}", b.view.reason);
  return true;
}

std::vector<std::string> Agent::SecurityWarnings() const {
  std::vector<std::string> out;
  if (cfg_.peer.allow_insecure && cfg_.peer.tls_cert_file.empty()) {
    out.push_back("[peer] allow_insecure: the peer API on " + cfg_.peer.listen_address +
                  " is plaintext and unauthenticated — anyone who can reach it can stream a "
                  "domain for this host to run or take servers over");
  }
  if (!cfg_.witness.enabled() && cfg_.witness.allow_none) {
    out.push_back("[witness] allow_none: automatic failover without a witness — a primary that "
                  "degraded and released output its backup never got, then died, is resumed "
                  "from an older replica (clients see that output again)");
  }
  return out;
}

Status Agent::CheckReplicaAllowed(const core::StreamOpen& open) {
  NOVA_DT_RETURN_IF_ERROR(ValidateInstanceUuid(open.instance_uuid));
  // A server this host runs cannot also be replicated here: a later restore would replace the
  // running copy's definition. While libvirt cannot be asked, replication goes on (a failover can
  // follow once it is back); a copy running on a replica this host took over is refused by the
  // registry in any case.
  auto dom = hypervisor_->LookupDomain(open.instance_uuid);
  if (dom.ok() && dom->state != core::DomainState::kShutoff &&
      dom->state != core::DomainState::kNoState) {
    return absl::FailedPreconditionError("server " + open.instance_uuid + " runs on this host (" +
                                         std::string(core::DomainStateName(dom->state)) +
                                         "): a replica of it cannot be kept here");
  }
  NOVA_DT_RETURN_IF_ERROR(
      libvirt::CheckRestorableDomain(open.domain_xml, open.instance_uuid, cfg_.libvirt));
  return CheckBootFiles(open);
}

Status Agent::CheckBootFiles(const core::StreamOpen& open) const {
  auto use = libvirt::InstanceDirFiles(open.domain_xml, open.instance_uuid, cfg_.libvirt);
  if (!use.ok()) return use.status();
  std::set<std::string> needed, carried;
  if (use->kernel) needed.insert(std::string(core::kBootFileKernel));
  if (use->ramdisk) needed.insert(std::string(core::kBootFileRamdisk));
  for (const auto& f : open.boot_files) carried.insert(f.name);
  const std::string dir = cfg_.libvirt.instances_path + "/" + open.instance_uuid + "/";
  if (open.protocol < core::kBootFilesProtocolVersion) {
    // Accepted as before (an older primary): it replicates, but cannot be restored here.
    if (!needed.empty()) {
      InstanceLog(open.instance_uuid)
          .Warn("the replica from {} cannot be failed over to this host: its domain boots from "
                "{}{} and that agent (replication protocol {}) sends no boot files; upgrade it",
                open.primary_host, dir, *needed.begin(), open.protocol);
    }
    return absl::OkStatus();
  }
  for (const std::string& name : needed) {
    if (!carried.count(name)) {
      return absl::InvalidArgumentError("the domain boots from " + dir + name +
                                        " but the stream carries no copy of it");
    }
  }
  for (const std::string& name : carried) {
    if (!needed.count(name)) {
      return absl::InvalidArgumentError("the stream carries boot file '" + name +
                                        "' but the domain does not boot from " + dir + name);
    }
  }
  return absl::OkStatus();
}

// Stage VII, failure detection. The primary is lost when the accrual detector suspects its
// replication stream (silent for at least [replication] heartbeat_timeout_ms and improbably long
// for the arrival pattern seen so far, phi ≥ failure_phi_threshold; or silent for ten times the
// timeout) AND its agent no longer answers hellos (a primary that merely degraded, or re-seeds,
// still answers). With a witness, the failover also waits until the primary's claim lapsed
// (AwaitTakeOver): a primary cut off from the pair but not from the witness is never replaced.
void Agent::CheckPrimaries() {
  const auto now = clock_.Now();
  const auto timeout = std::chrono::milliseconds(cfg_.replication.heartbeat_timeout_ms);
  // If this agent itself did not run for a while (SIGSTOP, overload), silence means nothing:
  // wait until fresh evidence could have arrived.
  if (now - last_detector_tick_ > std::chrono::milliseconds(200)) {
    detector_grace_until_ = now + timeout + 3 * std::chrono::milliseconds(cfg_.peer.hello_interval_ms);
    spdlog::warn("agent did not run for {} ms: failover decisions held back",
                 std::chrono::duration_cast<std::chrono::milliseconds>(now - last_detector_tick_).count());
  }
  last_detector_tick_ = now;
  if (now < detector_grace_until_) return;
  std::map<std::string, bool> reachable;
  for (const auto& p : peers_.Snapshot()) reachable[p.host] = p.reachable;
  std::vector<std::pair<std::string, std::string>> lost;
  for (auto& [uuid, b] : backups_) {
    if (b.phase != Backup::Phase::kReplicating || b.view.last_committed_epoch == 0) continue;
    const bool suspect = b.detector.Suspect(now);
    const bool long_silence = b.detector.Silence(now) > timeout;
    if (suspect && !b.suspected) {
      ++b.view.suspicions;
      InstanceLog(uuid).Warn("primary {} suspected: silent {} ms, phi {:.1f}", b.open.primary_host,
                             std::chrono::duration_cast<std::chrono::milliseconds>(
                                 b.detector.Silence(now)).count(),
                             b.detector.Phi(now));
    }
    if (long_silence && !b.long_silence) ++b.view.long_silences;
    b.suspected = suspect;
    b.long_silence = long_silence;
    if (!suspect || reachable[b.open.primary_host]) continue;
    const auto silent = now - b.last_heard;
    lost.emplace_back(
        uuid, fmt::format("primary {} silent for {} ms (phi {:.1f}; arrivals every {:.0f} ± {:.0f} "
                          "ms) and not answering hellos",
                          b.open.primary_host,
                          std::chrono::duration_cast<std::chrono::milliseconds>(silent).count(),
                          b.detector.Phi(now), b.detector.mean_ms(), b.detector.stddev_ms()));
  }
  const bool automatic = witness_ || cfg_.witness.allow_none;
  for (const auto& [uuid, why] : lost) {
    if (automatic) {
      StartFailover(uuid, why);
      continue;
    }
    Backup& b = backups_.at(uuid);
    const std::string reason =
        "primary lost (" + why + "); automatic failover is off without a witness ([witness] "
        "etcd_endpoints, or allow_none): restore it with an explicit failover request";
    if (b.view.reason != reason) InstanceLog(uuid).Error("{}", reason);
    b.view.state = "degraded";
    b.view.reason = reason;
  }
}

void Agent::StartFailover(const std::string& uuid, const std::string& why) {
  Backup& b = backups_[uuid];
  b.phase = Backup::Phase::kFailingOver;
  b.view.state = "failing-over";
  b.view.reason = why;
  InstanceLog(uuid).Warn("failing over: {}", why);
  Emit({.event_type = "dt.pair.failover.start",
        .priority = "ERROR",
        .instance_uuid = uuid,
        .role = "backup",
        .state = "failing-over",
        .reason = why,
        .peer_host = b.open.primary_host,
        .committed_epoch = b.view.last_committed_epoch});
  const auto detected = clock_.Now();
  const std::string domain_xml = b.open.domain_xml;
  const std::string primary = b.open.primary_host;
  const int64_t generation = b.open.witness_generation;
  const bool handed_over = !b.waiters.empty();  // a planned switchover (AcceptTakeOver)
  b.cancel_failover = std::make_shared<std::atomic<bool>>(false);
  // The restore blocks for a few hundred ms (and the witness for as long as the primary's claim
  // lives): off the loop, result posted back.
  failovers_.emplace_back([this, uuid, domain_xml, detected, primary, generation, handed_over,
                           cancel = b.cancel_failover] {
    StatusOr<engine::RestoreResult> result = [&]() -> StatusOr<engine::RestoreResult> {
      // What the definition needs of Nova's instance directory here (checked when the stream
      // opened): made by the restore, with the replica's boot files.
      auto use = libvirt::InstanceDirFiles(domain_xml, uuid, cfg_.libvirt);
      if (!use.ok()) return use.status();
      if (witness_) NOVA_DT_RETURN_IF_ERROR(AwaitTakeOver(uuid, primary, generation, *cancel));
      auto replica = registry_->Fence(uuid, handed_over);
      if (!replica.ok()) return replica.status();
      engine::RestoreRequest req;
      req.instance_dir = use->any;
      for (const auto& [needed, name] :
           {std::pair{use->kernel, core::kBootFileKernel},
            std::pair{use->ramdisk, core::kBootFileRamdisk}}) {
        if (!needed) continue;
        auto copy = replica->boot_files.find(std::string(name));
        req.boot_files[std::string(name)] =
            copy == replica->boot_files.end() ? "" : copy->second;
      }
      req.instance_uuid = uuid;
      req.domain_xml = domain_xml;
      req.committed_epoch = replica->committed_epoch;
      req.ram_path = replica->ram_path;
      req.device_state_path = replica->device_state_path;
      req.disk_paths = replica->disk_paths;
      return restorer_->Restore(req);
    }();
    loop_.Post([this, uuid, result, detected] { OnFailoverDone(uuid, result, detected); });
  });
}

void Agent::OnFailoverDone(const std::string& uuid, const StatusOr<engine::RestoreResult>& result,
                           Clock::TimePoint detected) {
  Backup& b = backups_[uuid];
  const InstanceLog log(uuid);
  const bool planned = !b.waiters.empty();
  if (b.phase == Backup::Phase::kFailingOver && !result.ok()) {
    // Before the caller of a planned take-over hears of the failure (it then claims back):
    // nothing runs here (a failed restore leaves no domain), so a later stream from the primary
    // is not refused as taken over — that would make a primary that still runs the server (it
    // resumed after a failed switchover, or was only partitioned) destroy the last copy.
    registry_->Relinquish(uuid, b.open.primary_host, /*released=*/false);
    if (planned && witness_) {
      // The old primary keeps its paused copy: give the claim back so it may resume it.
      if (Status released = witness_->Release(uuid, cfg_.defaults.host);
          !released.ok() && !absl::IsFailedPrecondition(released)) {
        log.Error("cannot give the witness claim back to {}: {}", b.open.primary_host,
                  released.ToString());
      }
    }
  }
  for (auto& waiter : b.waiters) {
    waiter->set_value(b.phase == Backup::Phase::kFailingOver
                          ? result
                          : StatusOr<engine::RestoreResult>(
                                absl::AbortedError("failover called off: the primary streams again")));
  }
  b.waiters.clear();
  if (b.phase != Backup::Phase::kFailingOver) {  // called off: the primary streams again
    log.Info("failover ended after it was called off: {}",
             result.ok() ? std::string("restored") : result.status().ToString());
    return;
  }
  if (!result.ok()) {
    b.phase = Backup::Phase::kFailoverFailed;
    b.view.state = "degraded";
    b.view.reason = "failover failed: " + std::string(result.status().message());
    log.Error("{}", b.view.reason);
    Emit({.event_type = "dt.pair.failover.error",
          .priority = "ERROR",
          .instance_uuid = uuid,
          .role = "backup",
          .state = "degraded",
          .reason = b.view.reason,
          .peer_host = b.open.primary_host,
          .committed_epoch = b.view.last_committed_epoch});
    return;
  }
  b.phase = Backup::Phase::kFailedOver;
  const auto ms = [](auto d) {
    return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
  };
  b.view.role = "primary";
  b.view.state = "unprotected";
  b.view.reason = "failed over from " + b.open.primary_host + " at epoch " +
                  std::to_string(result->epoch) + ": running " + ms(clock_.Now() - detected) +
                  " ms after detection (restore start to running " +
                  ms(result->timings.to_running) + " ms)" +
                  (result->persistent ? "" : "; NOT persistent: " + result->persist_error.ToString());
  log.Info("{}", b.view.reason);
  if (!cfg_.replication.reprotect_hosts.empty()) {
    reprotect_[uuid] = {b.open.primary_host, clock_.Now(), ""};
    // Persisted: an agent restarted before the re-protection still does it.
    protections_[uuid] = {core::kReprotectPending, 0};
    PersistProtections();
  }
  Emit({.event_type = "dt.pair.failover.end",
        .instance_uuid = uuid,
        .role = "primary",
        .state = "unprotected",
        .reason = b.view.reason,
        .peer_host = b.open.primary_host,
        .committed_epoch = result->epoch,
        .duration_ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(clock_.Now() - detected).count(),
        .new_host = cfg_.defaults.host});
}

core::AgentStatusSnapshot Agent::BuildSnapshot() const {
  core::AgentStatusSnapshot s;
  s.host = cfg_.defaults.host;
  s.version = kVersion;
  s.uptime = std::chrono::duration_cast<std::chrono::milliseconds>(clock_.Now() - started_);
  s.hypervisor_uri = cfg_.libvirt.connection_uri;
  if (hypervisor_) {
    s.hypervisor_connected = hypervisor_->connected();
    s.hypervisor_reconnects = hypervisor_->reconnects();
  }
  s.peer_listen_address = server_ ? server_->peer_address() : cfg_.peer.listen_address;
  s.peers = peers_.Snapshot();
  s.bus = BuildBusView();
  s.security_warnings = SecurityWarnings();
  for (const auto& [uuid, b] : backups_) s.protected_servers.push_back(b.view);
  for (const auto& [uuid, d] : dt_servers_) {
    core::ProtectedServerView v;
    v.instance_uuid = uuid;
    v.role = "primary";
    v.state = "unprotected";
    v.reason = d.reason;
    v.peer_host = d.resume_to;
    s.protected_servers.push_back(std::move(v));
  }
  for (const auto& [uuid, protection] : sessions_) {
    const engine::SessionStatus st = protection.session->status();
    core::ProtectedServerView v;
    v.instance_uuid = uuid;
    v.role = "primary";
    v.peer_host = protection.backup_host;
    v.state = std::string(engine::PairStateName(st.state));
    v.reason = st.fenced ? "guest fenced (paused: this host cannot prove its witness claim); " +
                               st.reason
                         : st.reason;
    if (protection.holds_restart_output) {
      v.reason += std::string(v.reason.empty() ? "" : "; ") +
                  "output held since before the agent restart (agent up " +
                  std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     clock_.Now() - started_)
                                     .count()) +
                  " ms)";
    } else if (!protection.restart_report.empty() &&
               st.state == engine::PairState::kProtected) {
      v.reason += std::string(v.reason.empty() ? "" : "; ") + protection.restart_report;
    }
    v.last_committed_epoch = st.last_committed;
    v.last_checkpoint_epoch = st.last_checkpoint;
    v.dirty_tracking = st.dirty_tracking;
    v.pause_p50 = std::chrono::duration_cast<std::chrono::microseconds>(st.pause_p50);
    v.pause_p99 = std::chrono::duration_cast<std::chrono::microseconds>(st.pause_p99);
    v.reseeds = st.reseeds;
    v.seed_time = std::chrono::duration_cast<std::chrono::milliseconds>(st.seed_time);
    v.seed_bytes = st.seed_bytes;
    v.seed_basis_bytes = st.seed_basis_bytes;
    v.steady_epochs = st.steady_epochs;
    v.steady_pages = st.steady_pages;
    v.steady_bytes = st.steady_bytes;
    s.protected_servers.push_back(std::move(v));
  }
  return s;
}

StatusOr<core::AgentStatusSnapshot> Agent::Snapshot(std::chrono::milliseconds timeout) {
  return OnLoop<core::AgentStatusSnapshot>([this] { return BuildSnapshot(); }, timeout);
}

Status Agent::Protect(const std::string& instance_uuid, const std::string& backup_host) {
  NOVA_DT_RETURN_IF_ERROR(ValidateInstanceUuid(instance_uuid));
  NOVA_DT_RETURN_IF_ERROR(ValidateHostName(backup_host));
  // By value: the task may run after a timed-out caller has returned (protection then starts
  // all the same and shows in Status).
  auto st = OnLoop<Status>(
      [this, instance_uuid, backup_host] { return StartSession(instance_uuid, backup_host); },
      std::chrono::seconds(10));
  return st.ok() ? *st : st.status();
}

Status Agent::Unprotect(const std::string& instance_uuid) {
  NOVA_DT_RETURN_IF_ERROR(ValidateInstanceUuid(instance_uuid));
  // Taken off the loop, stopped here: stopping waits for the session's threads.
  auto session = OnLoop<std::shared_ptr<engine::PrimarySession>>(
      [this, instance_uuid]() -> std::shared_ptr<engine::PrimarySession> {
        auto it = sessions_.find(instance_uuid);
        if (it == sessions_.end()) return nullptr;
        std::shared_ptr<engine::PrimarySession> s = std::move(it->second.session);
        sessions_.erase(it);
        ForgetProtection(instance_uuid, "unprotected");
        return s;
      },
      std::chrono::seconds(2));
  if (!session.ok()) return session.status();
  if (!*session) return absl::NotFoundError("server " + instance_uuid + " is not protected here");
  const engine::SessionStatus last = (*session)->status();
  (*session)->Stop();
  InstanceLog(instance_uuid).Info("unprotected");
  Emit({.event_type = "dt.pair.unprotect.end",
        .instance_uuid = instance_uuid,
        .role = "primary",
        .state = "unprotected",
        .committed_epoch = last.last_committed});
  return absl::OkStatus();
}

namespace {

// How long the replica a copy that went away here left is kept for a re-protection towards
// here to seed over (Agent::KeepAsBasis, planned switchover).
constexpr auto kKeptReplicaGrace = std::chrono::minutes(10);

}  // namespace

void Agent::DiscardKeptReplicaLater(const std::string& uuid, uint64_t mark) {
  loop_.RunAfter(kKeptReplicaGrace, [this, uuid, mark] {
    if (Status freed = registry_->DiscardIfUnused(uuid, mark); !freed.ok()) {
      InstanceLog(uuid).Error("cannot free the replica kept here: {}", freed.ToString());
    }
  });
}

void Agent::KeepAsBasis(const std::string& uuid, const std::string& new_owner) {
  const InstanceLog log(uuid);
  auto& hv = *hypervisor_;
  auto xml = hv.DomainXml(uuid);
  auto disks = hv.ListDisks(uuid);
  if (!xml.ok() || !disks.ok()) {
    log.Warn("nothing of the copy here kept for a re-protection: {}",
             (!xml.ok() ? xml.status() : disks.status()).ToString());
    return;
  }
  auto memory = libvirt::MemoryBytes(*xml);
  auto sources = libvirt::DiskSources(*xml);
  if (!memory.ok() || !sources.ok()) {
    log.Warn("nothing of the copy here kept for a re-protection: {}",
             (!memory.ok() ? memory.status() : sources.status()).ToString());
    return;
  }
  replica::ReplicaGeometry geometry{*memory, {}};
  for (const auto& d : *disks) geometry.disks.push_back({d.target, d.capacity_bytes});
  std::map<std::string, std::string> files;
  auto ram = launcher_->DomainRamFile(uuid);  // only while QEMU runs
  std::string kept = ram.ok() ? "RAM" : "";
  for (const auto& s : *sources) {
    if (s.file.empty() || (s.format != "raw" && !s.format.empty())) {
      log.Info("disk {} is not a raw image file ({}): not kept", s.target,
               s.format.empty() ? "no file" : s.format);
      continue;
    }
    files[s.target] = s.file;
    kept += (kept.empty() ? "" : ", ") + s.target;
  }
  if (kept.empty()) {  // a basis of nothing would only hold a directory for the grace period
    log.Info("kept nothing of the copy here as the basis of a re-protection towards this host");
    return;
  }
  auto mark = registry_->KeepBasis(uuid, geometry, ram.ok() ? *ram : "", files, new_owner);
  if (!mark.ok()) {
    log.Warn("nothing of the copy here kept for a re-protection: {}", mark.status().ToString());
    return;
  }
  log.Info("kept {} of the copy here as the basis of a re-protection towards this host", kept);
  DiscardKeptReplicaLater(uuid, *mark);
}

void Agent::StandDown(const std::string& uuid, const std::string& why,
                      const std::string& new_owner) {
  auto it = sessions_.find(uuid);
  if (it == sessions_.end()) return;
  const InstanceLog log(uuid);
  // Never two running copies: this one stays paused, its held output is never released, and
  // it is destroyed (Nova's evacuation clean-up would do the same when nova-compute restarts
  // here).
  (void)it->second.session->Fence(why);
  it->second.session->Abandon(why);
  KeepAsBasis(uuid, new_owner);
  if (Status d = launcher_->Destroy(uuid); !d.ok()) {
    log.Error("cannot destroy the stale copy: {}", d.ToString());
  }
  log.Error("stale copy fenced and destroyed: {}", why);
  const std::string backup = it->second.backup_host;
  sessions_.erase(it);
  ForgetProtection(uuid, why);
  Emit({.event_type = "dt.pair.unprotect.end",
        .instance_uuid = uuid,
        .role = "primary",
        .state = "unprotected",
        .reason = why,
        .peer_host = backup});
}

Status Agent::StartSession(const std::string& uuid, const std::string& backup_host) {
  const InstanceLog log(uuid);
  if (sessions_.count(uuid)) return absl::AlreadyExistsError("server " + uuid + " is already protected");
  std::string backup_address;
  for (const auto& p : cfg_.peer.peers) {
    if (p.host == backup_host) backup_address = p.address;
  }
  if (backup_address.empty()) {
    return absl::InvalidArgumentError("backup host '" + backup_host +
                                      "' is not one of this agent's [peer] peers");
  }
  auto& hv = *hypervisor_;
  auto info = hv.LookupDomain(uuid);
  if (!info.ok()) return info.status();
  if (info->state != core::DomainState::kRunning) {
    return absl::FailedPreconditionError("domain " + uuid + " is not running");
  }
  // Guest RAM must be shared file-backed memory ([libvirt] file_backed_memory in nova.conf).
  auto qom = [&](const char* property) {
    return engine::QmpCall(hv, uuid, {{"execute", "qom-get"},
        {"arguments", {{"path", "/objects/pc.ram"}, {"property", property}}}});
  };
  auto mem_path = qom("mem-path");
  auto mem_size = qom("size");
  auto shared = qom("share");
  if (!mem_path.ok() || !mem_size.ok() || !shared.ok() || !mem_path->is_string() ||
      !shared->is_boolean() || !shared->get<bool>()) {
    return absl::FailedPreconditionError(
        "guest RAM of " + uuid + " is not shared file-backed memory (nova.conf [libvirt] "
        "file_backed_memory; domain <memoryBacking><source type='file'/><access mode='shared'/>)");
  }
  core::StreamOpen open;
  open.instance_uuid = uuid;
  open.primary_host = cfg_.defaults.host;
  open.ram_size_bytes = mem_size->get<uint64_t>();
  auto xml = hv.DomainXml(uuid);
  if (!xml.ok()) return xml.status();
  open.domain_xml = *xml;
  auto disks = hv.ListDisks(uuid);
  if (!disks.ok()) return disks.status();
  for (const auto& d : *disks) open.disks.push_back({d.target, d.capacity_bytes});
  {
    std::vector<std::string> targets;
    for (const auto& d : *disks) targets.push_back(d.target);
    NOVA_DT_RETURN_IF_ERROR(StopStaleDiskCaptures(uuid, targets));
  }

  engine::SessionParts parts;
  // Boot files of Nova's instance directory (a direct kernel boot from Glance images): sent
  // with every stream, the backup has no copy of them.
  auto instance_files = libvirt::InstanceDirFiles(open.domain_xml, uuid, cfg_.libvirt);
  if (!instance_files.ok()) return instance_files.status();
  parts.instances_path = cfg_.libvirt.instances_path;
  if (instance_files->kernel) parts.boot_files.emplace_back(core::kBootFileKernel);
  if (instance_files->ramdisk) parts.boot_files.emplace_back(core::kBootFileRamdisk);
  parts.hypervisor = &hv;
  parts.link = replication_link_.get();
  parts.backup_address = backup_address;
  parts.open = open;
  dirty::DirtyTrackerOptions dopts;
  dopts.ram_path = mem_path->get<std::string>();
  dopts.ram_size = open.ram_size_bytes;
  dopts.qemu_pid = QemuPid(info->name);
  auto tracker = dirty::MakeDirtyTracker(dopts);
  if (!tracker.ok()) return tracker.status();
  parts.tracker = *std::move(tracker);
  auto stager = engine::RamStager::Open(dopts.ram_path, dopts.ram_size);
  if (!stager.ok()) return stager.status();
  parts.stager = *std::move(stager);
  auto gate = engine::EgressGate::Create(hv, uuid);
  if (!gate.ok()) return gate.status();
  // Output a dead agent left held (agent restart): it stays held until the new stream's first
  // commit, which covers a checkpoint taken after every one of those frames.
  auto adopted = (*gate)->AdoptLeftovers();
  if (!adopted.ok()) return adopted.status();
  if (*adopted > 0) {
    log.Warn("adopted {} epoch(s) of output held by a previous agent: released with the new "
             "stream's first commit",
             *adopted);
  }
  parts.gate = *std::move(gate);
  parts.capture = engine::MakeNbdDiskCapture(hv, uuid, open.disks,
                                             cfg_.defaults.state_path + "/nbd/" + uuid, qemu_);
  parts.witness = witness_.get();
  engine::SessionOptions options;
  options.epoch = std::chrono::milliseconds(cfg_.replication.epoch_ms);
  options.degrade_after = std::chrono::milliseconds(cfg_.replication.degrade_after_ms);
  options.max_boot_file_bytes = cfg_.replication.max_boot_file_bytes;
  auto session = std::make_shared<engine::PrimarySession>(std::move(parts), options, clock_);
  session->Start();
  log.Info("protection towards {} ({}) started; dirty tracking: {}", backup_host, backup_address,
           session->status().dirty_tracking);
  sessions_[uuid] = {backup_host, std::move(session), "seeding"};
  if (*adopted > 0) sessions_[uuid].holds_restart_output = true;
  dt_servers_.erase(uuid);
  // A server failed over to this host and now protected from it (by the re-protection loop or
  // nova-dt-controller's protect): its session reports it; the failed-over replica's entry goes,
  // or the status would list the server twice.
  if (auto b = backups_.find(uuid);
      b != backups_.end() && b->second.phase == Backup::Phase::kFailedOver) {
    backups_.erase(b);
  }
  auto& entry = protections_[uuid];
  if (entry.backup_host != backup_host) {
    entry.backup_host = backup_host;
    PersistProtections();
  }
  Emit({.event_type = "dt.pair.protect.start",
        .instance_uuid = uuid,
        .role = "primary",
        .state = "seeding",
        .peer_host = backup_host});
  return absl::OkStatus();
}

}  // namespace novadt::daemon
