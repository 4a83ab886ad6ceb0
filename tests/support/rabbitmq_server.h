// A private RabbitMQ node for tests. It never touches the system service: its own epmd, node
// name, AMQP / distribution / epmd ports (all on 127.0.0.1), Erlang cookie, config, data and logs
// under a scratch directory that the destructor removes after stopping everything it started.
// Two fixtures (or a system broker) can run side by side. If the test process dies without
// running the destructor, a watchdog process kills the node and epmd within about a second.
//
// Not thread-safe: one test thread drives it.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "tests/support/test_util.h"

namespace novadt::testing {

class RabbitMqServer {
 public:
  struct Options {
    // Also listen with TLS on tls_port(), with a CA and server/client certificates made by the
    // openssl CLI (CN and SAN "localhost", SAN IP 127.0.0.1). The broker verifies a client
    // certificate when one is presented.
    bool tls = false;
    // With `tls`: refuse TLS clients without a certificate (fail_if_no_peer_cert).
    bool tls_require_client_cert = false;
    // How long Start() waits for the node to accept AMQP connections.
    std::chrono::seconds start_timeout{60};
    // Run epmd, the node and rabbitmqctl through this command prefix, e.g. a rig's
    // `rig exec net` to put the broker in the rig's switch namespace. Readiness is then judged by
    // `rabbitmqctl await_startup` alone (this process may not reach the listener).
    std::vector<std::string> exec_prefix;
    // Address of the AMQP listener (and of url()). Not loopback: the guest user may log in
    // from other addresses (loopback_users = none).
    std::string listen_ip = "127.0.0.1";
  };

  // Picks the ports and writes the configuration; starts nothing.
  explicit RabbitMqServer(Options options);
  RabbitMqServer() : RabbitMqServer(Options{}) {}
  // Stop(), then removes the scratch directory.
  ~RabbitMqServer();
  RabbitMqServer(const RabbitMqServer&) = delete;
  RabbitMqServer& operator=(const RabbitMqServer&) = delete;

  // Starts epmd (unless running) and the node, and waits until the node answers the AMQP
  // protocol header and `rabbitmqctl await_startup` succeeds. On failure (the node exited, or
  // the deadline passed) the node is killed and the error carries the tail of its log.
  // REQUIRES: the node is not running.
  absl::Status Start();
  // Stops the node gracefully (SIGTERM; SIGKILL after 30 s) and then epmd. Idempotent.
  absl::Status Stop();
  // Stops the node gracefully and starts it again on the same ports and data directory, so
  // durable queues and persistent messages survive. epmd keeps running.
  absl::Status Restart();
  // SIGKILLs the node (abrupt broker loss); Start() brings it back on the same data.
  void Kill();
  bool running() const { return node_ != nullptr; }

  int port() const { return amqp_port_; }
  // 0 unless Options::tls.
  int tls_port() const { return tls_port_; }
  // "rabbit://guest:guest@127.0.0.1:<port>/"
  std::string url() const;
  const std::string& node_name() const { return node_name_; }
  const std::string& dir() const { return scratch_.path(); }

  // With Options::tls: the CA that signed the server and client certificates, a client
  // certificate and key, and a second CA that signed nothing (for verification failures).
  std::string ca_file() const { return dir() + "/tls/ca.pem"; }
  std::string client_cert_file() const { return dir() + "/tls/client.pem"; }
  std::string client_key_file() const { return dir() + "/tls/client.key"; }
  std::string other_ca_file() const { return dir() + "/tls/other-ca.pem"; }

  // Runs `rabbitmqctl -q -n <node> <args...>` with the node's environment; *output gets its
  // combined output. Fails with the output when the command exits non-zero.
  // Example: Ctl({"list_queues", "--no-table-headers", "name", "durable", "messages"}, &out).
  absl::Status Ctl(const std::vector<std::string>& args, std::string* output = nullptr) const;

  // The last `lines` lines of the node's console output (its log).
  std::string LogTail(int lines = 40) const;
  // Wall time of the last successful Start().
  std::chrono::milliseconds last_start_duration() const { return last_start_duration_; }

 private:
  absl::Status StartNode();
  absl::Status StopNode();
  absl::Status WriteTlsFiles();
  void RecordProcessGroups() const;
  std::vector<std::string> WithEnv(const std::string& program,
                                   const std::vector<std::string>& args) const;

  Options options_;
  ScratchDir scratch_;
  std::string node_name_;
  int amqp_port_ = 0;
  int tls_port_ = 0;
  int dist_port_ = 0;
  int epmd_port_ = 0;
  std::vector<std::string> env_;  // "NAME=value" for epmd, the node and rabbitmqctl
  std::unique_ptr<Subprocess> epmd_;
  std::unique_ptr<Subprocess> node_;
  // Kills epmd and the node and removes dir() if this test process dies without running the
  // destructor (a ctest timeout, a crash): they run in their own process groups.
  std::unique_ptr<Subprocess> watchdog_;
  std::chrono::milliseconds last_start_duration_{0};
};

}  // namespace novadt::testing
