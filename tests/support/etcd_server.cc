#include "tests/support/etcd_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <set>
#include <thread>
#include <vector>

namespace novadt::testing {
namespace {

constexpr char kEtcd[] = "/usr/bin/etcd";
constexpr char kEtcdctl[] = "/usr/bin/etcdctl";
constexpr char kSetpriv[] = "/usr/bin/setpriv";
constexpr auto kStopTimeout = std::chrono::seconds(10);

std::atomic<int> g_instances{0};

}  // namespace

EtcdServer::EtcdServer(Options options) : options_(options), scratch_("nova-dt-etcd") {
  name_ = "novadt-" + std::to_string(getpid()) + "-" + std::to_string(g_instances++);
  // Distinct ports: FreeTcpPort() may hand out the same one twice.
  std::set<int> used;
  auto pick = [&used] {
    for (int i = 0; i < 1000; ++i) {
      const int p = FreeTcpPort();
      if (p > 0 && used.insert(p).second) return p;
    }
    return 0;
  };
  client_port_ = pick();
  peer_port_ = pick();
  if (options_.tls) {
    // "localhost" is the server's certificate, "compute-1" a client's; both signed by "ca".
    pki_ = std::make_unique<TestPki>(std::vector<std::string>{"localhost", "compute-1"});
    if (options_.auth) pki_->Issue("root", "ca");
  }
}

EtcdServer::~EtcdServer() {
  Kill();
  watchdog_.reset();
}

std::string EtcdServer::address() const {
  return (options_.tls ? std::string("localhost") : options_.listen_ip) + ":" +
         std::to_string(client_port_);
}

std::string EtcdServer::endpoint() const {
  return std::string(options_.tls ? "https://" : "http://") + address();
}

std::string EtcdServer::ca_file() const { return pki_ ? pki_->Path("ca.pem") : ""; }
std::string EtcdServer::client_cert_file() const { return pki_ ? pki_->Path("compute-1.pem") : ""; }
std::string EtcdServer::client_key_file() const { return pki_ ? pki_->Path("compute-1.key") : ""; }
std::string EtcdServer::other_ca_file() const { return pki_ ? pki_->Path("other-ca.pem") : ""; }
std::string EtcdServer::cert_file(const std::string& name) const {
  return pki_ ? pki_->Path(name + ".pem") : "";
}
std::string EtcdServer::key_file(const std::string& name) const {
  return pki_ ? pki_->Path(name + ".key") : "";
}

void EtcdServer::IssueCertificate(const std::string& name, const std::string& common_name,
                                  const std::string& ca) {
  if (!pki_) {
    ADD_FAILURE() << "EtcdServer::IssueCertificate needs Options::tls";
    return;
  }
  pki_->Issue(common_name, ca, name);
}

absl::Status EtcdServer::Etcdctl(const std::vector<std::string>& args) const {
  if (access(kEtcdctl, X_OK) != 0) {
    return absl::FailedPreconditionError(std::string(kEtcdctl) +
                                         " not found: install Debian's etcd-client "
                                         "(scripts/install-deps)");
  }
  std::vector<std::string> argv = {kEtcdctl,
                                   "--endpoints=" + endpoint(),
                                   "--cacert=" + ca_file(),
                                   "--cert=" + cert_file("root"),
                                   "--key=" + key_file("root"),
                                   "--dial-timeout=5s",
                                   "--command-timeout=10s"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::string out;
  if (RunCommand(argv, &out, std::chrono::seconds(30)) != 0) {
    std::string command = "etcdctl";
    for (const std::string& a : args) command += " " + a;
    return absl::InternalError(command + " failed: " + out);
  }
  return absl::OkStatus();
}

absl::Status EtcdServer::EnableAuth() {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"user", "add", "root", "--no-password"},
                                             {"user", "grant-role", "root", "root"},
                                             {"auth", "enable"}}) {
    if (absl::Status s = Etcdctl(args); !s.ok()) return s;
  }
  auth_enabled_ = true;
  return absl::OkStatus();
}

absl::Status EtcdServer::AddUser(const std::string& user, const std::string& key_prefix) {
  if (!auth_enabled_ || !running()) {
    return absl::FailedPreconditionError("EtcdServer::AddUser needs a running etcd with auth");
  }
  IssueCertificate(user, user, "ca");
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"role", "add", user},
           {"role", "grant-permission", user, "readwrite", "--prefix=true", key_prefix},
           {"user", "add", user, "--no-password"},
           {"user", "grant-role", user, user}}) {
    if (absl::Status s = Etcdctl(args); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status EtcdServer::Start() {
  if (etcd_) return absl::FailedPreconditionError("etcd already running");
  if (!watchdog_) {
    // Removes dir() (etcd preallocates a 64 MB WAL there) and kills etcd, in case the test
    // process dies without running the destructor; polls this process once a second.
    static const char kWatchdog[] =
        "parent=$1; dir=$2\n"
        "while read -r _ _ _ ppid _ < /proc/$$/stat && [ \"$ppid\" = \"$parent\" ]; do\n"
        "  sleep 1\n"
        "done\n"
        "pid=$(cat \"$dir/etcd.pid\" 2>/dev/null) && kill -KILL \"$pid\" 2>/dev/null\n"
        "rm -rf \"$dir\"\n";
    watchdog_ = std::make_unique<Subprocess>(std::vector<std::string>{
        "sh", "-c", kWatchdog, "nova-dt-etcd-watchdog", std::to_string(getpid()), dir()});
  }
  if (access(kEtcd, X_OK) != 0) {
    return absl::FailedPreconditionError(std::string(kEtcd) +
                                         " not found: install Debian's etcd-server "
                                         "(scripts/install-deps)");
  }
  if (client_port_ == 0 || peer_port_ == 0) {
    return absl::InternalError("no free TCP port on 127.0.0.1 for etcd");
  }
  const std::string scheme = options_.tls ? "https://" : "http://";
  const std::string client_listen =
      scheme + options_.listen_ip + ":" + std::to_string(client_port_);
  const std::string client_advertise = endpoint();
  const std::string peer = "http://" + options_.listen_ip + ":" + std::to_string(peer_port_);
  std::vector<std::string> argv = options_.exec_prefix;
  argv.insert(argv.end(), {
      kSetpriv,
      "--pdeathsig",
      "KILL",
      "--",
      kEtcd,
      "--name",
      name_,
      "--data-dir",
      dir() + "/data",
      "--listen-client-urls",
      client_listen,
      "--advertise-client-urls",
      client_advertise,
      "--listen-peer-urls",
      peer,
      "--initial-advertise-peer-urls",
      peer,
      "--initial-cluster",
      name_ + "=" + peer,
      "--initial-cluster-state",
      "new",
      "--initial-cluster-token",
      name_,
      "--heartbeat-interval",
      std::to_string(options_.heartbeat_interval_ms),
      "--election-timeout",
      std::to_string(options_.election_timeout_ms),
      "--logger",
      "zap",
      "--log-outputs",
      "stderr",
  });
  if (options_.tls) {
    argv.insert(argv.end(), {"--cert-file", pki_->Path("localhost.pem"), "--key-file",
                             pki_->Path("localhost.key"), "--trusted-ca-file", ca_file()});
    if (options_.client_cert_auth) argv.push_back("--client-cert-auth");
  }
  if (options_.auth && !(options_.tls && options_.client_cert_auth)) {
    return absl::InvalidArgumentError("EtcdServer: auth needs tls and client_cert_auth");
  }
  // A restart appends to the same log: look for readiness only after this point.
  const size_t log_start = ReadFile(log_path()).size();
  const auto deadline = std::chrono::steady_clock::now() + options_.start_timeout;
  etcd_ = std::make_unique<Subprocess>(argv, log_path());
  scratch_.Write("etcd.pid", std::to_string(etcd_->pid()));
  auto fail = [&](const std::string& what) {
    etcd_.reset();  // SIGKILL
    return absl::UnavailableError("etcd " + name_ + " " + what + "; log tail:\n" + LogTail());
  };
  while (true) {
    if (!etcd_->Running()) return fail("exited during start-up");
    const std::string log = ReadFile(log_path());
    if (log.size() > log_start &&
        log.find("serving client traffic", log_start) != std::string::npos &&
        (!options_.exec_prefix.empty() || ConnectLoopback(client_port_).valid())) {
      if (options_.auth && !auth_enabled_) {
        if (absl::Status s = EnableAuth(); !s.ok()) {
          return fail("could not enable authentication: " + std::string(s.message()));
        }
      }
      return absl::OkStatus();
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return fail("did not serve clients on " + client_listen + " within " +
                  std::to_string(options_.start_timeout.count()) + " s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

absl::Status EtcdServer::Stop() {
  if (!etcd_) return absl::OkStatus();
  etcd_->Signal(SIGTERM);
  const bool graceful = etcd_->Wait(kStopTimeout).has_value();
  etcd_.reset();  // SIGKILLs the process group if still there
  if (!graceful) return absl::DeadlineExceededError("etcd ignored SIGTERM for 10 s; killed");
  return absl::OkStatus();
}

absl::Status EtcdServer::Restart() {
  if (absl::Status s = Stop(); !s.ok()) return s;
  return Start();
}

void EtcdServer::Kill() {
  if (!etcd_) return;
  etcd_->Signal(SIGKILL);
  etcd_->Wait(std::chrono::seconds(10));
  etcd_.reset();
}

std::string EtcdServer::LogTail(int lines) const {
  return LastLines(ReadFile(log_path()), lines);
}

}  // namespace novadt::testing
