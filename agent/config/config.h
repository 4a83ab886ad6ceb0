// The agent's configuration: plain structs, one per INI section, each field with its default
// and meaning. Loaded once at start by LoadAgentConfig() (config_loader.h) and validated; every
// module receives only its own sub-struct.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "agent/config/transport_url.h"

namespace novadt::config {

// [DEFAULT]
struct DefaultSection {
  // Name of this compute host as Nova knows it (nova.conf [DEFAULT] host). Default: hostname.
  std::string host;
  // oslo.messaging transport for RPC. Empty: the bus is disabled (agent runs without it).
  std::string transport_url;
  TransportUrl transport;  // parsed form of transport_url (empty hosts when disabled)
  // Where the agent keeps its persistent state (protection table, replicas).
  std::string state_path = "/var/lib/nova-dt";
  // debug | info | warning | error
  std::string log_level = "info";
  // Local control API (Status, later Protect/Unprotect): "unix:PATH" or "HOST:PORT".
  std::string control_address = "unix:/run/nova-dt/agent.sock";
};

// [oslo_messaging_notifications]
struct NotificationsSection {
  // Transport for Nova's notifications; empty means "same as [DEFAULT] transport_url".
  std::string transport_url;
  TransportUrl transport;  // parsed; already falls back to DEFAULT's when transport_url is empty
};

// [libvirt]
struct LibvirtSection {
  std::string connection_uri = "qemu:///system";
  // virConnectSetKeepAlive(): probe every interval, give up after `count` unanswered probes.
  int keepalive_interval_s = 5;
  int keepalive_count = 5;
  // Reconnect back-off after the connection drops: starts at 100 ms, doubles up to this.
  int reconnect_max_backoff_ms = 5000;
};

// One statically configured partner agent ("name=host:port").
struct PeerEndpoint {
  std::string host;     // the peer's [DEFAULT] host
  std::string address;  // gRPC address of its peer service
  bool operator==(const PeerEndpoint&) const = default;
};

// [peer]
struct PeerSection {
  // gRPC address the peer service listens on (replication streams, hellos from other agents).
  std::string listen_address = "0.0.0.0:7070";
  // TLS for the peer link: all three or none. Paths to PEM files.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_ca_file;
  // Agents to greet at start and keep track of ("peers seen" in status). Comma-separated
  // "host=address" items, e.g. "compute-2=10.0.0.2:7070".
  std::vector<PeerEndpoint> peers;
  // How often a peer is greeted; a peer unseen for 3 intervals is reported as not reachable.
  int hello_interval_ms = 1000;
};

// [witness]
struct WitnessSection {
  // etcd v3 endpoints ("http://host:2379" or "https://..."), comma-separated. Empty: no witness.
  std::vector<std::string> etcd_endpoints;
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  // Lease TTL for ownership keys.
  int lease_ttl_s = 5;
};

// [replication]
struct ReplicationSection {
  // Default checkpoint interval when a flavor does not set dt:epoch_ms. Bounds: 10..10000.
  int epoch_ms = 100;
  // Backup not acking for longer than this: the pair degrades and held output is released.
  int degrade_after_ms = 2000;
  // Primary unseen by the backup for longer than this (and not answering hellos): failover.
  // No witness fencing yet.
  int heartbeat_timeout_ms = 500;
  // Upper bound on bytes of one epoch kept in memory before the pair degrades.
  uint64_t max_epoch_bytes = 512ull * 1024 * 1024;
  // Where backup replicas live; default "<state_path>/replicas". For failover it must be on the
  // file system of libvirt's guest-RAM directory (e.g. /var/lib/libvirt/qemu/ram/nova-dt): the
  // libvirt hook hard-links the replica RAM there (deploy/libvirt-hooks/qemu).
  std::string replica_path;
};

struct AgentConfig {
  DefaultSection defaults;
  NotificationsSection notifications;
  LibvirtSection libvirt;
  PeerSection peer;
  WitnessSection witness;
  ReplicationSection replication;
};

}  // namespace novadt::config
