#include "agent/daemon/agent.h"

#include <future>

#include "agent/common/logging.h"
#include "agent/common/version.h"
#include "agent/libvirt/libvirt_hypervisor.h"
#include "agent/replica/store_sink.h"
#include "agent/rpc/agent_server.h"
#include "agent/rpc/grpc_peer_link.h"

namespace novadt::daemon {

Agent::Agent(config::AgentConfig cfg, const Clock& clock)
    : cfg_(std::move(cfg)),
      clock_(clock),
      started_(clock.Now()),
      loop_(clock),
      peers_(clock, cfg_.peer.peers, 3 * std::chrono::milliseconds(cfg_.peer.hello_interval_ms)) {}

Agent::~Agent() = default;

Status Agent::Run() {
  rpc::ServiceHandlers handlers;
  handlers.host = cfg_.defaults.host;
  handlers.version = kVersion;
  handlers.status = [this] { return Snapshot(std::chrono::seconds(2)); };
  handlers.hello_received = [this](const std::string& host, const std::string& address,
                                   const std::string& version) {
    loop_.Post([this, host, address, version] {
      peers_.OnHelloReceived(host, address, version);
    });
  };
  replica::ReplicaEvents replica_events;
  replica_events.opened = [this](const std::string& uuid, const std::string& primary) {
    loop_.Post([this, uuid, primary] { OnReplicaOpened(uuid, primary); });
  };
  replica_events.committed = [this](const std::string& uuid, uint64_t epoch) {
    loop_.Post([this, uuid, epoch] { OnReplicaCommitted(uuid, epoch); });
  };
  replica_events.closed = [this](const std::string& uuid, const Status& why) {
    loop_.Post([this, uuid, why] { OnReplicaClosed(uuid, why); });
  };
  handlers.open_replica =
      replica::MakeStoreSinkFactory(cfg_.replication.replica_path, {}, std::move(replica_events));
  auto server = rpc::StartAgentServer(cfg_.defaults.control_address, cfg_.peer.listen_address,
                                      std::move(handlers));
  if (!server.ok()) return server.status();
  server_ = *std::move(server);

  peer_link_ = rpc::MakeGrpcPeerLink(
      {cfg_.defaults.host, kVersion, server_->peer_address()});

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

  if (!cfg_.peer.peers.empty()) {
    loop_.Post([this] { GreetPeers(); });
    loop_.RunEvery(std::chrono::milliseconds(cfg_.peer.hello_interval_ms),
                   [this] { GreetPeers(); });
  }

  spdlog::info("nova-dt-agent {} running as host '{}'", kVersion, cfg_.defaults.host);
  loop_.Run();

  spdlog::info("shutting down");
  server_->Shutdown(std::chrono::seconds(2));
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

void Agent::OnReplicaOpened(const std::string& uuid, const std::string& primary_host) {
  core::ProtectedServerView& v = replicas_[uuid];
  v = {uuid, "backup", "seeding", "replication stream open, replica not yet seeded", primary_host, 0};
}

void Agent::OnReplicaCommitted(const std::string& uuid, uint64_t epoch) {
  core::ProtectedServerView& v = replicas_[uuid];
  v.last_committed_epoch = epoch;
  v.state = "protected";
  v.reason.clear();
}

void Agent::OnReplicaClosed(const std::string& uuid, const Status& why) {
  core::ProtectedServerView& v = replicas_[uuid];
  v.state = "degraded";
  v.reason = why.ok() ? "primary closed the replication stream"
                      : "replication stream ended: " + std::string(why.message());
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
  for (const auto& [uuid, view] : replicas_) s.protected_servers.push_back(view);
  return s;
}

StatusOr<core::AgentStatusSnapshot> Agent::Snapshot(std::chrono::milliseconds timeout) {
  auto promise = std::make_shared<std::promise<core::AgentStatusSnapshot>>();
  auto future = promise->get_future();
  loop_.Post([this, promise] { promise->set_value(BuildSnapshot()); });
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
