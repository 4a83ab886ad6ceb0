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
  // oslo.messaging's control exchange for the agent's RPC server (topic nova_dt_agent). The
  // Python side (nova_dt) sets the same default with rpc.set_defaults(control_exchange=...).
  std::string control_exchange = "nova_dt";
  bool operator==(const DefaultSection&) const = default;
};

// [oslo_messaging_rabbit] — the subset of oslo's rabbit driver options the agent honours, with
// oslo's names and defaults, so one file can serve Nova and the agent.
struct RabbitSection {
  // Durable exchanges/queues (must match the deployment: RabbitMQ answers 406 otherwise).
  bool amqp_durable_queues = false;
  // Topic queues as quorum queues (implies durable), or with the classic x-ha-policy: all.
  bool rabbit_quorum_queue = false;
  bool rabbit_ha_queues = false;
  // Heartbeat timeout (s) negotiated with the broker; 0 disables heartbeats.
  int heartbeat_timeout_threshold = 60;
  // Reconnect: wait rabbit_retry_interval s, growing by rabbit_retry_backoff s per attempt, up
  // to rabbit_interval_max s, cycling through every host of the transport URL.
  int rabbit_retry_interval = 1;
  int rabbit_retry_backoff = 2;
  int rabbit_interval_max = 30;
  // Unacknowledged messages a consumer may hold; 0: the agent's own default (see
  // [nova_notifications] prefetch_count).
  int rabbit_qos_prefetch_count = 0;
  // x-expires (s) of the transient fanout queue of the RPC server.
  int rabbit_transient_queues_ttl = 1800;
  // TLS towards the broker.
  bool ssl = false;
  std::string ssl_ca_file;
  std::string ssl_cert_file;
  std::string ssl_key_file;
  bool operator==(const RabbitSection&) const = default;
};

// [oslo_messaging_notifications] — the agent's own notifications (and where Nova's come from).
struct NotificationsSection {
  // Transport for notifications, Nova's and the agent's; empty means "same as [DEFAULT]
  // transport_url".
  std::string transport_url;
  TransportUrl transport;  // parsed; already falls back to DEFAULT's when transport_url is empty
  // oslo's driver list: "messagingv2" (or "messaging") publishes the agent's notifications;
  // empty or "noop" publishes none.
  std::vector<std::string> driver;
  // Topics the agent's notifications are published under: routing key "<topic>.<priority>" on
  // the exchange `exchange`.
  std::vector<std::string> topics = {"notifications"};
  // Exchange of the agent's notifications (Nova's are on "nova").
  std::string exchange = "nova_dt";
  // Notifications buffered while the broker is unreachable; beyond it the oldest are dropped
  // (counted in status and logged).
  int max_queued = 10000;
  bool operator==(const NotificationsSection&) const = default;
};

// [nova_notifications] — consuming Nova's versioned notifications.
struct NovaNotificationsSection {
  // Consume Nova's notifications (needs a notification transport).
  bool enabled = true;
  // Nova's exchange and versioned_notifications_topics; bound with "<topic>.info" and
  // "<topic>.error".
  std::string exchange = "nova";
  std::vector<std::string> topics = {"versioned_notifications"};
  // The agent's own queue; empty: "nova_dt_agent.versioned_notifications.<host>". Durable when
  // [oslo_messaging_rabbit] amqp_durable_queues or rabbit_quorum_queue.
  std::string queue;
  // Unacknowledged notifications in flight.
  int prefetch_count = 64;
  // Bodies larger than this are refused (acked, or dead-lettered) without being parsed.
  int max_message_bytes = 1 << 20;
  // Where malformed notifications go (x-dead-letter-exchange of the queue); empty: they are
  // logged and acknowledged.
  std::string dead_letter_exchange;
  bool operator==(const NovaNotificationsSection&) const = default;
};

// [libvirt]
struct LibvirtSection {
  std::string connection_uri = "qemu:///system";
  // Nova's instances_path (nova.conf [DEFAULT]) as libvirtd sees it. A domain restored here from a
  // peer's definition may name host files of its instance directory by Nova's names only:
  // <instances_path>/<uuid>/kernel and .../ramdisk (direct kernel boot), .../console.log (serial
  // console log). agent/libvirt/restore_xml.h has the whole allow-list.
  std::string instances_path = "/var/lib/nova/instances";
  // Further directories, as libvirtd sees them, any file below which such a domain may use as its
  // kernel, initrd or serial console file or log (e.g. a test rig's guest images). A restored
  // guest can read or overwrite any file below them. Empty: none.
  std::vector<std::string> restore_file_dirs;
  // virConnectSetKeepAlive(): probe every interval, give up after `count` unanswered probes.
  int keepalive_interval_s = 5;
  int keepalive_count = 5;
  // Reconnect back-off after the connection drops: starts at 100 ms, doubles up to this.
  int reconnect_max_backoff_ms = 5000;
  // The user and group libvirt runs QEMU as (qemu.conf `user` / `group`; Debian's default
  // libvirt-qemu:libvirt-qemu): a name, or "+N" for the numeric id. The files a restored QEMU
  // opens (replica RAM and disks) and the disk capture's NBD sockets are given to them, mode
  // 0600, in directories only the agent and this group can pass (docs/compute-host.md).
  // Looked up when the agent starts: an unknown name stops it (exit 2).
  std::string qemu_user = "libvirt-qemu";
  std::string qemu_group = "libvirt-qemu";
  bool operator==(const LibvirtSection&) const = default;
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
  // Mutual TLS of the peer link: all three or none. Paths to PEM files: this host's certificate
  // (naming [DEFAULT] host) and key, and the CA that signed every peer's (docs/security.md).
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_ca_file;
  // Without the TLS files the agent refuses to start: anyone who can reach listen_address could
  // otherwise stream a domain for this host to run, or take servers over. true: serve the peer
  // API in plaintext all the same (an isolated lab network), warned at start and in status.
  bool allow_insecure = false;
  // Agents to greet at start and keep track of ("peers seen" in status). Comma-separated
  // "host=address" items, e.g. "compute-2=10.0.0.2:7070".
  std::vector<PeerEndpoint> peers;
  // How often a peer is greeted; a peer unseen for 3 intervals is reported as not reachable.
  int hello_interval_ms = 1000;
  // How often the agent publishes dt.link.stats (RTT, replication rate and capacity of each link
  // it replicates on) for the scheduler's DTPairWeigher; 0: never. Needs the notifier.
  int link_stats_interval_s = 10;
  // Capacity of this host's replication links in Mbit/s (the weigher's M/M/1 service rate).
  int link_capacity_mbit = 10000;
  bool operator==(const PeerSection&) const = default;
};

// [witness] — etcd as the fencing witness (agent/witness, docs/witness.md).
struct WitnessSection {
  // etcd v3 endpoints, comma-separated "http://host:port" or "https://host:port" items, all with
  // the same scheme; tried in this order when one is unreachable. Empty: no witness.
  std::vector<std::string> etcd_endpoints;
  // https only. CA bundle to verify the etcd servers (empty: the system CAs), and a client
  // certificate and key (both or neither) for etcd's --client-cert-auth. Paths to PEM files.
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  // Keys live under "<key_prefix>/servers/<instance uuid>" and
  // "<key_prefix>/generations/<instance uuid>". Absolute, without a trailing '/'.
  std::string key_prefix = "/nova-dt";
  // TTL of the lease that keeps this host's ownership keys alive (whole seconds: etcd leases
  // count seconds). Renewed every lease_ttl_ms / 3.
  int lease_ttl_ms = 3000;
  // The owner must have paused its guests by (last renewal sent + TTL - fence_margin_ms), i.e.
  // this long before etcd can expire the lease and let the backup take over. At most half the
  // TTL.
  int fence_margin_ms = 1000;
  // Deadline of one etcd request on one endpoint. At most lease_ttl_ms / 3.
  int request_timeout_ms = 1000;
  // Without endpoints: whether a backup fails servers over by itself all the same, on its failure
  // detector alone. false (default): only an operator's explicit failover request restores a
  // server, because without a witness a primary that degraded and released output its backup
  // never got, and then died, would be resumed from a replica older than what clients saw
  // (docs/security.md). true: automatic failover without a witness, warned at start and in
  // status. Ignored with endpoints.
  bool allow_none = false;
  // The witness is used when endpoints are configured.
  bool enabled() const { return !etcd_endpoints.empty(); }
  bool operator==(const WitnessSection&) const = default;
};

// [replication]
struct ReplicationSection {
  // Default checkpoint interval when a flavor does not set dt:epoch_ms. Bounds: 10..10000.
  int epoch_ms = 100;
  // Backup not acking for longer than this: the pair degrades and held output is released.
  int degrade_after_ms = 2000;
  // Interval of the heartbeats on a replication stream (backup → primary; the primary's epochs
  // and heartbeats arrive at least this often) and the backup detector's expected interval.
  int heartbeat_interval_ms = 100;
  // The backup suspects its primary only after at least this silence on the stream, and only
  // when the silence is improbable for the arrivals seen so far (phi accrual detector); ten times
  // this silence is always suspect. Suspected and not answering hellos: failover. No witness
  // fencing yet.
  int heartbeat_timeout_ms = 500;
  // phi threshold of the accrual detector: 8 means a false suspicion probability of 1e-8 per
  // check under the fitted arrival distribution.
  int failure_phi_threshold = 8;
  // Bounds on what a backup accepts from a primary (docs/security.md); beyond them the stream is
  // refused with a clear reason (the pair degrades) and the agent serves every other server on.
  // Bytes of one epoch after the seed (RAM pages, disk writes, device state): what the backup
  // journals before the epoch commits. The seed itself is written in place, bounded by the
  // replica's geometry.
  uint64_t max_epoch_bytes = 512ull * 1024 * 1024;
  // CPU + device state of one epoch (held in memory while it arrives).
  uint64_t max_device_state_bytes = 256ull * 1024 * 1024;
  // Guest RAM, disks per server, and bytes of one disk, of a replica.
  uint64_t max_guest_ram_bytes = 1ull << 40;
  int max_disks = 32;
  uint64_t max_disk_bytes = 16ull << 40;
  // Replication streams open at once from one primary host.
  int max_streams_per_peer = 64;
  // Bytes of one boot file (a server's kernel or ramdisk in Nova's instance directory, sent with
  // every replication stream and kept with the replica; docs/compute-host.md, "Boot files"):
  // a primary does not send a larger one (the seed fails, saying so), a backup refuses it.
  uint64_t max_boot_file_bytes = 256ull * 1024 * 1024;
  // Where backup replicas live. For failover it must be on the file system of libvirt's
  // guest-RAM directory, and the libvirt hook (deploy/libvirt-hooks/qemu) reads its arm files
  // from <ram dir>/nova-dt: hence the default (docs/compute-host.md).
  std::string replica_path = "/var/lib/libvirt/qemu/ram/nova-dt";
  // Without a nova-dt-controller: protect every new DT server (flavor dt:enabled=true) created
  // on this host towards this backup host. Empty: wait for the controller's `protect`.
  std::string default_backup_host;
  // Re-protection without a nova-dt-controller (issue 6): once a server failed over or was
  // switched over to this host, protect it again towards the first of these hosts that answers
  // hellos and Nova has not disabled — list the old primary to get it back as the backup when
  // it returns. Each must be one of [peer] peers. Empty (default): leave re-protection to
  // nova-dt-controller, which chooses a new backup through Nova and Placement.
  std::vector<std::string> reprotect_hosts;
  bool operator==(const ReplicationSection&) const = default;
};

struct AgentConfig {
  DefaultSection defaults;
  RabbitSection rabbit;
  NotificationsSection notifications;
  NovaNotificationsSection nova_notifications;
  LibvirtSection libvirt;
  PeerSection peer;
  WitnessSection witness;
  ReplicationSection replication;
  bool operator==(const AgentConfig&) const = default;
};

}  // namespace novadt::config
