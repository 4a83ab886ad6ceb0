// A private single-member etcd (Debian's etcd-server, /usr/bin/etcd) for tests. It never touches
// the system service: its own name, client and peer ports (both on 127.0.0.1, picked free), and
// data directory under a scratch directory that the destructor removes after stopping etcd.
// Several can run side by side. If the test process dies without running the destructor, etcd
// dies with it (PR_SET_PDEATHSIG through `setpriv --pdeathsig KILL`) and a watchdog process
// removes the scratch directory within about a second.
//
// With Options::tls the client port speaks TLS only, with a server certificate for "localhost"
// made by TestPki, and clients must dial "localhost:<port>" (endpoint()/address() do).
// With Options::auth as well, etcd's authentication is on and takes a client's user name from
// its certificate's common name (docs/witness.md, "etcd's own access control"); AddUser() makes
// users limited to a key prefix. Set-up goes through Debian's etcdctl (etcd-client).
//
// Not thread-safe: one test thread drives it.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "tests/support/test_pki.h"
#include "tests/support/test_util.h"

namespace novadt::testing {

class EtcdServer {
 public:
  struct Options {
    // TLS on the client port (server certificate for "localhost" signed by the PKI's "ca").
    bool tls = false;
    // With tls: clients must present a certificate signed by "ca" (--client-cert-auth).
    bool client_cert_auth = true;
    // With tls and client_cert_auth: the first Start() enables etcd's authentication, with user
    // "root" (role root) whose certificate is cert_file("root"). Every other client is then the
    // etcd user named by its certificate's common name; an unknown name has no rights.
    bool auth = false;
    // Raft timing (ms). etcd's minimum lease TTL is ceil(1.5 x election_timeout) s: the
    // defaults (etcd's) give 2 s.
    int heartbeat_interval_ms = 100;
    int election_timeout_ms = 1000;
    // How long Start() waits for etcd to serve clients.
    std::chrono::seconds start_timeout{30};
    // Runs etcd under this command prefix (e.g. Rig::ExecPrefix("net"): the rig's switch
    // namespace, reachable from both hosts) and listens on `listen_ip` there. Readiness is then
    // taken from etcd's log alone (the port is not reachable from here). Not with tls.
    std::vector<std::string> exec_prefix;
    std::string listen_ip = "127.0.0.1";
  };

  // Picks the ports (and makes the certificates); starts nothing.
  explicit EtcdServer(Options options);
  EtcdServer() : EtcdServer(Options{}) {}
  // Kill(), then removes the scratch directory.
  ~EtcdServer();
  EtcdServer(const EtcdServer&) = delete;
  EtcdServer& operator=(const EtcdServer&) = delete;

  // Starts etcd and waits until it serves clients (it logs "serving client traffic" once it
  // has a leader and published itself, and the client port accepts connections). On failure
  // (binary missing, etcd exited, deadline passed) etcd is killed and the error carries the
  // tail of its log. REQUIRES: not running.
  absl::Status Start();
  // SIGTERM, SIGKILL after 10 s. Idempotent. The data directory stays.
  absl::Status Stop();
  // Stop() and Start() on the same ports and data directory: keys and leases survive.
  absl::Status Restart();
  // SIGKILL (abrupt loss); Start() brings it back on the same data.
  void Kill();
  bool running() const { return etcd_ != nullptr; }

  int client_port() const { return client_port_; }
  // "127.0.0.1:<port>", or "localhost:<port>" with TLS: what EtcdClientOptions takes.
  std::string address() const;
  // "http://127.0.0.1:<port>" or "https://localhost:<port>": what [witness] etcd_endpoints takes.
  std::string endpoint() const;
  const std::string& dir() const { return scratch_.path(); }

  // With Options::tls: the CA that signed the server's certificate, a client certificate and
  // key it signed ("compute-1"), and an unrelated CA.
  std::string ca_file() const;
  std::string client_cert_file() const;
  std::string client_key_file() const;
  std::string other_ca_file() const;

  // With Options::tls: makes certificate `name` (cert_file(name), key_file(name)) whose common
  // name and DNS name are `common_name`, for client and server use, signed by `ca`: "ca" (the
  // CA etcd trusts) or "other-ca" (one it does not). Fails the current test when openssl fails.
  void IssueCertificate(const std::string& name, const std::string& common_name,
                        const std::string& ca = "ca");
  std::string cert_file(const std::string& name) const;
  std::string key_file(const std::string& name) const;

  // With Options::auth, while running: makes etcd user `user` with a role of the same name that
  // grants readwrite on every key starting with `key_prefix` (and nothing else), and its client
  // certificate `user` (common name `user`, signed by "ca"). The error carries etcdctl's output.
  absl::Status AddUser(const std::string& user, const std::string& key_prefix);

  std::string LogTail(int lines = 30) const;

 private:
  std::string log_path() const { return dir() + "/etcd.log"; }
  // Runs etcdctl against this etcd with client certificate "root" (before authentication is
  // enabled anyone may administer etcd; after, the user root may).
  absl::Status Etcdctl(const std::vector<std::string>& args) const;
  // Makes user root and enables authentication (once: etcd keeps it in its data directory).
  absl::Status EnableAuth();

  Options options_;
  ScratchDir scratch_;
  std::unique_ptr<TestPki> pki_;
  std::string name_;
  int client_port_ = 0;
  int peer_port_ = 0;
  bool auth_enabled_ = false;
  std::unique_ptr<Subprocess> etcd_;
  std::unique_ptr<Subprocess> watchdog_;
};

}  // namespace novadt::testing
