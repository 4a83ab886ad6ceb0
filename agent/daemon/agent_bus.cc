// The agent on the OpenStack message bus: its RPC methods (protect, unprotect, failover,
// status, list_pairs), what it does about Nova's notifications (docs/bus.md), and the dt.pair.*
// notifications it publishes.
#include <spdlog/spdlog.h>

#include <filesystem>

#include "agent/bus/notifier.h"
#include "agent/bus/rpc_server.h"
#include "agent/common/identifiers.h"
#include "agent/common/logging.h"
#include "agent/daemon/agent.h"
#include "agent/replica/replica_store.h"

namespace novadt::daemon {
namespace {

using bus::Json;

// A required string argument of an RPC method.
StatusOr<std::string> StringArg(const Json& args, const char* name) {
  auto it = args.find(name);
  if (it == args.end()) return absl::InvalidArgumentError(std::string("missing argument ") + name);
  if (!it->is_string() || it->get<std::string>().empty()) {
    return absl::InvalidArgumentError(std::string("argument ") + name +
                                      " must be a non-empty string");
  }
  return it->get<std::string>();
}

// Refuses arguments a method does not take, as Python would (with a ValueError here).
Status OnlyArgs(const Json& args, std::initializer_list<const char*> names) {
  for (const auto& [key, value] : args.items()) {
    bool known = false;
    for (const char* n : names) known = known || key == n;
    if (!known) return absl::InvalidArgumentError("unexpected argument " + key);
  }
  return absl::OkStatus();
}

Json ViewToJson(const core::ProtectedServerView& v) {
  return {{"instance_uuid", v.instance_uuid},
          {"role", v.role},
          {"state", v.state},
          {"reason", v.reason},
          {"peer_host", v.peer_host},
          {"last_committed_epoch", v.last_committed_epoch},
          {"last_checkpoint_epoch", v.last_checkpoint_epoch},
          {"dirty_tracking", v.dirty_tracking},
          {"pause_p50_us", v.pause_p50.count()},
          {"pause_p99_us", v.pause_p99.count()},
          {"reseeds", v.reseeds},
          {"seed_ms", v.seed_time.count()},
          {"seed_bytes", v.seed_bytes},
          {"seed_basis_bytes", v.seed_basis_bytes}};
}

Json LinkToJson(const core::BusLinkView& l) {
  return {{"enabled", l.enabled},     {"connected", l.connected}, {"reconnects", l.reconnects},
          {"last_error", l.last_error}, {"received", l.received}, {"handled", l.handled},
          {"malformed", l.malformed}, {"failures", l.failures},   {"published", l.published},
          {"dropped", l.dropped},     {"queued", l.queued}};
}

Json SnapshotToJson(const core::AgentStatusSnapshot& s) {
  Json peers = Json::array();
  for (const auto& p : s.peers) {
    peers.push_back({{"host", p.host},
                     {"address", p.address},
                     {"reachable", p.reachable},
                     {"rtt_us", p.rtt.count()},
                     {"version", p.version}});
  }
  Json servers = Json::array();
  for (const auto& v : s.protected_servers) servers.push_back(ViewToJson(v));
  return {{"host", s.host},
          {"version", s.version},
          {"uptime_ms", s.uptime.count()},
          {"hypervisor", {{"connection_uri", s.hypervisor_uri},
                          {"connected", s.hypervisor_connected}}},
          {"peers", std::move(peers)},
          {"protected_servers", std::move(servers)},
          {"bus", {{"rpc", LinkToJson(s.bus.rpc)},
                   {"nova_notifications", LinkToJson(s.bus.nova_notifications)},
                   {"notifier", LinkToJson(s.bus.notifier)}}},
          {"security_warnings", s.security_warnings}};
}

bool Enabled(const std::vector<std::string>& drivers) {
  for (const auto& d : drivers) {
    if (d == "messagingv2" || d == "messaging") return true;
  }
  return false;
}

}  // namespace

void Agent::StartBus() {
  const std::string name = "nova-dt-agent:" + cfg_.defaults.host;
  const bool durable = cfg_.rabbit.amqp_durable_queues || cfg_.rabbit.rabbit_quorum_queue;
  if (Enabled(cfg_.notifications.driver) && !cfg_.notifications.transport.hosts.empty()) {
    bus::NotifierOptions o;
    o.transport = bus::MakeBusTransport(cfg_.notifications.transport, cfg_.rabbit);
    o.connection_name = name + ":notifier";
    o.exchange = cfg_.notifications.exchange;
    o.topics = cfg_.notifications.topics;
    o.publisher_id = "nova-dt-agent:" + cfg_.defaults.host;
    o.durable = durable;
    o.max_queued = static_cast<size_t>(cfg_.notifications.max_queued);
    notifier_ = std::make_unique<bus::Notifier>(std::move(o));
    notifier_->Start();
    if (cfg_.peer.link_stats_interval_s > 0) {
      loop_.Post([this] { ReportLinkStats(); });  // starts the first interval
      loop_.RunEvery(std::chrono::seconds(cfg_.peer.link_stats_interval_s),
                     [this] { ReportLinkStats(); });
    }
  }
  if (!cfg_.defaults.transport.hosts.empty()) {
    bus::RpcServerOptions o;
    o.transport = bus::MakeBusTransport(cfg_.defaults.transport, cfg_.rabbit);
    o.connection_name = name + ":rpc";
    o.exchange = cfg_.defaults.control_exchange;
    o.server = cfg_.defaults.host;
    o.durable = cfg_.rabbit.amqp_durable_queues;
    o.quorum = cfg_.rabbit.rabbit_quorum_queue;
    o.ha_queues = cfg_.rabbit.rabbit_ha_queues;
    o.transient_queue_ttl = std::chrono::seconds(cfg_.rabbit.rabbit_transient_queues_ttl);
    o.version_minor = 1;  // 1.1: switchover
    std::map<std::string, bus::RpcMethod> methods;
    methods["protect"] = [this](const Json& args) -> StatusOr<Json> {
      NOVA_DT_RETURN_IF_ERROR(OnlyArgs(args, {"instance_uuid", "backup_host"}));
      auto uuid = StringArg(args, "instance_uuid");
      if (!uuid.ok()) return uuid.status();
      auto backup = StringArg(args, "backup_host");
      if (!backup.ok()) return backup.status();
      NOVA_DT_RETURN_IF_ERROR(Protect(*uuid, *backup));
      return Json{{"instance_uuid", *uuid}, {"backup_host", *backup}, {"state", "seeding"}};
    };
    // A method of one server: `instance_uuid` is its only argument.
    auto of_server = [](std::function<Status(const std::string&)> act,
                        std::string state) -> bus::RpcMethod {
      return [act = std::move(act), state = std::move(state)](const Json& args) -> StatusOr<Json> {
        NOVA_DT_RETURN_IF_ERROR(OnlyArgs(args, {"instance_uuid"}));
        auto uuid = StringArg(args, "instance_uuid");
        if (!uuid.ok()) return uuid.status();
        NOVA_DT_RETURN_IF_ERROR(act(*uuid));
        return Json{{"instance_uuid", *uuid}, {"state", state}};
      };
    };
    methods["unprotect"] = of_server([this](const std::string& u) { return Unprotect(u); },
                                     "unprotected");
    methods["failover"] = of_server([this](const std::string& u) { return Failover(u); },
                                    "failing-over");
    // API 1.1. Blocks the worker for the switchover (a few seconds; keep-alives go on).
    methods["switchover"] = [this](const Json& args) -> StatusOr<Json> {
      NOVA_DT_RETURN_IF_ERROR(OnlyArgs(args, {"instance_uuid"}));
      auto uuid = StringArg(args, "instance_uuid");
      if (!uuid.ok()) return uuid.status();
      auto done = Switchover(*uuid);
      if (!done.ok()) return done.status();
      return Json{{"instance_uuid", *uuid},
                  {"new_host", done->new_host},
                  {"epoch", done->epoch},
                  {"paused_ms", done->paused.count()}};
    };
    // A method without arguments answering from the agent's status.
    auto of_status = [this](std::function<Json(const core::AgentStatusSnapshot&)> answer) {
      return [this, answer = std::move(answer)](const Json& args) -> StatusOr<Json> {
        NOVA_DT_RETURN_IF_ERROR(OnlyArgs(args, {}));
        auto s = Snapshot(std::chrono::seconds(2));
        if (!s.ok()) return s.status();
        return answer(*s);
      };
    };
    methods["status"] = of_status(SnapshotToJson);
    methods["list_pairs"] = of_status([](const core::AgentStatusSnapshot& s) {
      Json pairs = Json::array();
      for (const auto& v : s.protected_servers) pairs.push_back(ViewToJson(v));
      return pairs;
    });
    rpc_server_ = std::make_unique<bus::RpcServer>(std::move(o), std::move(methods));
    rpc_server_->Start();
  }
  if (cfg_.nova_notifications.enabled && !cfg_.notifications.transport.hosts.empty()) {
    bus::NotificationConsumerOptions o;
    o.transport = bus::MakeBusTransport(cfg_.notifications.transport, cfg_.rabbit);
    o.connection_name = name + ":nova-notifications";
    o.exchange = cfg_.nova_notifications.exchange;
    o.topics = cfg_.nova_notifications.topics;
    o.queue = cfg_.nova_notifications.queue;
    o.durable = cfg_.rabbit.amqp_durable_queues;
    o.quorum = cfg_.rabbit.rabbit_quorum_queue;
    o.prefetch = static_cast<uint16_t>(cfg_.rabbit.rabbit_qos_prefetch_count > 0
                                           ? cfg_.rabbit.rabbit_qos_prefetch_count
                                           : cfg_.nova_notifications.prefetch_count);
    o.max_body_bytes = static_cast<size_t>(cfg_.nova_notifications.max_message_bytes);
    o.dead_letter_exchange = cfg_.nova_notifications.dead_letter_exchange;
    nova_consumer_ = std::make_unique<bus::NotificationConsumer>(
        std::move(o), [this](const bus::NovaEvent& e) { return HandleNovaEvent(e); });
    nova_consumer_->Start();
  }
}

void Agent::StopBus() {
  // Consumers first (their handlers use the agent), the notifier last (it flushes).
  if (nova_consumer_) nova_consumer_->Stop();
  if (rpc_server_) rpc_server_->Stop();
  if (notifier_) notifier_->Stop();
}

core::BusView Agent::BuildBusView() const {
  core::BusView v;
  if (rpc_server_) {
    const bus::RpcCounters c = rpc_server_->counters();
    v.rpc = {true, rpc_server_->connected(), rpc_server_->reconnects(), rpc_server_->last_error(),
             c.requests, c.requests - c.malformed, c.malformed, c.failures, c.replies, 0, 0};
  }
  if (nova_consumer_) {
    const bus::ConsumerCounters c = nova_consumer_->counters();
    v.nova_notifications = {true,        nova_consumer_->connected(),
                            nova_consumer_->reconnects(), nova_consumer_->last_error(),
                            c.received,  c.handled,
                            c.malformed, c.requeued,
                            0,           0,
                            0};
  }
  if (notifier_) {
    const bus::NotifierCounters c = notifier_->counters();
    v.notifier = {true, notifier_->connected(), notifier_->reconnects(), notifier_->last_error(),
                  0,    0,
                  0,    0,
                  c.published, c.dropped, c.queued};
  }
  return v;
}

void Agent::Emit(core::PairEvent event) {
  if (!notifier_) return;
  event.host = cfg_.defaults.host;
  if (event.priority.empty()) event.priority = "INFO";
  notifier_->Publish(event);
}

void Agent::ReportPairStates() {
  struct TakenOver {
    std::string uuid, why, by;
  };
  std::vector<TakenOver> taken_over;
  for (auto& [uuid, p] : sessions_) {
    const engine::SessionStatus st = p.session->status();
    if (st.taken_over && !st.handing_over) {  // (a switchover decides on its own copy)
      taken_over.push_back({uuid, "the backup " + p.backup_host + " runs the server now: " +
                                        st.reason, p.backup_host});
      continue;
    }
    const std::string state(engine::PairStateName(st.state));
    if (p.holds_restart_output &&
        (st.state == engine::PairState::kProtected || st.state == engine::PairState::kDegraded)) {
      // The output the dead agent left held left with the first commit (or the degrade).
      p.holds_restart_output = false;
      p.restart_report =
          "recovered after an agent restart: output held by the previous agent released " +
          std::to_string(
              std::chrono::duration_cast<std::chrono::milliseconds>(clock_.Now() - started_)
                  .count()) +
          " ms after this agent started (" + state + ")";
      InstanceLog(uuid).Info("{}", p.restart_report);
    }
    if (state == p.reported_state) continue;
    core::PairEvent e;
    e.instance_uuid = uuid;
    e.role = "primary";
    e.state = state;
    e.reason = st.reason;
    e.peer_host = p.backup_host;
    e.committed_epoch = st.last_committed;
    if (st.state == engine::PairState::kProtected) {
      e.event_type = "dt.pair.protect.end";
      e.duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(st.seed_time).count();
    } else if (st.state == engine::PairState::kDegraded) {
      e.event_type = "dt.pair.degraded";
      e.priority = "ERROR";
    } else if (st.state == engine::PairState::kSeeding && !p.reported_state.empty()) {
      e.event_type = "dt.pair.protect.start";  // re-seeding after a degradation
    } else {
      p.reported_state = state;  // the initial seeding: protect.start went out already
      continue;
    }
    p.reported_state = state;
    Emit(std::move(e));
  }
  for (const auto& t : taken_over) StandDown(t.uuid, t.why, t.by);
}

void Agent::ReportLinkStats() {
  if (!notifier_) return;
  std::vector<core::StreamedBytes> servers;
  servers.reserve(sessions_.size());
  for (const auto& [uuid, p] : sessions_) {
    servers.push_back({uuid, p.backup_host, p.session->status().steady_bytes});
  }
  const auto links = link_meter_.Sample(clock_.Now(), peers_.Snapshot(), servers);
  notifier_->Notify("dt.link.stats", "INFO", bus::LinkStatsPayload(cfg_.defaults.host, links));
}

Status Agent::Failover(const std::string& instance_uuid) {
  NOVA_DT_RETURN_IF_ERROR(ValidateInstanceUuid(instance_uuid));
  auto st = OnLoop<Status>(
      [this, instance_uuid]() -> Status {
        auto it = backups_.find(instance_uuid);
        if (it == backups_.end() || it->second.view.last_committed_epoch == 0) {
          return absl::NotFoundError("this host keeps no committed replica of " + instance_uuid);
        }
        Backup& b = it->second;
        if (b.phase == Backup::Phase::kReleased) {
          return absl::FailedPreconditionError(
              "primary " + b.open.primary_host + " ended protection of " + instance_uuid +
              " on purpose: output it released since is not in this replica, which is never "
              "restored");
        }
        if (b.phase != Backup::Phase::kReplicating) {
          return absl::FailedPreconditionError("server " + instance_uuid +
                                               " is already failing or failed over here");
        }
        for (const auto& p : peers_.Snapshot()) {
          if (p.host == b.open.primary_host && p.reachable) {
            return absl::FailedPreconditionError(
                "primary " + b.open.primary_host +
                " still answers: failing over now would run two copies (stop it first)");
          }
        }
        StartFailover(instance_uuid, "failover requested over RPC");
        return absl::OkStatus();
      },
      std::chrono::seconds(2));
  return st.ok() ? *st : st.status();
}

bus::HandleResult Agent::HandleNovaEvent(const bus::NovaEvent& event) {
  if (const auto* e = std::get_if<bus::InstanceEvent>(&event)) return HandleInstanceEvent(*e);
  if (const auto* s = std::get_if<bus::ServiceEvent>(&event); s && s->binary == "nova-compute") {
    // Nova's word is not proof that a host is gone (invariant 3): failovers stay with the failure
    // detector (and, with pair safety, the witness). It only keeps automatic protection away
    // from a host that operators took out of service.
    std::string why;
    if (s->forced_down) why = "forced down in Nova";
    if (s->disabled) {
      why = std::string(why.empty() ? "" : why + ", ") + "disabled in Nova" +
            (s->disabled_reason.empty() ? "" : " (" + s->disabled_reason + ")");
    }
    spdlog::info("nova: compute service on {} is {}", s->host, why.empty() ? "enabled" : why);
    auto done = OnLoop<bool>(
        [this, host = s->host, why] {
          if (why.empty()) return unusable_hosts_.erase(host) > 0;
          unusable_hosts_[host] = why;
          return true;
        },
        std::chrono::seconds(2));
    if (!done.ok()) return bus::HandleResult::kRetry;
  }
  return bus::HandleResult::kDone;
}

bus::HandleResult Agent::HandleInstanceEvent(const bus::InstanceEvent& e) {
  if (Status bad = ValidateInstanceUuid(e.uuid); !bad.ok()) {
    spdlog::warn("{} ignored: {}", e.event_type, std::string(bad.message()));
    return bus::HandleResult::kDone;
  }
  const InstanceLog log(e.uuid);
  StatusOr<bus::DtSpecs> specs = bus::ParseDtSpecs(e.extra_specs);
  if (!specs.ok()) {
    log.Warn("{}: flavor's dt:* extra specs ignored: {}", e.event_type,
             std::string(specs.status().message()));
  }
  const bool dt = specs.ok() && specs->enabled;
  struct Involvement {
    bool primary = false;  // protected from here
    bool backup = false;   // replicated to here
    bool known = false;    // a DT server of this host, not protected now
    std::string backup_host;
    std::string resume_to;
  };
  auto inv = OnLoop<Involvement>(
      [this, uuid = e.uuid] {
        Involvement i;
        auto s = sessions_.find(uuid);
        if (s != sessions_.end()) {
          i.primary = true;
          i.backup_host = s->second.backup_host;
        }
        i.backup = backups_.count(uuid) > 0;
        auto d = dt_servers_.find(uuid);
        if (d != dt_servers_.end()) {
          i.known = true;
          i.resume_to = d->second.resume_to;
        }
        return i;
      },
      std::chrono::seconds(2));
  if (!inv.ok()) return bus::HandleResult::kRetry;  // shutting down: the event stays queued
  if (!dt && !inv->primary && !inv->backup && !inv->known) return bus::HandleResult::kDone;

  const bool here = e.host == cfg_.defaults.host;
  const bus::InstanceReaction reaction = bus::ReactionTo(e);
  log.Info("nova: {} on {} → {}", e.event_type, e.host.empty() ? "?" : Printable(e.host),
           bus::InstanceReactionName(reaction));
  auto record = [&](std::string reason, std::string resume_to) {
    (void)OnLoop<bool>(
        [this, uuid = e.uuid, reason, resume_to] {
          dt_servers_[uuid] = {reason, resume_to};
          return true;
        },
        std::chrono::seconds(2));
  };
  auto forget = [&] {
    (void)OnLoop<bool>([this, uuid = e.uuid] { return dt_servers_.erase(uuid) > 0; },
                       std::chrono::seconds(2));
  };
  auto unprotect = [&](const std::string& why) {
    if (!inv->primary) return;
    Status st = Unprotect(e.uuid);
    if (!st.ok() && !absl::IsNotFound(st)) log.Warn("unprotect for {}: {}", why, st.ToString());
  };
  // Frees this host's replica of the deleted server: a backup's as soon as the delete starts;
  // once Nova has destroyed every copy (`gone`: delete.end) also the files a copy restored here
  // ran on (a failover to this host) and a basis a copy that left kept here — or they would stay
  // in the RAM file system for good (or for the basis's grace period).
  auto discard = [&](bool gone) {
    const bool ran_here = registry_->TakenOverHere(e.uuid);
    std::error_code ec;
    const std::string dir = replica::ReplicaDir(cfg_.replication.replica_path, e.uuid);
    const bool held_here = gone && std::filesystem::exists(dir, ec);
    if (ran_here ? !gone : !(inv->backup || held_here)) return;
    if (Status st = registry_->Discard(e.uuid); !st.ok()) log.Error("{}", st.ToString());
    (void)OnLoop<bool>(
        [this, uuid = e.uuid, gone] {
          auto it = backups_.find(uuid);
          // (A failover under way ends in OnFailoverDone, which needs its entry.)
          if (it == backups_.end() || it->second.phase == Backup::Phase::kFailingOver ||
              (!gone && it->second.phase != Backup::Phase::kReplicating)) {
            return false;
          }
          backups_.erase(it);
          return true;
        },
        std::chrono::seconds(2));
    log.Info("replica freed ({}{})", e.event_type,
             ran_here ? ": the files the server ran on here since its failover" : "");
  };
  auto protect = [&](const std::string& backup, const std::string& why) {
    auto unusable = OnLoop<std::string>(
        [this, backup] {
          auto it = unusable_hosts_.find(backup);
          return it == unusable_hosts_.end() ? std::string() : it->second;
        },
        std::chrono::seconds(2));
    Status st = !unusable.ok() ? unusable.status()
                : unusable->empty()
                    ? Protect(e.uuid, backup)
                    : absl::FailedPreconditionError("backup host " + backup + " is " + *unusable);
    if (st.ok() || absl::IsAlreadyExists(st)) {
      forget();
      return;
    }
    log.Error("protect towards {} after {} failed: {}", backup, why, st.ToString());
    const std::string reason = "protection after " + why + " failed: " + std::string(st.message());
    record(reason, backup);
    Emit({.event_type = "dt.pair.protect.error",
          .priority = "ERROR",
          .instance_uuid = e.uuid,
          .role = "primary",
          .state = "unprotected",
          .reason = reason,
          .peer_host = backup});
  };

  switch (reaction) {
    case bus::InstanceReaction::kIgnore:
      break;
    case bus::InstanceReaction::kRecord:
      if (!here || !dt || inv->primary) break;
      if (!cfg_.replication.default_backup_host.empty()) {
        protect(cfg_.replication.default_backup_host, e.event_type);
      } else {
        record("DT server created here; waiting for the nova-dt-controller's protect", "");
      }
      break;
    case bus::InstanceReaction::kUnprotect:
      unprotect(e.event_type);
      if (e.action == "delete") discard(/*gone=*/false);
      break;
    case bus::InstanceReaction::kSuspend:
      if (inv->primary) {
        unprotect(e.event_type);
        record("protection suspended during " + e.action, inv->backup_host);
        Emit({.event_type = "dt.pair.suspended",
              .instance_uuid = e.uuid,
              .role = "primary",
              .state = "unprotected",
              .reason = "suspended during " + e.event_type,
              .peer_host = inv->backup_host});
      }
      break;
    case bus::InstanceReaction::kResume: {
      if (!here) {
        if (inv->known) forget();  // the server left this host (live migration, evacuation)
        break;
      }
      if (inv->primary || e.state != "active") break;
      const std::string to =
          !inv->resume_to.empty() ? inv->resume_to : cfg_.replication.default_backup_host;
      if (!to.empty() && (dt || inv->known)) protect(to, e.event_type);
      break;
    }
    case bus::InstanceReaction::kForget:
      unprotect(e.event_type);
      discard(/*gone=*/true);
      forget();
      break;
  }
  return bus::HandleResult::kDone;
}

}  // namespace novadt::daemon
