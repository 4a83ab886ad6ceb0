// The composition root of nova-dt-agent: builds every module from the configuration, wires the
// adapters' callbacks to the event loop and runs it. Owns everything it builds.
#pragma once

#include <chrono>
#include <functional>
#include <future>
#include <atomic>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "agent/bus/nova_events.h"
#include "agent/bus/notification_consumer.h"
#include "agent/common/clock.h"
#include "agent/common/file_owner.h"
#include "agent/common/status.h"
#include "agent/config/config.h"
#include "agent/core/agent_status.h"
#include "agent/core/event_loop.h"
#include "agent/core/failure_detector.h"
#include "agent/core/hypervisor.h"
#include "agent/core/pair_events.h"
#include "agent/core/peer_link.h"
#include "agent/core/link_stats.h"
#include "agent/core/peer_tracker.h"
#include "agent/core/protection_table.h"
#include "agent/core/replication_link.h"
#include "agent/engine/failover_restorer.h"
#include "agent/engine/primary_session.h"
#include "agent/replica/store_sink.h"
#include "agent/witness/witness.h"

namespace novadt::rpc {
class AgentServer;
}
namespace novadt::bus {
class Notifier;
class RpcServer;
}

namespace novadt::daemon {

class Agent {
 public:
  // `qemu`: cfg.libvirt.qemu_user / qemu_group, resolved (ResolveFileOwner()).
  Agent(config::AgentConfig cfg, const Clock& clock, FileOwner qemu = {});
  ~Agent();

  // Binds the APIs, connects to libvirt, greets the configured peers, then runs the event loop
  // on the calling thread until Stop(); shuts everything down before returning. Fails (without
  // running) with Unavailable when an API address cannot be bound.
  Status Run();

  // Makes Run() shut down and return. Safe from any thread and from signal-handling threads,
  // any number of times.
  void Stop();

  // The agent's status, assembled on the loop thread. Unavailable when the loop does not answer
  // within `timeout` (stopped or stuck). Safe from any thread but the loop thread.
  StatusOr<core::AgentStatusSnapshot> Snapshot(std::chrono::milliseconds timeout);

  // Control API (see proto/nova_dt/v1/control.proto). Safe from any thread but the loop thread.
  Status Protect(const std::string& instance_uuid, const std::string& backup_host);
  Status Unprotect(const std::string& instance_uuid);
  // Backup side: fail `instance_uuid` over to this host now. FailedPrecondition while its
  // primary still answers (without witness fencing that would run two copies), NotFound when
  // this host keeps no committed replica of it. Safe from any thread but the loop thread.
  Status Failover(const std::string& instance_uuid);
  // Planned switchover / failback (agent_switchover.cc): moves a server protected from here to
  // its backup without losing or repeating output; see control.proto Switchover for the codes.
  // Blocks until it runs there (seconds). Safe from any thread but the loop thread.
  StatusOr<core::SwitchoverResult> Switchover(const std::string& instance_uuid);
  // Backup side of a switchover (peer API TakeOver): restores `instance_uuid`, whose primary
  // `primary_host` paused it for good after epoch `epoch`, and answers once it runs here.
  // FailedPrecondition when it cannot start (no such replica, or not at `epoch`); Internal
  // when the restore failed. Safe from any thread but the loop thread.
  StatusOr<core::TakeOverResult> AcceptTakeOver(const std::string& primary_host,
                                                const std::string& instance_uuid,
                                                uint64_t epoch);

 private:
  // Runs `fn` on the loop thread and returns its result; Unavailable when the loop does not
  // answer within `timeout` (`fn` may still run later: it must capture by value).
  template <typename T>
  StatusOr<T> OnLoop(std::function<T()> fn, std::chrono::milliseconds timeout);
  // Builds and starts the session of one server (loop thread). Output buffers a dead agent left
  // on the guest's NICs are adopted (held until the new stream's first commit). Records the
  // server in the protection table.
  Status StartSession(const std::string& instance_uuid, const std::string& backup_host);

  // Agent restart recovery (issue 6 item 5, ARCHITECTURE.md invariant 4). The protection table
  // (state_path/protection.table) lists the servers protected from here; PersistProtections
  // writes `protections_` crash-safely (loop thread; a failure is logged and retried with the
  // next change). LoadProtections reads it at start: an unreadable file is logged, moved aside
  // and treated as empty — the agent never fails to start over it.
  void LoadProtections();
  void PersistProtections();
  // On the recovery worker, once at start: for every listed server that runs here, makes sure
  // this host still owns it (with a witness: Claim; another host owns it → the copy is destroyed,
  // its held output never released), stops the dead agent's stale disk capture, then protects it
  // again towards the same backup (re-seed) on the loop. Servers gone from the hypervisor are
  // dropped (logged). Cancelled when the agent stops.
  void RecoverProtections(core::ProtectionMap listed);
  // Loop thread, before a new capture of a server no session here protects: aborts the block
  // jobs a previous agent left on `disks` (their NBD target died with it).
  Status StopStaleDiskCaptures(const std::string& uuid, const std::vector<std::string>& disks);
  // Loop thread: drops `uuid` from the table (logged with `why`).
  void ForgetProtection(const std::string& uuid, const std::string& why);
  // Loop thread: another host runs `uuid` now (the witness moved it, or its backup refused the
  // stream because it took the server over): the copy here is paused, its session ends
  // releasing nothing, the domain is destroyed and the server forgotten here.
  // `new_owner`: the host that runs the server now.
  void StandDown(const std::string& uuid, const std::string& why, const std::string& new_owner);
  // Before a copy another host now runs is destroyed or forgotten here: keeps its RAM (if it
  // still runs) and raw disk images as a replica basis, so that a re-protection towards here
  // sends only what differs (ReplicaRegistry::KeepBasis); freed after kKeptReplicaGrace unless
  // a re-protection used it. Best effort (logged). Copies locally on the calling thread.
  // `new_owner`: the host that runs the server now (the only one whose re-protection stream
  // may use the basis).
  void KeepAsBasis(const std::string& uuid, const std::string& new_owner);
  // Frees, after kKeptReplicaGrace, the replica kept for `uuid` at `mark` unless it was used.
  void DiscardKeptReplicaLater(const std::string& uuid, uint64_t mark);
  // Switchover helpers (agent_switchover.cc). After a failed hand-over the guest paused here is
  // resumed only when this host may run it: with a witness it must win the claim back.
  // `definite`: the backup said it did not (or no longer does) run the server. `on_replica`:
  // the copy here runs on a replica this host took over (relinquished for the switchover).
  StatusOr<core::SwitchoverResult> RecoverFailedSwitchover(
      const std::string& uuid, const std::shared_ptr<engine::PrimarySession>& session,
      const std::string& backup_host, const Status& why, bool definite, bool on_replica);
  // Loop thread, every 500 ms: re-protects servers that failed or switched over to this host
  // towards the first [replication] reprotect_hosts entry that answers hellos.
  void TryReprotect();
  void GreetPeers();
  void OnDomainEvent(const core::DomainEvent& ev);
  core::AgentStatusSnapshot BuildSnapshot() const;
  // One sentence per setting that gives up a protection on purpose (logged at start, in status).
  std::vector<std::string> SecurityWarnings() const;
  // Backup side, on the stream's gRPC thread, before the registry sees a new stream: the
  // server must not run here, and its domain must be one this host would restore
  // (libvirt::CheckRestorableDomain). The refusal goes back to the primary.
  Status CheckReplicaAllowed(const core::StreamOpen& open);
  // Part of CheckReplicaAllowed: from protocol 4 on the stream carries exactly the boot files the
  // domain boots from in Nova's instance directory (InvalidArgument naming the one missing or
  // extra); an older primary's stream is accepted without them (warned: it cannot be restored
  // here).
  Status CheckBootFiles(const core::StreamOpen& open) const;
  // The message bus (agent_bus.cc): RPC server, Nova's notifications, the agent's own
  // notifications — whichever the configuration enables. Started by Run(), stopped before the
  // loop's state goes away.
  void StartBus();
  void StopBus();
  core::BusView BuildBusView() const;
  // Nova's notification, on the consumer thread: what the behaviour table (docs/bus.md) says.
  bus::HandleResult HandleNovaEvent(const bus::NovaEvent& event);
  bus::HandleResult HandleInstanceEvent(const bus::InstanceEvent& event);
  // A pair event to whoever listens (the notifier, or nobody). Any thread.
  void Emit(core::PairEvent event);
  // Loop thread, every 100 ms: publishes the pair state changes of the primary sessions, and
  // stands down a copy whose backup refused its stream because it took the server over.
  void ReportPairStates();
  // Loop thread, every [peer] link_stats_interval_s: publishes dt.link.stats (RTT, replication
  // rate and capacity of each link this host replicates on) for the scheduler's weigher.
  void ReportLinkStats();
  // Backup side, on the loop thread: replica bookkeeping (fed by the registry's events), the
  // failure detector (stage VII) and the failover it starts.
  void OnReplicaOpened(const core::StreamOpen& open);
  void OnReplicaCommitted(const std::string& uuid, uint64_t epoch);
  void OnReplicaClosed(const std::string& uuid, const Status& why);
  // Its primary ended protection on purpose: the replica is never failed over (phase kReleased).
  // False when no replicating backup of `uuid` is known here.
  bool MarkReleased(const std::string& uuid);
  void CheckPrimaries();
  void StartFailover(const std::string& uuid, const std::string& why);
  void OnFailoverDone(const std::string& uuid, const StatusOr<engine::RestoreResult>& result,
                      Clock::TimePoint detected);

  // The fencing witness (agent_witness.cc, docs/witness.md). StartWitness: from [witness], when
  // configured. Loop thread: CheckFence every 50 ms pauses the guests this host owns once the
  // lease's fence deadline passed; OnWitnessEvent resumes them on renewal / re-claim, and
  // destroys a copy whose server another host took over.
  Status StartWitness();
  void CheckFence();
  void OnWitnessEvent(const witness::WitnessEvent& event);
  // Failover worker: wins ownership at the witness before restoring (only once the primary's
  // claim lapsed, and only with the replica's generation). Cancelled when `cancel` is set or
  // the agent stops.
  Status AwaitTakeOver(const std::string& uuid, const std::string& primary_host,
                       int64_t generation, const std::atomic<bool>& cancel);

  const config::AgentConfig cfg_;
  const Clock& clock_;
  const FileOwner qemu_;  // who QEMU runs as: owner of replica images and capture sockets
  const Clock::TimePoint started_;
  core::EventLoop loop_;
  core::PeerTracker peers_;
  core::LinkRateMeter link_meter_;
  // A server this host keeps a replica of.
  struct Backup {
    // kReleased: its primary ended the stream on purpose; never failed over (a basis only).
    enum class Phase { kReplicating, kReleased, kFailingOver, kFailedOver, kFailoverFailed };
    core::ProtectedServerView view;
    core::StreamOpen open;
    Clock::TimePoint last_heard{};
    core::AccrualFailureDetector detector{core::FailureDetectorOptions{}};
    bool suspected = false;     // the detector's verdict at the last check
    bool long_silence = false;  // silent longer than heartbeat_timeout_ms at the last check
    Phase phase = Phase::kReplicating;
    // Set to stop a failover still waiting for the witness (a new stream opened meanwhile).
    std::shared_ptr<std::atomic<bool>> cancel_failover;
    // Planned switchovers waiting for this failover's outcome (AcceptTakeOver).
    std::vector<std::shared_ptr<std::promise<StatusOr<engine::RestoreResult>>>> waiters;
  };
  std::map<std::string, Backup> backups_;  // by instance UUID; loop thread
  std::unique_ptr<replica::ReplicaRegistry> registry_;
  std::unique_ptr<core::DomainLauncher> launcher_;
  std::unique_ptr<engine::FailoverRestorer> restorer_;
  std::vector<std::thread> failovers_;  // joined at shutdown
  Clock::TimePoint last_detector_tick_{};
  Clock::TimePoint detector_grace_until_{};
  struct Protection {
    std::string backup_host;
    std::shared_ptr<engine::PrimarySession> session;
    std::string reported_state;  // last state published as a pair event
    // Recovered after an agent restart with output still held from the dead agent: until the
    // new stream's first commit releases it (state protected), how long it has been held here.
    bool holds_restart_output = false;
    Clock::TimePoint recovery_started{};
    std::string restart_report;  // shown in status once the held output left
    bool switching_over = false;  // a Switchover() owns the session
  };
  // Servers that failed or switched over to this host and wait to be protected again
  // ([replication] reprotect_hosts). Loop thread.
  struct Reprotect {
    std::string old_primary;
    Clock::TimePoint next_try{};
    std::string last_error;
  };
  std::map<std::string, Reprotect> reprotect_;  // by instance UUID
  // DT servers of this host that Nova told about (instance.create.end) and that are not
  // protected right now: waiting for the controller, or suspended during a Nova action.
  struct DtServer {
    std::string reason;       // shown in status
    std::string resume_to;    // backup host to protect to again when the action ends
  };
  std::map<std::string, DtServer> dt_servers_;  // by instance UUID; loop thread
  // Compute hosts Nova reports disabled or forced down (service.update): never chosen as a
  // backup by automatic protection. Host → why. Loop thread.
  std::map<std::string, std::string> unusable_hosts_;
  std::unique_ptr<bus::RpcServer> rpc_server_;
  std::unique_ptr<bus::NotificationConsumer> nova_consumer_;
  std::unique_ptr<bus::Notifier> notifier_;
  std::map<std::string, Protection> sessions_;  // servers protected from here; loop thread
  std::unique_ptr<core::ProtectionTable> table_;
  core::ProtectionMap protections_;  // what table_ holds (or should); loop thread
  std::thread recovery_thread_;      // RecoverProtections; joined at shutdown
  std::unique_ptr<core::ReplicationLink> replication_link_;
  std::unique_ptr<rpc::AgentServer> server_;
  std::unique_ptr<core::PeerLink> peer_link_;
  std::unique_ptr<core::Hypervisor> hypervisor_;
  std::unique_ptr<witness::Witness> witness_;  // null without [witness]
  // Servers whose claim lapsed with the lease: stay fenced until re-claimed. Loop thread.
  std::set<std::string> awaiting_reclaim_;
  std::atomic<bool> stopping_{false};  // set when Run() shuts down: failover workers give up
};

template <typename T>
StatusOr<T> Agent::OnLoop(std::function<T()> fn, std::chrono::milliseconds timeout) {
  auto promise = std::make_shared<std::promise<T>>();
  auto future = promise->get_future();
  loop_.Post([promise, fn = std::move(fn)] { promise->set_value(fn()); });
  if (future.wait_for(timeout) == std::future_status::ready) {
    try {
      return future.get();
    } catch (const std::future_error&) {
      // The loop stopped and dropped the task: fall through.
    }
  }
  return absl::UnavailableError("agent event loop did not answer (shutting down?)");
}

}  // namespace novadt::daemon
