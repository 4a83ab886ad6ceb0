// Tests of LoadAgentConfig(): oslo.config's INI rules on top of Debian's inih, defaults,
// overriding between files, and the exact one-line error for every kind of bad value.
#include "agent/config/config_loader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <spdlog/logger.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace novadt::config {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

class ConfigLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/config_loader_test.XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr) << "mkdtemp failed";
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes `content` to a fresh file in the test directory and returns its path.
  std::string Write(const std::string& name, const std::string& content) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << content;
    return path;
  }

  // Loads one file that must be rejected; returns the error message.
  std::string Error(const std::string& content) {
    const std::string path = Write("agent.conf", content);
    StatusOr<AgentConfig> c = LoadAgentConfig({path});
    if (c.ok()) {
      ADD_FAILURE() << "loaded, expected an error for:\n" << content;
      return "";
    }
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(c.status().message());
  }

  StatusOr<AgentConfig> LoadOne(const std::string& content) {
    return LoadAgentConfig({Write("agent.conf", content)});
  }

  std::string dir_;
};

// Captures spdlog output of the default logger for the lifetime of the object.
class CapturedLog {
 public:
  CapturedLog()
      : sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(128)),
        previous_(spdlog::default_logger()) {
    auto logger = std::make_shared<spdlog::logger>("captured", sink_);
    logger->set_pattern("%l %v");
    spdlog::set_default_logger(logger);
  }
  ~CapturedLog() { spdlog::set_default_logger(previous_); }
  // The captured lines, without their line ends.
  std::vector<std::string> Lines() const {
    std::vector<std::string> lines = sink_->last_formatted();
    for (std::string& line : lines) {
      while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    }
    return lines;
  }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
  std::shared_ptr<spdlog::logger> previous_;
};

std::string HostName() {
  char buf[256] = {};
  gethostname(buf, sizeof(buf) - 1);
  return buf;
}

TEST_F(ConfigLoaderTest, DefaultsFromAMinimalFile) {
  StatusOr<AgentConfig> c = LoadOne("[DEFAULT]\nhost = compute-1\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->defaults.host, "compute-1");
  EXPECT_EQ(c->defaults.transport_url, "");
  EXPECT_TRUE(c->defaults.transport.hosts.empty());
  EXPECT_EQ(c->defaults.state_path, "/var/lib/nova-dt");
  EXPECT_EQ(c->defaults.log_level, "info");
  EXPECT_EQ(c->defaults.control_address, "unix:/run/nova-dt/agent.sock");
  EXPECT_EQ(c->notifications.transport_url, "");
  EXPECT_EQ(c->libvirt.connection_uri, "qemu:///system");
  EXPECT_EQ(c->libvirt.keepalive_interval_s, 5);
  EXPECT_EQ(c->libvirt.keepalive_count, 5);
  EXPECT_EQ(c->libvirt.reconnect_max_backoff_ms, 5000);
  EXPECT_EQ(c->peer.listen_address, "0.0.0.0:7070");
  EXPECT_TRUE(c->peer.peers.empty());
  EXPECT_EQ(c->peer.hello_interval_ms, 1000);
  EXPECT_TRUE(c->witness.etcd_endpoints.empty());
  EXPECT_FALSE(c->witness.enabled());
  EXPECT_EQ(c->witness.key_prefix, "/nova-dt");
  EXPECT_EQ(c->witness.lease_ttl_ms, 3000);
  EXPECT_EQ(c->witness.fence_margin_ms, 1000);
  EXPECT_EQ(c->witness.request_timeout_ms, 1000);
  EXPECT_EQ(c->replication.epoch_ms, 100);
  EXPECT_EQ(c->replication.degrade_after_ms, 2000);
  EXPECT_EQ(c->replication.heartbeat_timeout_ms, 500);
  EXPECT_EQ(c->replication.heartbeat_interval_ms, 100);
  EXPECT_EQ(c->replication.failure_phi_threshold, 8);
  EXPECT_EQ(c->replication.max_epoch_bytes, 512ull * 1024 * 1024);
  EXPECT_EQ(c->replication.max_boot_file_bytes, 256ull * 1024 * 1024);
  EXPECT_EQ(c->replication.replica_path, "/var/lib/libvirt/qemu/ram/nova-dt");
  EXPECT_EQ(c->peer.link_stats_interval_s, 10);
  EXPECT_EQ(c->peer.link_capacity_mbit, 10000);
}

TEST_F(ConfigLoaderTest, HostDefaultsToHostnameAndNoFileIsAllowed) {
  StatusOr<AgentConfig> c = LoadAgentConfig({});
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_FALSE(HostName().empty());
  EXPECT_EQ(c->defaults.host, HostName());
}

TEST_F(ConfigLoaderTest, ReadsEveryOption) {
  const std::string cert = Write("peer.crt", "cert");
  const std::string key = Write("peer.key", "key");
  const std::string ca = Write("ca.crt", "ca");
  StatusOr<AgentConfig> c = LoadOne(
      "# nova-dt agent\n"
      "[DEFAULT]\n"
      "host = compute-1\n"
      "transport_url = rabbit://dt:secret@ctl1:5672,dt:secret@ctl2:5672/\n"
      "state_path = /srv/nova-dt\n"
      "log_level = debug\n"
      "control_address = 127.0.0.1:0\n"
      "[oslo_messaging_rabbit]\n"
      "ssl = false\n"
      "[libvirt]\n"
      "connection_uri = test:///default\n"
      "keepalive_interval_s = 10\n"
      "keepalive_count = 3\n"
      "reconnect_max_backoff_ms = 8000\n"
      "[peer]\n"
      "listen_address = [::]:7171\n"
      "tls_cert_file = " +
      cert +
      "\n"
      "tls_key_file = " +
      key +
      "\n"
      "tls_ca_file = " +
      ca +
      "\n"
      "peers = compute-2=10.0.0.2:7070, compute-3=[fd00::3]:7070,compute-4=unix:/run/p4.sock\n"
      "hello_interval_ms = 250\n"
      "link_stats_interval_s = 0\n"
      "link_capacity_mbit = 25000\n"
      "[witness]\n"
      "etcd_endpoints = https://10.0.0.9:2379,https://etcd.example.org:2379\n"
      "tls_ca_file = " +
      ca +
      "\n"
      "tls_cert_file = " +
      cert +
      "\n"
      "tls_key_file = " +
      key +
      "\n"
      "key_prefix = /dt/region-1\n"
      "lease_ttl_ms = 7000\n"
      "fence_margin_ms = 1500\n"
      "request_timeout_ms = 500\n"
      "[replication]\n"
      "epoch_ms = 50\n"
      "degrade_after_ms = 3000\n"
      "heartbeat_timeout_ms = 400\n"
      "max_epoch_bytes = 1_073_741_824\n"
      "max_boot_file_bytes = 67_108_864\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->defaults.host, "compute-1");
  ASSERT_EQ(c->defaults.transport.hosts.size(), 2u);
  EXPECT_EQ(c->defaults.transport.hosts[1].hostname, "ctl2");
  EXPECT_EQ(c->defaults.transport.hosts[1].password, "secret");
  EXPECT_EQ(c->defaults.state_path, "/srv/nova-dt");
  EXPECT_EQ(c->defaults.log_level, "debug");
  EXPECT_EQ(c->defaults.control_address, "127.0.0.1:0");
  // [oslo_messaging_notifications] transport_url falls back to DEFAULT's.
  EXPECT_EQ(c->notifications.transport_url, "");
  EXPECT_EQ(c->notifications.transport, c->defaults.transport);
  EXPECT_EQ(c->libvirt.connection_uri, "test:///default");
  EXPECT_EQ(c->libvirt.keepalive_interval_s, 10);
  EXPECT_EQ(c->libvirt.keepalive_count, 3);
  EXPECT_EQ(c->libvirt.reconnect_max_backoff_ms, 8000);
  EXPECT_EQ(c->peer.listen_address, "[::]:7171");
  EXPECT_EQ(c->peer.tls_cert_file, cert);
  EXPECT_EQ(c->peer.tls_key_file, key);
  EXPECT_EQ(c->peer.tls_ca_file, ca);
  EXPECT_THAT(c->peer.peers, ElementsAre(PeerEndpoint{"compute-2", "10.0.0.2:7070"},
                                         PeerEndpoint{"compute-3", "[fd00::3]:7070"},
                                         PeerEndpoint{"compute-4", "unix:/run/p4.sock"}));
  EXPECT_EQ(c->peer.hello_interval_ms, 250);
  EXPECT_EQ(c->peer.link_stats_interval_s, 0);
  EXPECT_EQ(c->peer.link_capacity_mbit, 25000);
  EXPECT_THAT(c->witness.etcd_endpoints,
              ElementsAre("https://10.0.0.9:2379", "https://etcd.example.org:2379"));
  EXPECT_TRUE(c->witness.enabled());
  EXPECT_EQ(c->witness.tls_ca_file, ca);
  EXPECT_EQ(c->witness.tls_cert_file, cert);
  EXPECT_EQ(c->witness.tls_key_file, key);
  EXPECT_EQ(c->witness.key_prefix, "/dt/region-1");
  EXPECT_EQ(c->witness.lease_ttl_ms, 7000);
  EXPECT_EQ(c->witness.fence_margin_ms, 1500);
  EXPECT_EQ(c->witness.request_timeout_ms, 500);
  EXPECT_EQ(c->replication.epoch_ms, 50);
  EXPECT_EQ(c->replication.degrade_after_ms, 3000);
  EXPECT_EQ(c->replication.heartbeat_timeout_ms, 400);
  EXPECT_EQ(c->replication.max_epoch_bytes, 1073741824u);
  EXPECT_EQ(c->replication.max_boot_file_bytes, 67108864u);
  EXPECT_EQ(c->replication.replica_path, "/var/lib/libvirt/qemu/ram/nova-dt")
      << "not derived from state_path: the libvirt hook looks in <ram dir>/nova-dt";
}

TEST_F(ConfigLoaderTest, NotificationTransportOverridesDefault) {
  StatusOr<AgentConfig> c = LoadOne(
      "[DEFAULT]\nhost = h\ntransport_url = rabbit://a:b@ctl1/\n"
      "[oslo_messaging_notifications]\ntransport_url = kombu://n:m@notif1:5673//\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->notifications.transport_url, "kombu://n:m@notif1:5673//");
  EXPECT_EQ(c->notifications.transport.scheme, "kombu");
  EXPECT_EQ(c->notifications.transport.virtual_host, "/");
  ASSERT_EQ(c->notifications.transport.hosts.size(), 1u);
  EXPECT_EQ(c->notifications.transport.hosts[0].hostname, "notif1");
  EXPECT_EQ(c->defaults.transport.hosts[0].hostname, "ctl1");
}

TEST_F(ConfigLoaderTest, LaterFilesOverrideEarlierOnes) {
  const std::string first = Write("01.conf",
                                  "[DEFAULT]\nhost = compute-1\nlog_level = debug\n"
                                  "[replication]\nepoch_ms = 100\nepoch_ms = 120\n"
                                  "degrade_after_ms = 4000\n");
  const std::string second = Write("02.conf",
                                   "[Replication]\nepoch_ms = 200\n"
                                   "[DEFAULT]\nstate_path = /srv/dt\n");
  StatusOr<AgentConfig> c = LoadAgentConfig({first, second});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->defaults.host, "compute-1");
  EXPECT_EQ(c->defaults.log_level, "debug");
  EXPECT_EQ(c->defaults.state_path, "/srv/dt");
  EXPECT_EQ(c->replication.epoch_ms, 200);  // group names are lower-cased
  EXPECT_EQ(c->replication.degrade_after_ms, 4000);


  // Within one file the last assignment wins.
  c = LoadAgentConfig({first});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->replication.epoch_ms, 120);
}

TEST_F(ConfigLoaderTest, ErrorNamesTheFileWhereTheValueWasLastSet) {
  const std::string first = Write("01.conf", "[replication]\nepoch_ms = 5\nlease = 1\n");
  const std::string second = Write("02.conf", "[replication]\ndegrade_after_ms = 3000\n");
  StatusOr<AgentConfig> c = LoadAgentConfig({first, second});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(),
            first + ": [replication] epoch_ms: expected an integer in 10..10000, got '5'");

  const std::string third = Write("03.conf", "[replication]\nepoch_ms = 10001\n");
  c = LoadAgentConfig({second, third, second});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(),
            third + ": [replication] epoch_ms: expected an integer in 10..10000, got '10001'");
}

TEST_F(ConfigLoaderTest, OsloValueSyntax) {
  StatusOr<AgentConfig> c = LoadOne(
      "[DEFAULT]\n"
      // "key: value" and the first of ':' / '=' separating.
      "state_path: /srv/x=y\n"
      "[replication]\n"
      // No inline comments: ';' and '#' inside a value stay (inih would cut " ;c").
      "replica_path = /srv/a;b ;c # d\n"
      "[libvirt]\n"
      // Matching quotes stripped; '$$' is a literal '$'.
      "connection_uri = \"qemu+ssh://root@h$$1/system\"\n"
      "[peer]\n"
      "tls_cert_file = 'unbalanced\"\n"
      "tls_key_file = \"\"\n"
      "tls_ca_file = '\n");
  // The TLS values above are kept as written; check them without the TLS validation.
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()),
              HasSubstr("[peer] tls_cert_file: cannot read the file: "));
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("got ''unbalanced\"'"));

  c = LoadOne(
      "[DEFAULT]\n"
      "state_path: /srv/x=y\n"
      "[replication]\n"
      "replica_path = /srv/a;b ;c # d\n"
      "[libvirt]\n"
      "connection_uri = \"qemu+ssh://root@h$$1/system\"\n"
      "[peer]\n"
      "tls_key_file = \"\"\n"
      "listen_address = \\$x:1\n");
  ASSERT_FALSE(c.ok());  // "$x:1" is not host:port-shaped
  EXPECT_EQ(c.status().message(),
            dir_ +
                "/agent.conf: [peer] listen_address: the host may only hold letters, digits, "
                "'-', '.' and '_', got '$x:1'");

  c = LoadOne(
      "[DEFAULT]\n"
      "state_path: /srv/x=y\n"
      "[replication]\n"
      "replica_path = /srv/a;b ;c # d\n"
      "[libvirt]\n"
      "connection_uri = \"qemu+ssh://root@h$$1/system\"\n"
      "[peer]\n"
      "tls_key_file = \"\"\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->replication.replica_path, "/srv/a;b ;c # d");
  EXPECT_EQ(c->defaults.state_path, "/srv/x=y");
  EXPECT_EQ(c->libvirt.connection_uri, "qemu+ssh://root@h$1/system");
  EXPECT_EQ(c->peer.tls_key_file, "");
}

TEST_F(ConfigLoaderTest, CommentsOnlyAtLineStart) {
  StatusOr<AgentConfig> c = LoadOne(
      "; a comment\n"
      "# another\n"
      "[DEFAULT]\n"
      "#host = commented-out\n"
      ";host = commented-out\n"
      "host = h\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->defaults.host, "h");
}

TEST_F(ConfigLoaderTest, ContinuationLinesJoinWithNewline) {
  StatusOr<AgentConfig> c = LoadOne(
      "[DEFAULT]\n"
      "host = h\n"
      "[peer]\n"
      "peers = compute-2=10.0.0.2:7070,\n"
      "  compute-3=10.0.0.3:7070 ;not a comment,\n"
      "\tcompute-4=10.0.0.4:7070\n"
      "\n"
      "hello_interval_ms = 100\n");
  ASSERT_FALSE(c.ok());  // the "; not a comment" part is part of the value
  EXPECT_EQ(c.status().message(),
            dir_ +
                "/agent.conf: [peer] peers: the port must be an integer in 1..65535, "
                "got 'compute-3=10.0.0.3:7070 ;not a comment'");

  c = LoadOne(
      "[DEFAULT]\n"
      "host = h\n"
      "[peer]\n"
      "peers = compute-2=10.0.0.2:7070,\n"
      "  compute-3=10.0.0.3:7070,\n"
      "\tcompute-4=10.0.0.4:7070\n"
      "hello_interval_ms = 100\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->peer.peers, ElementsAre(PeerEndpoint{"compute-2", "10.0.0.2:7070"},
                                         PeerEndpoint{"compute-3", "10.0.0.3:7070"},
                                         PeerEndpoint{"compute-4", "10.0.0.4:7070"}));
  EXPECT_EQ(c->peer.hello_interval_ms, 100);
}

TEST_F(ConfigLoaderTest, IndentedCommentIsAContinuationAsInOslo) {
  // inih drops "  # ..." as a comment; oslo.config appends it to the value above.
  EXPECT_EQ(Error("[replication]\nepoch_ms = 100\n  # fast\n"),
            dir_ +
                "/agent.conf: [replication] epoch_ms: expected an integer in 10..10000, "
                "got '100\\n# fast'");
}

TEST_F(ConfigLoaderTest, ContinuationAfterBlankOrCommentLineIsAnError) {
  // inih would join these to the value above; oslo.config raises "Unexpected continuation".
  EXPECT_EQ(Error("[DEFAULT]\nhost = h\n\n  more\n"),
            dir_ +
                "/agent.conf: line 4: unexpected continuation line (an indented line "
                "continues the value above it; a blank or comment line ends that value)");
  EXPECT_THAT(Error("[DEFAULT]\nhost = h\n# c\n  more\n"), HasSubstr("/agent.conf: line 4: "));
  // Right after a section header (inih would read it as a new key).
  EXPECT_THAT(Error("[DEFAULT]\n  host = h\n"),
              HasSubstr("/agent.conf: line 2: unexpected continuation line"));
}

TEST_F(ConfigLoaderTest, SyntaxErrors) {
  EXPECT_EQ(Error("[DEFAULT]\nhost = h\njust words\n"),
            dir_ + "/agent.conf: line 3: expected 'key = value' (no ':' or '=' found)");
  EXPECT_EQ(Error("host = h\n"),
            dir_ + "/agent.conf: line 1: assignment before any [section] header");
  EXPECT_EQ(Error("[DEFAULT] x\n"),
            dir_ + "/agent.conf: line 1: invalid section header (must end with ']')");
  EXPECT_EQ(Error("[]\n"), dir_ + "/agent.conf: line 1: empty section name");
  EXPECT_EQ(Error("[DEFAULT]\n= v\n"), dir_ + "/agent.conf: line 2: empty key");
  EXPECT_EQ(Error(std::string("[DEFAULT]\nhost = a\0b\n", 21)),
            dir_ + "/agent.conf: line 2: NUL byte in the line");
}

TEST_F(ConfigLoaderTest, LongLinesAndLineEndings) {
  // inih (Debian build) has a 200-byte line buffer; the value must still come out whole.
  std::string url = "rabbit://";
  for (int i = 1; i <= 4; ++i) {
    if (i > 1) url += ",";
    url += "nova-dt-agent:0123456789abcdef0123456789abcdef@controller-" + std::to_string(i) +
           ".region-one.example.org:5672";
  }
  url += "/nova";
  ASSERT_GT(url.size(), 300u);
  StatusOr<AgentConfig> c =
      LoadOne("[DEFAULT]\r\nhost = h\r\ntransport_url = " + url + "\r\nlog_level = error\r");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->defaults.transport_url, url);
  ASSERT_EQ(c->defaults.transport.hosts.size(), 4u);
  EXPECT_EQ(c->defaults.transport.hosts[3].hostname, "controller-4.region-one.example.org");
  EXPECT_EQ(c->defaults.transport.virtual_host, "nova");
  EXPECT_EQ(c->defaults.log_level, "error");
}

TEST_F(ConfigLoaderTest, SubstitutionIsRefused) {
  EXPECT_EQ(Error("[DEFAULT]\nhost = $other\n"),
            dir_ +
                "/agent.conf: [DEFAULT] host: '$other' substitution is not supported by "
                "nova-dt (write '$$' for a literal '$'), got '$other'");
  EXPECT_THAT(Error("[replication]\nreplica_path = ${DEFAULT.state_path}/r\n"),
              HasSubstr("[replication] replica_path: '${DEFAULT.state_path}' substitution"));
  // In a transport URL neither the placeholder nor the password is shown.
  const std::string msg = Error("[DEFAULT]\ntransport_url = rabbit://dt:pa$word@ctl1/\n");
  EXPECT_EQ(msg, dir_ +
                     "/agent.conf: [DEFAULT] transport_url: a '$name' substitution is not "
                     "supported by nova-dt (write '$$' for a literal '$'), got "
                     "'rabbit://dt:***@ctl1/'");
  // A '$' that starts no placeholder stays as it is (string.Template.safe_substitute).
  StatusOr<AgentConfig> c = LoadOne("[replication]\nreplica_path = /a$ $1\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->replication.replica_path, "/a$ $1");
}

// Host names become identities checked against certificates and paths: only well-formed ones.
TEST_F(ConfigLoaderTest, HostNamesAreCheckedAndTheSecurityOptionsRead) {
  EXPECT_THAT(Error("[DEFAULT]\nhost = ../x\n"),
              HasSubstr("[DEFAULT] host: host name must be 1-255 characters"));
  EXPECT_THAT(Error("[peer]\npeers = a b=10.0.0.1:7070\n"),
              HasSubstr("[peer] peers: the peer's host name must be"));
  EXPECT_THAT(Error("[replication]\ndefault_backup_host = x/y\n"),
              HasSubstr("[replication] default_backup_host: host name must be"));
  StatusOr<AgentConfig> c = LoadOne("[DEFAULT]\nhost = compute-1.example.org\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->peer.allow_insecure) << "TLS by default";
  EXPECT_FALSE(c->witness.allow_none) << "no automatic failover without a witness by default";
  c = LoadOne("[peer]\nallow_insecure = true\n[witness]\nallow_none = yes\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->peer.allow_insecure);
  EXPECT_TRUE(c->witness.allow_none);
}

TEST_F(ConfigLoaderTest, UnknownSectionsAndKeysAreWarnedAbout) {
  CapturedLog log;
  const std::string path = Write("agent.conf",
                                 "[DEFAULT]\nhost = h\nhots = typo\n"
                                 "[default]\nlog_level = debug\n"
                                 "[oslo_messaging_rabbit]\nrabbit_login_method = PLAIN\n");
  StatusOr<AgentConfig> c = LoadAgentConfig({path});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->defaults.log_level, "info");  // "[default]" is not DEFAULT
  const std::vector<std::string> lines = log.Lines();
  EXPECT_THAT(lines, testing::Contains("warning " + path +
                                       ": [DEFAULT] hots: unknown option, "
                                       "ignored"));
  EXPECT_THAT(lines, testing::Contains("warning " + path +
                                       ": [default] log_level: unknown "
                                       "option, ignored"));
  EXPECT_THAT(lines, testing::Contains("warning " + path +
                                       ": [oslo_messaging_rabbit] rabbit_login_method: "
                                       "unknown option, ignored"));
}

TEST_F(ConfigLoaderTest, EveryIntegerIsRangeChecked) {
  struct IntOption {
    std::string section, key, min, max;
  };
  const std::vector<IntOption> options = {
      {"libvirt", "keepalive_interval_s", "1", "600"},
      {"libvirt", "keepalive_count", "1", "100"},
      {"libvirt", "reconnect_max_backoff_ms", "100", "600000"},
      {"peer", "hello_interval_ms", "50", "60000"},
      {"peer", "link_stats_interval_s", "0", "3600"},
      {"peer", "link_capacity_mbit", "1", "10000000"},
      {"replication", "epoch_ms", "10", "10000"},
      {"replication", "degrade_after_ms", "100", "600000"},
      {"replication", "heartbeat_timeout_ms", "50", "60000"},
      {"replication", "heartbeat_interval_ms", "10", "10000"},
      {"replication", "failure_phi_threshold", "1", "50"},
      {"replication", "max_epoch_bytes", "1048576", "68719476736"},
      {"replication", "max_boot_file_bytes", "1048576", "17179869184"},
      {"oslo_messaging_rabbit", "heartbeat_timeout_threshold", "0", "3600"},
      {"oslo_messaging_rabbit", "rabbit_retry_interval", "1", "3600"},
      {"oslo_messaging_rabbit", "rabbit_retry_backoff", "0", "3600"},
      {"oslo_messaging_rabbit", "rabbit_interval_max", "1", "3600"},
      {"oslo_messaging_rabbit", "rabbit_qos_prefetch_count", "0", "65535"},
      {"oslo_messaging_rabbit", "rabbit_transient_queues_ttl", "1", "2592000"},
      {"oslo_messaging_notifications", "max_queued", "1", "10000000"},
      {"nova_notifications", "prefetch_count", "1", "65535"},
      {"nova_notifications", "max_message_bytes", "1024", "67108864"},
  };
  for (const IntOption& o : options) {
    const std::string below = std::to_string(std::stoll(o.min) - 1);
    const std::string above = std::to_string(std::stoll(o.max) + 1);
    for (const std::string& bad : {below, above, std::string("ten"), std::string("1.5"),
                                   std::string(""), std::string("1__0")}) {
      SCOPED_TRACE(o.key + " = " + bad);
      EXPECT_EQ(Error("[" + o.section + "]\n" + o.key + " = " + bad + "\n"),
                dir_ + "/agent.conf: [" + o.section + "] " + o.key + ": expected an integer in " +
                    o.min + ".." + o.max + ", got '" + bad + "'");
    }
    for (const std::string& good : {o.min, o.max}) {
      SCOPED_TRACE(o.key + " = " + good);
      StatusOr<AgentConfig> c = LoadOne("[" + o.section + "]\n" + o.key + " = " + good + "\n");
      EXPECT_TRUE(c.ok()) << c.status();
    }
  }
}

TEST_F(ConfigLoaderTest, BadStrings) {
  const std::string f = dir_ + "/agent.conf";
  EXPECT_EQ(Error("[DEFAULT]\nlog_level = verbose\n"),
            f + ": [DEFAULT] log_level: expected one of debug, info, warning, error, "
                "got 'verbose'");
  EXPECT_EQ(Error("[DEFAULT]\nlog_level = INFO\n"),
            f + ": [DEFAULT] log_level: expected one of debug, info, warning, error, got 'INFO'");
  EXPECT_EQ(Error("[DEFAULT]\nhost =\n"),
            f + ": [DEFAULT] host: must not be empty (it defaults to this machine's hostname), "
                "got ''");
  EXPECT_EQ(Error("[DEFAULT]\nstate_path = var/lib\n"),
            f + ": [DEFAULT] state_path: expected an absolute path, got 'var/lib'");
  EXPECT_EQ(Error("[replication]\nreplica_path = replicas\n"),
            f + ": [replication] replica_path: expected an absolute path, got 'replicas'");
  EXPECT_EQ(Error("[libvirt]\nconnection_uri = qemu\n"),
            f + ": [libvirt] connection_uri: expected a libvirt URI such as 'qemu:///system', "
                "got 'qemu'");
}

TEST_F(ConfigLoaderTest, RestoreAllowListDirectories) {
  StatusOr<AgentConfig> d = LoadOne("[DEFAULT]\nhost = c1\n");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->libvirt.instances_path, "/var/lib/nova/instances");
  EXPECT_TRUE(d->libvirt.restore_file_dirs.empty());

  StatusOr<AgentConfig> c = LoadOne(
      "[libvirt]\ninstances_path = /srv/nova/instances\n"
      "restore_file_dirs = /work/main/build/guest, /var/log/libvirt\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->libvirt.instances_path, "/srv/nova/instances");
  EXPECT_THAT(c->libvirt.restore_file_dirs,
              ElementsAre("/work/main/build/guest", "/var/log/libvirt"));

  const std::string f = dir_ + "/agent.conf";
  EXPECT_EQ(Error("[libvirt]\ninstances_path = nova/instances\n"),
            f + ": [libvirt] instances_path: expected an absolute path other than / without a "
                "trailing '/', got 'nova/instances'");
  EXPECT_EQ(Error("[libvirt]\ninstances_path = /\n"),
            f + ": [libvirt] instances_path: expected an absolute path other than / without a "
                "trailing '/', got '/'");
  EXPECT_EQ(Error("[libvirt]\ninstances_path = /var/lib/nova/instances/\n"),
            f + ": [libvirt] instances_path: expected an absolute path other than / without a "
                "trailing '/', got '/var/lib/nova/instances/'");
  EXPECT_EQ(Error("[libvirt]\ninstances_path = /var/lib/nova/../../etc\n"),
            f + ": [libvirt] instances_path: expected a path without empty, '.' or '..' "
                "components, got '/var/lib/nova/../../etc'");
  EXPECT_EQ(Error("[libvirt]\nrestore_file_dirs = /srv/kernels, /var//log\n"),
            f + ": [libvirt] restore_file_dirs: expected a path without empty, '.' or '..' "
                "components, got '/var//log'");
  EXPECT_EQ(Error("[libvirt]\nrestore_file_dirs = /srv/kernels,\n"),
            f + ": [libvirt] restore_file_dirs: empty item in the comma-separated list, got "
                "'/srv/kernels,'");
}

TEST_F(ConfigLoaderTest, BadAddresses) {
  const std::string f = dir_ + "/agent.conf";
  auto listen = [&](const std::string& value) {
    return Error("[peer]\nlisten_address = " + value + "\n");
  };
  EXPECT_EQ(listen("10.0.0.1"),
            f + ": [peer] listen_address: expected 'host:port', '[ipv6]:port' or 'unix:/path', "
                "got '10.0.0.1'");
  EXPECT_EQ(listen("::1:7070"),
            f + ": [peer] listen_address: an IPv6 address must be in brackets, got '::1:7070'");
  EXPECT_EQ(listen("[::1]7070"),
            f + ": [peer] listen_address: expected '[ipv6]:port', got '[::1]7070'");
  EXPECT_EQ(listen("[::1:7070"),
            f + ": [peer] listen_address: missing ']' after the IPv6 address, got '[::1:7070'");
  EXPECT_EQ(listen("[zz]:7070"),
            f + ": [peer] listen_address: not an IPv6 address in brackets, got '[zz]:7070'");
  EXPECT_EQ(listen("host:65536"),
            f + ": [peer] listen_address: the port must be an integer in 0..65535, "
                "got 'host:65536'");
  EXPECT_EQ(listen("host:x"),
            f + ": [peer] listen_address: the port must be an integer in 0..65535, got 'host:x'");
  EXPECT_EQ(listen(":7070"), f + ": [peer] listen_address: empty host, got ':7070'");
  EXPECT_EQ(Error("[DEFAULT]\ncontrol_address = unix:run/agent.sock\n"),
            f + ": [DEFAULT] control_address: a unix socket needs an absolute path, as in "
                "'unix:/run/nova-dt/agent.sock', got 'unix:run/agent.sock'");
  // Port 0 (pick a free port) is fine for listening, as tests do.
  StatusOr<AgentConfig> c =
      LoadOne("[DEFAULT]\ncontrol_address = [::1]:0\n[peer]\nlisten_address = localhost:0\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->peer.listen_address, "localhost:0");
}

TEST_F(ConfigLoaderTest, PeerTlsAllThreeOrNone) {
  const std::string f = dir_ + "/agent.conf";
  const std::string cert = Write("c.pem", "x");
  const std::string key = Write("k.pem", "x");
  // Missing where required: the last file of the list is named.
  const std::string first = Write("01.conf", "[peer]\ntls_cert_file = " + cert + "\n");
  const std::string second = Write("02.conf", "[peer]\ntls_key_file = " + key + "\n");
  StatusOr<AgentConfig> c = LoadAgentConfig({first, second});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(),
            second +
                ": [peer] tls_ca_file: the peer TLS files go together: set tls_cert_file, "
                "tls_key_file and tls_ca_file, or none of them, got ''");
  // Set but empty in a file: that file is named.
  EXPECT_EQ(
      Error("[peer]\ntls_cert_file = " + cert + "\ntls_key_file =\ntls_ca_file = " + cert + "\n"),
      f + ": [peer] tls_key_file: the peer TLS files go together: set tls_cert_file, "
          "tls_key_file and tls_ca_file, or none of them, got ''");
}

TEST_F(ConfigLoaderTest, TlsFilesMustBeReadable) {
  const std::string f = dir_ + "/agent.conf";
  const std::string cert = Write("c.pem", "x");
  EXPECT_EQ(Error("[peer]\ntls_cert_file = " + cert + "\ntls_key_file = " + dir_ +
                  "/missing.key\ntls_ca_file = " + cert + "\n"),
            f + ": [peer] tls_key_file: cannot read the file: No such file or directory, got '" +
                dir_ + "/missing.key'");
  EXPECT_EQ(Error("[peer]\ntls_cert_file = " + dir_ + "\ntls_key_file = " + cert +
                  "\ntls_ca_file = " + cert + "\n"),
            f + ": [peer] tls_cert_file: not a regular file, got '" + dir_ + "'");
  // A FIFO named by mistake is refused at once (nothing blocks on opening it).
  const std::string fifo = dir_ + "/fifo.pem";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(Error("[peer]\ntls_cert_file = " + fifo + "\ntls_key_file = " + cert +
                  "\ntls_ca_file = " + cert + "\n"),
            f + ": [peer] tls_cert_file: not a regular file, got '" + fifo + "'");
  EXPECT_EQ(Error("[witness]\ntls_ca_file = /nonexistent/ca.pem\n"),
            f + ": [witness] tls_ca_file: cannot read the file: No such file or directory, "
                "got '/nonexistent/ca.pem'");
  EXPECT_EQ(Error("[witness]\ntls_cert_file = " + cert + "\n"),
            f + ": [witness] tls_key_file: tls_cert_file and tls_key_file go together: set "
                "both or neither, got ''");
}

TEST_F(ConfigLoaderTest, BadPeers) {
  const std::string f = dir_ + "/agent.conf";
  auto peers = [&](const std::string& value) { return Error("[peer]\npeers = " + value + "\n"); };
  EXPECT_EQ(peers("compute-2"), f + ": [peer] peers: expected 'host=address' items, as in "
                                    "'compute-2=10.0.0.2:7070', got 'compute-2'");
  EXPECT_EQ(peers("=10.0.0.2:7070"), f + ": [peer] peers: empty host before '=', "
                                         "got '=10.0.0.2:7070'");
  EXPECT_EQ(peers("c2=10.0.0.2"),
            f + ": [peer] peers: expected 'host:port', '[ipv6]:port' or 'unix:/path', "
                "got 'c2=10.0.0.2'");
  EXPECT_EQ(peers("c2=10.0.0.2:0"),
            f + ": [peer] peers: the port must be an integer in 1..65535, got 'c2=10.0.0.2:0'");
  EXPECT_EQ(peers("c2=10.0.0.2:7070,c2=10.0.0.3:7070"),
            f + ": [peer] peers: duplicate peer host 'c2', got 'c2=10.0.0.3:7070'");
  EXPECT_EQ(peers("c2=10.0.0.2:7070,c3=10.0.0.2:7070"),
            f + ": [peer] peers: duplicate peer address '10.0.0.2:7070', "
                "got 'c3=10.0.0.2:7070'");
  EXPECT_EQ(peers("c2=10.0.0.2:7070,"),
            f + ": [peer] peers: empty item in the comma-separated list, got 'c2=10.0.0.2:7070,'");
}

TEST_F(ConfigLoaderTest, BadEtcdEndpoints) {
  const std::string f = dir_ + "/agent.conf";
  auto endpoints = [&](const std::string& value) {
    return Error("[witness]\netcd_endpoints = " + value + "\n");
  };
  EXPECT_EQ(endpoints("ftp://etcd:2379"),
            f + ": [witness] etcd_endpoints: expected 'http://host:port' or 'https://host:port' "
                "items, got 'ftp://etcd:2379'");
  EXPECT_EQ(endpoints("etcd:2379"),
            f + ": [witness] etcd_endpoints: expected 'http://host:port' or 'https://host:port' "
                "items, got 'etcd:2379'");
  EXPECT_EQ(endpoints("http://etcd"),
            f + ": [witness] etcd_endpoints: expected 'host:port' or '[ipv6]:port', "
                "got 'http://etcd'");
  EXPECT_EQ(endpoints("http://etcd:2379/v3"),
            f + ": [witness] etcd_endpoints: the port must be an integer in 1..65535, "
                "got 'http://etcd:2379/v3'");
  EXPECT_EQ(endpoints("http://unix:/run/etcd.sock"),
            f + ": [witness] etcd_endpoints: a unix socket is not allowed here, "
                "got 'http://unix:/run/etcd.sock'");
  EXPECT_EQ(endpoints("http://a:2379,http://a:2379"),
            f + ": [witness] etcd_endpoints: duplicate endpoint, got 'http://a:2379'");
  EXPECT_EQ(endpoints("http://a:2379,https://b:2379"),
            f + ": [witness] etcd_endpoints: mixes http:// and https:// endpoints: use one "
                "scheme for all, got 'https://b:2379'");
  EXPECT_EQ(endpoints("https://a:2379,"),
            f + ": [witness] etcd_endpoints: empty item in the comma-separated list, "
                "got 'https://a:2379,'");
}

TEST_F(ConfigLoaderTest, WitnessTlsFilesNeedHttps) {
  const std::string f = dir_ + "/agent.conf";
  const std::string ca = Write("ca.pem", "x");
  EXPECT_EQ(Error("[witness]\netcd_endpoints = http://a:2379\ntls_ca_file = " + ca + "\n"),
            f + ": [witness] tls_ca_file: TLS files need https:// etcd_endpoints (they are "
                "http://), got '" + ca + "'");
  // Without endpoints (no witness) or with https they are fine.
  EXPECT_TRUE(LoadOne("[witness]\ntls_ca_file = " + ca + "\n").ok());
  StatusOr<AgentConfig> c =
      LoadOne("[witness]\netcd_endpoints = https://a:2379\ntls_ca_file = " + ca + "\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->witness.tls_ca_file, ca);
}

TEST_F(ConfigLoaderTest, WitnessKeyPrefix) {
  const std::string f = dir_ + "/agent.conf";
  for (const std::string bad : {"nova-dt", "/", "/nova-dt/", "/nova dt", ""}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(Error("[witness]\nkey_prefix = " + bad + "\n"),
              f + ": [witness] key_prefix: expected an etcd key prefix such as '/nova-dt': "
                  "starting with '/', not ending with '/', without spaces or control "
                  "characters, got '" + bad + "'");
  }
  StatusOr<AgentConfig> c = LoadOne("[witness]\nkey_prefix = /a/b.c_d-e\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->witness.key_prefix, "/a/b.c_d-e");
}

TEST_F(ConfigLoaderTest, WitnessIntegersAreRangeChecked) {
  struct IntOption {
    std::string key, min, max, others;  // `others` keeps the cross-checks satisfied
  };
  const std::vector<IntOption> options = {
      {"lease_ttl_ms", "1000", "600000", "fence_margin_ms = 100\nrequest_timeout_ms = 50\n"},
      {"fence_margin_ms", "100", "300000", "lease_ttl_ms = 600000\n"},
      {"request_timeout_ms", "50", "60000", "lease_ttl_ms = 600000\n"},
  };
  for (const IntOption& o : options) {
    const std::string below = std::to_string(std::stoll(o.min) - 1);
    const std::string above = std::to_string(std::stoll(o.max) + 1);
    for (const std::string& bad : {below, above, std::string("ten"), std::string("")}) {
      SCOPED_TRACE(o.key + " = " + bad);
      EXPECT_EQ(Error("[witness]\n" + o.others + o.key + " = " + bad + "\n"),
                dir_ + "/agent.conf: [witness] " + o.key + ": expected an integer in " + o.min +
                    ".." + o.max + ", got '" + bad + "'");
    }
    for (const std::string& good : {o.min, o.max}) {
      SCOPED_TRACE(o.key + " = " + good);
      StatusOr<AgentConfig> c = LoadOne("[witness]\n" + o.others + o.key + " = " + good + "\n");
      EXPECT_TRUE(c.ok()) << c.status();
    }
  }
}

TEST_F(ConfigLoaderTest, WitnessTimingsMustFitTheLease) {
  const std::string f = dir_ + "/agent.conf";
  EXPECT_EQ(Error("[witness]\nlease_ttl_ms = 2500\n"),
            f + ": [witness] lease_ttl_ms: must be whole seconds (etcd lease TTLs count "
                "seconds), got '2500'");
  // TTL too short for the default margin: the TTL is blamed, as it is the one set.
  EXPECT_EQ(Error("[witness]\nlease_ttl_ms = 1000\n"),
            f + ": [witness] lease_ttl_ms: must be at least twice fence_margin_ms (1000): the "
                "owner renews every lease_ttl_ms/3 and its fence deadline (last renewal + TTL - "
                "margin) must stay ahead of the next renewal, got '1000'");
  EXPECT_EQ(Error("[witness]\nfence_margin_ms = 1600\n"),
            f + ": [witness] fence_margin_ms: must be at most half of lease_ttl_ms (3000): the "
                "owner renews every lease_ttl_ms/3 and its fence deadline (last renewal + TTL - "
                "margin) must stay ahead of the next renewal, got '1600'");
  EXPECT_EQ(Error("[witness]\nlease_ttl_ms = 4000\nfence_margin_ms = 2001\n"),
            f + ": [witness] fence_margin_ms: must be at most half of lease_ttl_ms (4000): the "
                "owner renews every lease_ttl_ms/3 and its fence deadline (last renewal + TTL - "
                "margin) must stay ahead of the next renewal, got '2001'");
  EXPECT_EQ(Error("[witness]\nrequest_timeout_ms = 1001\n"),
            f + ": [witness] request_timeout_ms: must be at most lease_ttl_ms/3 (1000): a "
                "keep-alive must time out before the next one is due, got '1001'");
  EXPECT_EQ(Error("[witness]\nlease_ttl_ms = 2000\nfence_margin_ms = 500\n"),
            f + ": [witness] lease_ttl_ms: must be at least 3 times request_timeout_ms (1000): "
                "a keep-alive must time out before the next one is due, got '2000'");
  StatusOr<AgentConfig> c = LoadOne(
      "[witness]\nlease_ttl_ms = 2000\nfence_margin_ms = 1000\nrequest_timeout_ms = 666\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->witness.lease_ttl_ms, 2000);
  // The option it replaced is refused rather than silently ignored.
  EXPECT_EQ(Error("[witness]\nlease_ttl_s = 5\n"),
            f + ": [witness] lease_ttl_s: replaced by lease_ttl_ms (milliseconds, whole "
                "seconds), got '5'");
}

TEST_F(ConfigLoaderTest, BadTransportUrlsNeverShowThePassword) {
  const std::string f = dir_ + "/agent.conf";
  std::string msg = Error("[DEFAULT]\ntransport_url = rabbit://dt:s3cret@ctl1:abc/\n");
  EXPECT_EQ(msg, f + ": [DEFAULT] transport_url: host #1: the port is not an integer, "
                     "got 'rabbit://***@ctl1:abc/'");
  msg = Error("[DEFAULT]\ntransport_url = amqp://dt:s3cret@ctl1:5672/\n");
  EXPECT_EQ(msg, f + ": [DEFAULT] transport_url: unsupported transport 'amqp' (nova-dt speaks "
                     "only to RabbitMQ: use rabbit:// or kombu://), got "
                     "'amqp://dt:***@ctl1:5672/'");
  msg = Error("[oslo_messaging_notifications]\ntransport_url = dt:s3cret@ctl1\n");
  EXPECT_EQ(msg, f + ": [oslo_messaging_notifications] transport_url: unsupported transport "
                     "'dt' (nova-dt speaks only to RabbitMQ: use rabbit:// or kombu://), "
                     "got '***@ctl1'");
  msg = Error("[DEFAULT]\ntransport_url = rabbit://dt:s3cret@:5672/\n");
  EXPECT_EQ(msg, f + ": [DEFAULT] transport_url: host #1 has no hostname, "
                     "got 'rabbit://dt:***@:5672/'");
  msg = Error("[DEFAULT]\ntransport_url = //dt:s3cret@ctl1/\n");
  EXPECT_THAT(msg, HasSubstr("[DEFAULT] transport_url: no scheme specified"));
  EXPECT_THAT(msg, Not(HasSubstr("s3cret")));
}

TEST_F(ConfigLoaderTest, MixedCredentialsAreWarnedAbout) {
  CapturedLog log;
  StatusOr<AgentConfig> c =
      LoadOne("[DEFAULT]\nhost = h\ntransport_url = rabbit://dt:s3cret@ctl1,ctl2/\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->defaults.transport.hosts[1].username, "");  // not copied from ctl1
  EXPECT_THAT(log.Lines(),
              testing::Contains(HasSubstr("transport_url: all hosts must be set with "
                                          "username/password or not at the same time, got "
                                          "'rabbit://dt:***@ctl1,ctl2/'")));
}

TEST_F(ConfigLoaderTest, UnreadableConfigFiles) {
  StatusOr<AgentConfig> c = LoadAgentConfig({dir_ + "/missing.conf"});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.status().message(),
            dir_ + "/missing.conf: cannot read config file: No such file or directory");
  c = LoadAgentConfig({Write("ok.conf", "[DEFAULT]\n"), dir_});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(), dir_ + ": cannot read config file: Is a directory");
}

TEST_F(ConfigLoaderTest, SampleFileLoadsAndShowsTheDefaults) {
  const std::string sample_path =
      std::string(NOVA_DT_SOURCE_DIR) + "/deploy/nova-dt-agent.conf.sample";
  std::ifstream in(sample_path);
  ASSERT_TRUE(in) << sample_path;
  // Uncomment every "#key = default" line whose default is a literal value.
  std::string uncommented, line;
  int options = 0;
  while (std::getline(in, line)) {
    // "#key = value" or "#key =" (an empty default).
    const size_t eq = line.find(" =");
    const bool option = line.size() > 1 && line[0] == '#' && line[1] >= 'a' && line[1] <= 'z' &&
                        eq != std::string::npos &&
                        line.find_first_not_of("abcdefghijklmnopqrstuvwxyz_", 1) == eq &&
                        (eq + 2 == line.size() || line[eq + 2] == ' ');
    if (option) ++options;
    uncommented += (option && line.find('<') == std::string::npos ? line.substr(1) : line) + "\n";
  }
  EXPECT_EQ(options, 72);

  CapturedLog log;
  StatusOr<AgentConfig> from_sample = LoadAgentConfig({Write("sample.conf", uncommented)});
  ASSERT_TRUE(from_sample.ok()) << from_sample.status();
  EXPECT_THAT(log.Lines(), testing::IsEmpty());  // no unknown option in the sample
  StatusOr<AgentConfig> defaults = LoadAgentConfig({});
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  // Every option the sample shows with a literal default has the code's default.
  EXPECT_TRUE(*from_sample == *defaults) << "a default in the sample differs from the code's";
  EXPECT_EQ(from_sample->replication.heartbeat_timeout_ms, 500);  // the comparison is not vacuous
}

TEST_F(ConfigLoaderTest, BusOptions) {
  StatusOr<AgentConfig> d = LoadOne("[DEFAULT]\nhost = c1\n");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->defaults.control_exchange, "nova_dt");
  EXPECT_FALSE(d->rabbit.amqp_durable_queues);
  EXPECT_EQ(d->rabbit.heartbeat_timeout_threshold, 60);
  EXPECT_TRUE(d->notifications.driver.empty());
  EXPECT_THAT(d->notifications.topics, ElementsAre("notifications"));
  EXPECT_EQ(d->nova_notifications.queue, "nova_dt_agent.versioned_notifications.c1");
  EXPECT_THAT(d->nova_notifications.topics, ElementsAre("versioned_notifications"));
  EXPECT_EQ(d->replication.default_backup_host, "");

  StatusOr<AgentConfig> c = LoadOne(
      "[DEFAULT]\nhost = c1\ncontrol_exchange = openstack\n"
      "[oslo_messaging_rabbit]\namqp_durable_queues = True\nrabbit_quorum_queue = yes\n"
      "heartbeat_timeout_threshold = 10\nrabbit_retry_interval = 2\nrabbit_retry_backoff = 0\n"
      "rabbit_interval_max = 5\nrabbit_qos_prefetch_count = 7\n"
      "rabbit_transient_queues_ttl = 60\nssl = on\n"
      "[oslo_messaging_notifications]\ndriver = messagingv2\ntopics = a, b\n"
      "exchange = dt\nmax_queued = 5\n"
      "[nova_notifications]\nenabled = false\nexchange = nova2\n"
      "topics = versioned_notifications, vn2\nqueue = q1\nprefetch_count = 3\n"
      "max_message_bytes = 2048\ndead_letter_exchange = dlx\n"
      "[replication]\ndefault_backup_host = c2\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->defaults.control_exchange, "openstack");
  EXPECT_TRUE(c->rabbit.amqp_durable_queues);
  EXPECT_TRUE(c->rabbit.rabbit_quorum_queue);
  EXPECT_EQ(c->rabbit.heartbeat_timeout_threshold, 10);
  EXPECT_EQ(c->rabbit.rabbit_retry_interval, 2);
  EXPECT_EQ(c->rabbit.rabbit_retry_backoff, 0);
  EXPECT_EQ(c->rabbit.rabbit_interval_max, 5);
  EXPECT_EQ(c->rabbit.rabbit_qos_prefetch_count, 7);
  EXPECT_EQ(c->rabbit.rabbit_transient_queues_ttl, 60);
  EXPECT_TRUE(c->rabbit.ssl);
  EXPECT_THAT(c->notifications.driver, ElementsAre("messagingv2"));
  EXPECT_THAT(c->notifications.topics, ElementsAre("a", "b"));
  EXPECT_EQ(c->notifications.exchange, "dt");
  EXPECT_EQ(c->notifications.max_queued, 5);
  EXPECT_FALSE(c->nova_notifications.enabled);
  EXPECT_EQ(c->nova_notifications.exchange, "nova2");
  EXPECT_THAT(c->nova_notifications.topics, ElementsAre("versioned_notifications", "vn2"));
  EXPECT_EQ(c->nova_notifications.queue, "q1");
  EXPECT_EQ(c->nova_notifications.prefetch_count, 3);
  EXPECT_EQ(c->nova_notifications.max_message_bytes, 2048);
  EXPECT_EQ(c->nova_notifications.dead_letter_exchange, "dlx");
  EXPECT_EQ(c->replication.default_backup_host, "c2");
}

TEST_F(ConfigLoaderTest, BadBusOptions) {
  const std::string f = dir_ + "/agent.conf: ";
  EXPECT_EQ(Error("[oslo_messaging_rabbit]\nssl = maybe\n"),
            f + "[oslo_messaging_rabbit] ssl: expected a boolean (true/false, yes/no, on/off, "
                "1/0), got 'maybe'");
  EXPECT_EQ(Error("[oslo_messaging_rabbit]\nrabbit_quorum_queue = true\nrabbit_ha_queues = true\n"),
            f + "[oslo_messaging_rabbit] rabbit_ha_queues: rabbit_quorum_queue and "
                "rabbit_ha_queues are mutually exclusive, got 'true'");
  EXPECT_THAT(Error("[oslo_messaging_rabbit]\nssl_ca_file = /nonexistent/ca.pem\n"),
              HasSubstr("[oslo_messaging_rabbit] ssl_ca_file: cannot read the file"));
  EXPECT_EQ(Error("[oslo_messaging_notifications]\ndriver = log\n"),
            f + "[oslo_messaging_notifications] driver: the agent supports the drivers "
                "messagingv2, messaging and noop, got 'log'");
  EXPECT_EQ(Error("[oslo_messaging_notifications]\ntopics =\n"),
            f + "[oslo_messaging_notifications] topics: expected at least one item, got ''");
  EXPECT_EQ(Error("[nova_notifications]\nqueue = my queue\n"),
            f + "[nova_notifications] queue: an AMQP name may not hold spaces or control "
                "characters, got 'my queue'");
  EXPECT_EQ(Error("[nova_notifications]\nexchange =\n"),
            f + "[nova_notifications] exchange: expected an AMQP name of 1..255 bytes, got ''");
  EXPECT_EQ(Error("[nova_notifications]\ntopics = a,,b\n"),
            f + "[nova_notifications] topics: empty item in the comma-separated list, got 'a,,b'");
  EXPECT_THAT(Error("[nova_notifications]\nprefetch_count = 0\n"),
              HasSubstr("[nova_notifications] prefetch_count: expected an integer in 1..65535"));
  EXPECT_EQ(Error("[DEFAULT]\nhost = c1\n[replication]\ndefault_backup_host = c1\n"),
            f + "[replication] default_backup_host: the backup must be another host than this "
                "one, got 'c1'");
}

TEST_F(ConfigLoaderTest, ReprotectHostsMustBeOtherPeers) {
  StatusOr<AgentConfig> d = LoadOne("[DEFAULT]\nhost = c1\n");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->replication.reprotect_hosts.empty());  // the controller's job by default
  const std::string peers = "[DEFAULT]\nhost = c1\n[peer]\npeers = c2=10.0.0.2:7070, c3=10.0.0.3:7070\n";
  StatusOr<AgentConfig> c = LoadOne(peers + "[replication]\nreprotect_hosts = c3, c2\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->replication.reprotect_hosts, ElementsAre("c3", "c2"));
  const std::string f = dir_ + "/agent.conf: ";
  EXPECT_EQ(Error(peers + "[replication]\nreprotect_hosts = c2, c4\n"),
            f + "[replication] reprotect_hosts: 'c4' is not one of [peer] peers, got 'c2, c4'");
  EXPECT_EQ(Error(peers + "[replication]\nreprotect_hosts = c1\n"),
            f + "[replication] reprotect_hosts: 'c1' is this host, got 'c1'");
}

TEST_F(ConfigLoaderTest, ErrorsAreOneLine) {
  // A multi-line value shows as one line in the message.
  const std::string msg = Error("[DEFAULT]\nlog_level = info\n  debug\n");
  EXPECT_EQ(msg, dir_ +
                     "/agent.conf: [DEFAULT] log_level: expected one of debug, info, "
                     "warning, error, got 'info\\ndebug'");
}

// Who QEMU runs as: spelt as qemu.conf spells it (a name or "+N"); looked up only when the agent
// starts (daemon/main.cc), so a host without the account still loads the file.
TEST_F(ConfigLoaderTest, QemuUserAndGroup) {
  StatusOr<AgentConfig> d = LoadOne("");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->libvirt.qemu_user, "libvirt-qemu");
  EXPECT_EQ(d->libvirt.qemu_group, "libvirt-qemu");
  StatusOr<AgentConfig> c = LoadOne("[libvirt]\nqemu_user = +64055\nqemu_group = kvm\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->libvirt.qemu_user, "+64055");
  EXPECT_EQ(c->libvirt.qemu_group, "kvm");
  c = LoadOne("[libvirt]\nqemu_user = no-such-user-here\n");
  ASSERT_TRUE(c.ok()) << c.status();

  const std::string f = dir_ + "/agent.conf";
  EXPECT_EQ(Error("[libvirt]\nqemu_user =\n"),
            f + ": [libvirt] qemu_user: expected a user or group name, or +N, got ''");
  EXPECT_EQ(Error("[libvirt]\nqemu_group = +x1\n"),
            f + ": [libvirt] qemu_group: expected a user or group name, or +N, got '+x1'");
  EXPECT_EQ(Error("[libvirt]\nqemu_user = qemu:qemu\n"),
            f + ": [libvirt] qemu_user: expected a user or group name, or +N, got 'qemu:qemu'");
}

}  // namespace
}  // namespace novadt::config
