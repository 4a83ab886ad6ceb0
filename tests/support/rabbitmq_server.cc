#include "tests/support/rabbitmq_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>
#include <sstream>
#include <thread>

namespace novadt::testing {
namespace {

// The Debian package's scripts; /usr/sbin/rabbitmq-server would `su rabbitmq` and use the
// system's /var/lib/rabbitmq.
constexpr char kServer[] = "/usr/lib/rabbitmq/bin/rabbitmq-server";
constexpr char kCtl[] = "/usr/lib/rabbitmq/bin/rabbitmqctl";
constexpr auto kStopTimeout = std::chrono::seconds(30);

std::atomic<int> g_instances{0};

// True when 127.0.0.1:port answers the AMQP 0-9-1 protocol header with a method frame
// (connection.start), i.e. the broker's listener is up, not just the port open.
bool AnswersAmqp(int port) {
  const ScopedFd conn = ConnectLoopback(port);
  const int fd = conn.get();
  bool ok = false;
  if (conn.valid()) {
    static const char kHeader[] = {'A', 'M', 'Q', 'P', 0, 0, 9, 1};
    if (send(fd, kHeader, sizeof kHeader, MSG_NOSIGNAL) == sizeof kHeader) {
      pollfd p{fd, POLLIN, 0};
      unsigned char frame_type = 0;
      ok = poll(&p, 1, 2000) == 1 && recv(fd, &frame_type, 1, 0) == 1 && frame_type == 1;
    }
  }
  return ok;
}

std::string RandomCookie() {
  std::random_device rd;
  std::string s(20, 'A');
  for (char& c : s) c = static_cast<char>('A' + rd() % 26);
  return s;
}

}  // namespace

RabbitMqServer::RabbitMqServer(Options options)
    : options_(options), scratch_("nova-dt-rabbitmq") {
  node_name_ = "novadt-" + std::to_string(getpid()) + "-" + std::to_string(g_instances++) +
               "@localhost";
  // Distinct ports: FreeTcpPort() may hand out the same one twice.
  std::set<int> used;
  auto pick = [&used] {
    for (;;) {
      int p = FreeTcpPort();
      if (p > 0 && used.insert(p).second) return p;
    }
  };
  amqp_port_ = pick();
  dist_port_ = pick();
  epmd_port_ = pick();
  if (options_.tls) tls_port_ = pick();

  const std::string& d = scratch_.path();
  std::filesystem::create_directories(d + "/home");
  std::filesystem::create_directories(d + "/mnesia");
  std::filesystem::create_directories(d + "/log");
  // The server and rabbitmqctl must share a cookie; an Erlang VM that finds none creates one,
  // and a CLI started before the node would then use a different one.
  const std::string cookie = scratch_.Write("home/.erlang.cookie", RandomCookie());
  chmod(cookie.c_str(), 0400);

  std::ostringstream conf;
  const bool loopback = options_.listen_ip == "127.0.0.1";
  conf << "listeners.tcp.1 = " << options_.listen_ip << ":" << amqp_port_ << "\n"
       << (loopback ? "loopback_users.guest = true\n" : "loopback_users = none\n")
       << "log.console = true\n"
       << "log.console.level = info\n"
       << "log.file = false\n";
  if (options_.tls) {
    conf << "listeners.ssl.1 = 127.0.0.1:" << tls_port_ << "\n"
         << "ssl_options.cacertfile = " << ca_file() << "\n"
         << "ssl_options.certfile = " << d << "/tls/server.pem\n"
         << "ssl_options.keyfile = " << d << "/tls/server.key\n"
         << "ssl_options.verify = verify_peer\n"
         << "ssl_options.fail_if_no_peer_cert = "
         << (options_.tls_require_client_cert ? "true" : "false") << "\n";
  }
  scratch_.Write("rabbitmq.conf", conf.str());
  scratch_.Write("enabled_plugins", "[].\n");
  scratch_.Write("rabbitmq-env.conf", "");  // instead of /etc/rabbitmq/rabbitmq-env.conf

  const std::string loopback_dist = "-kernel inet_dist_use_interface {127,0,0,1}";
  env_ = {
      "HOME=" + d + "/home",
      "ERL_EPMD_PORT=" + std::to_string(epmd_port_),
      "ERL_EPMD_ADDRESS=127.0.0.1",
      "RABBITMQ_NODENAME=" + node_name_,
      "RABBITMQ_USE_LONGNAME=false",
      "RABBITMQ_NODE_IP_ADDRESS=" + options_.listen_ip,
      "RABBITMQ_NODE_PORT=" + std::to_string(amqp_port_),
      "RABBITMQ_DIST_PORT=" + std::to_string(dist_port_),
      "RABBITMQ_CONF_ENV_FILE=" + d + "/rabbitmq-env.conf",
      "RABBITMQ_CONFIG_FILE=" + d + "/rabbitmq.conf",
      "RABBITMQ_ADVANCED_CONFIG_FILE=" + d + "/advanced.config",
      "RABBITMQ_ENABLED_PLUGINS_FILE=" + d + "/enabled_plugins",
      "RABBITMQ_MNESIA_BASE=" + d + "/mnesia",
      "RABBITMQ_LOG_BASE=" + d + "/log",
      "RABBITMQ_PID_FILE=" + d + "/rabbitmq.pid",
      "ERL_CRASH_DUMP=" + d + "/erl_crash.dump",  // not into the cwd (the source tree)
      "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=" + loopback_dist,
      "RABBITMQ_CTL_ERL_ARGS=" + loopback_dist,
  };
}

RabbitMqServer::~RabbitMqServer() {
  (void)Stop();
  watchdog_.reset();
}

void RabbitMqServer::RecordProcessGroups() const {
  std::string groups;
  if (epmd_) groups += std::to_string(epmd_->pid()) + "\n";
  if (node_) groups += std::to_string(node_->pid()) + "\n";
  scratch_.Write("pgids.tmp", groups);
  std::filesystem::rename(dir() + "/pgids.tmp", dir() + "/pgids");
}

std::string RabbitMqServer::url() const {
  return "rabbit://guest:guest@" + options_.listen_ip + ":" + std::to_string(amqp_port_) + "/";
}

std::vector<std::string> RabbitMqServer::WithEnv(const std::string& program,
                                                 const std::vector<std::string>& args) const {
  std::vector<std::string> argv = options_.exec_prefix;
  argv.push_back("env");
  argv.insert(argv.end(), env_.begin(), env_.end());
  argv.push_back(program);
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

absl::Status RabbitMqServer::WriteTlsFiles() {
  const std::string t = dir() + "/tls";
  std::filesystem::create_directories(t);
  scratch_.Write("tls/server.ext",
                 "basicConstraints = CA:FALSE\n"
                 "keyUsage = digitalSignature, keyEncipherment\n"
                 "extendedKeyUsage = serverAuth\n"
                 "subjectAltName = DNS:localhost, IP:127.0.0.1\n");
  scratch_.Write("tls/client.ext",
                 "basicConstraints = CA:FALSE\n"
                 "keyUsage = digitalSignature, keyEncipherment\n"
                 "extendedKeyUsage = clientAuth\n");
  const std::vector<std::string> ec = {"-newkey", "ec", "-pkeyopt",
                                       "ec_paramgen_curve:prime256v1", "-nodes"};
  auto run = [](std::vector<std::string> argv) -> absl::Status {
    std::string out;
    if (RunCommand(argv, &out) != 0) {
      return absl::InternalError("openssl " + argv[1] + " failed: " + LastLines(out, 10));
    }
    return absl::OkStatus();
  };
  auto req = [&](const std::string& name, const std::string& cn, bool self_signed) {
    std::vector<std::string> argv = {"openssl", "req"};
    if (self_signed) argv.insert(argv.end(), {"-x509", "-days", "7"});
    argv.insert(argv.end(), ec.begin(), ec.end());
    argv.insert(argv.end(), {"-keyout", t + "/" + name + ".key", "-out",
                             t + "/" + name + (self_signed ? ".pem" : ".csr"), "-subj",
                             "/CN=" + cn});
    return run(argv);
  };
  auto sign = [&](const std::string& name) {
    return run({"openssl", "x509", "-req", "-in", t + "/" + name + ".csr", "-CA", t + "/ca.pem",
                "-CAkey", t + "/ca.key", "-CAcreateserial", "-days", "7", "-out",
                t + "/" + name + ".pem", "-extfile", t + "/" + name + ".ext"});
  };
  if (auto s = req("ca", "nova-dt test CA", true); !s.ok()) return s;
  if (auto s = req("other-ca", "nova-dt unrelated CA", true); !s.ok()) return s;
  if (auto s = req("server", "localhost", false); !s.ok()) return s;
  if (auto s = sign("server"); !s.ok()) return s;
  if (auto s = req("client", "nova-dt-test-client", false); !s.ok()) return s;
  return sign("client");
}

absl::Status RabbitMqServer::Start() {
  if (node_) return absl::FailedPreconditionError("RabbitMQ node already running");
  if (options_.tls && !std::filesystem::exists(ca_file())) {
    if (auto s = WriteTlsFiles(); !s.ok()) return s;
  }
  if (!watchdog_) {
    // Polls its own parent (this process) once a second without forking for the check.
    static const char kWatchdog[] =
        "parent=$1; dir=$2\n"
        "while read -r _ _ _ ppid _ < /proc/$$/stat && [ \"$ppid\" = \"$parent\" ]; do\n"
        "  sleep 1\n"
        "done\n"
        "for g in $(cat \"$dir/pgids\" 2>/dev/null); do kill -KILL \"-$g\" 2>/dev/null; done\n"
        "rm -rf \"$dir\"\n";
    watchdog_ = std::make_unique<Subprocess>(std::vector<std::string>{
        "sh", "-c", kWatchdog, "nova-dt-rabbitmq-watchdog", std::to_string(getpid()), dir()});
  }
  if (epmd_ && !epmd_->Running()) epmd_.reset();
  if (!epmd_) {
    // Foreground epmd (no -daemon) so it stays our child and dies with us.
    epmd_ = std::make_unique<Subprocess>(
        WithEnv("epmd", {"-port", std::to_string(epmd_port_), "-address", "127.0.0.1"}),
        dir() + "/epmd.log");
  }
  return StartNode();
}

absl::Status RabbitMqServer::StartNode() {
  const auto begin = std::chrono::steady_clock::now();
  const auto deadline = begin + options_.start_timeout;
  node_ = std::make_unique<Subprocess>(WithEnv(kServer, {}), dir() + "/server.out");
  RecordProcessGroups();
  auto fail = [&](const std::string& what) {
    node_.reset();  // SIGKILL to the node's process group
    return absl::UnavailableError("RabbitMQ node " + node_name_ + " " + what +
                                  "; server log tail:\n" + LogTail());
  };
  // Through an exec prefix the listener may be out of this process's reach: the node's own
  // readiness check is the only one.
  while (options_.exec_prefix.empty() && !AnswersAmqp(amqp_port_)) {
    if (!node_->Running()) return fail("exited during start-up");
    if (std::chrono::steady_clock::now() >= deadline) {
      return fail("did not accept AMQP on 127.0.0.1:" + std::to_string(amqp_port_) +
                  " within " + std::to_string(options_.start_timeout.count()) + " s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // The listener starts a few boot steps before the end of the boot.
  std::string out;
  // await_startup fails at once while the node's distribution port is not up yet: retry.
  while (true) {
    absl::Status s = Ctl({"await_startup", "--timeout", "30"}, &out);
    if (s.ok()) break;
    if (!node_->Running()) return fail("exited during start-up");
    if (options_.exec_prefix.empty() || std::chrono::steady_clock::now() >= deadline) {
      return fail("await_startup failed: " + out);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  last_start_duration_ = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - begin);
  return absl::OkStatus();
}

absl::Status RabbitMqServer::StopNode() {
  if (!node_) return absl::OkStatus();
  const pid_t pgid = node_->pid();
  // The start script traps SIGTERM and forwards it to the VM, which shuts down in order.
  node_->Signal(SIGTERM);
  const bool graceful = node_->Wait(kStopTimeout).has_value();
  node_.reset();
  // Anything left in the node's process group (the VM when the script died first).
  kill(-pgid, SIGKILL);
  if (!graceful) {
    return absl::DeadlineExceededError("RabbitMQ node " + node_name_ +
                                       " ignored SIGTERM for 30 s and was killed");
  }
  return absl::OkStatus();
}

absl::Status RabbitMqServer::Stop() {
  absl::Status s = StopNode();
  epmd_.reset();
  return s;
}

absl::Status RabbitMqServer::Restart() {
  if (auto s = StopNode(); !s.ok()) return s;
  return Start();
}

void RabbitMqServer::Kill() {
  if (!node_) return;
  const pid_t pgid = node_->pid();
  kill(-pgid, SIGKILL);
  node_->Wait(std::chrono::seconds(10));
  node_.reset();
}

absl::Status RabbitMqServer::Ctl(const std::vector<std::string>& args,
                                 std::string* output) const {
  std::vector<std::string> full = {"-q", "-n", node_name_};
  full.insert(full.end(), args.begin(), args.end());
  std::string out;
  const int rc = RunCommand(WithEnv(kCtl, full), &out, std::chrono::seconds(60));
  if (output) *output = out;
  if (rc != 0) {
    return absl::InternalError("rabbitmqctl " + (args.empty() ? "" : args[0]) + " exited " +
                               std::to_string(rc) + ": " + LastLines(out, 20));
  }
  return absl::OkStatus();
}

std::string RabbitMqServer::LogTail(int lines) const {
  return LastLines(ReadFile(dir() + "/server.out"), lines);
}

}  // namespace novadt::testing
