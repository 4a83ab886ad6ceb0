// nova-dt-agent: the per-compute-host daemon of nova-dt.
//
//   nova-dt-agent --config-file PATH [--config-file PATH2 ...] [--config-dir DIR]
//
// Exit codes: 0 after an orderly shutdown (SIGTERM/SIGINT), 1 when it cannot start (an API
// address cannot be bound), 2 for bad usage or configuration (one line on stderr naming the
// file, section and key).
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "agent/common/clock.h"
#include "agent/common/file_owner.h"
#include "agent/common/logging.h"
#include "agent/common/version.h"
#include "agent/config/config_loader.h"
#include "agent/rpc/peer_tls.h"
#include "agent/daemon/agent.h"

namespace {

constexpr char kDefaultConfigFile[] = "/etc/nova-dt/nova-dt-agent.conf";
constexpr auto kShutdownBound = std::chrono::seconds(5);

void Usage(FILE* out) {
  std::fprintf(out,
               "usage: nova-dt-agent [--config-file PATH]... [--config-dir DIR] [--version]\n"
               "  --config-file PATH  oslo.config-style INI file; repeat to layer files\n"
               "                      (later ones override). Default: %s\n"
               "  --config-dir DIR    also read DIR/*.conf, sorted, after the files\n",
               kDefaultConfigFile);
}

int UsageError(const std::string& msg) {
  std::fprintf(stderr, "nova-dt-agent: %s\n", msg.c_str());
  Usage(stderr);
  return 2;
}

// Returns true and fills `files` when argv is well formed; otherwise prints why.
bool ParseArgs(int argc, char** argv, std::vector<std::string>* files, int* exit_code) {
  std::vector<std::string> dirs;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    auto take = [&](const std::string& flag) -> bool {
      if (arg == flag) {
        if (i + 1 >= argc) return false;
        value = argv[++i];
        return true;
      }
      if (arg.rfind(flag + "=", 0) == 0) {
        value = arg.substr(flag.size() + 1);
        return true;
      }
      return false;
    };
    if (arg == "--help" || arg == "-h") {
      Usage(stdout);
      *exit_code = 0;
      return false;
    }
    if (arg == "--version") {
      std::printf("nova-dt-agent %s\n", novadt::kVersion);
      *exit_code = 0;
      return false;
    }
    if (take("--config-file")) {
      files->push_back(value);
    } else if (take("--config-dir")) {
      dirs.push_back(value);
    } else {
      *exit_code = UsageError("unknown or incomplete argument '" + arg + "'");
      return false;
    }
  }
  for (const auto& dir : dirs) {
    std::error_code ec;
    std::vector<std::string> found;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
      if (e.path().extension() == ".conf") found.push_back(e.path().string());
    }
    if (ec) {
      *exit_code = UsageError("--config-dir " + dir + ": " + ec.message());
      return false;
    }
    std::sort(found.begin(), found.end());
    files->insert(files->end(), found.begin(), found.end());
  }
  if (files->empty()) {
    if (!std::filesystem::exists(kDefaultConfigFile)) {
      *exit_code = UsageError(std::string("no --config-file given and ") + kDefaultConfigFile +
                              " does not exist");
      return false;
    }
    files->push_back(kDefaultConfigFile);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> files;
  int exit_code = 0;
  if (!ParseArgs(argc, argv, &files, &exit_code)) return exit_code;

  auto cfg = novadt::config::LoadAgentConfig(files);
  if (!cfg.ok()) {
    std::fprintf(stderr, "nova-dt-agent: %s\n", std::string(cfg.status().message()).c_str());
    return 2;
  }
  // The peer link's TLS material must be usable now, not at the first connection.
  if (auto tls = novadt::rpc::PeerCredentials::Load(cfg->peer); !tls.ok()) {
    std::fprintf(stderr, "nova-dt-agent: %s\n", std::string(tls.status().message()).c_str());
    return 2;
  }
  // The user and group QEMU runs as must exist: replica images and capture sockets go to them.
  auto qemu = novadt::ResolveFileOwner(cfg->libvirt.qemu_user, cfg->libvirt.qemu_group);
  if (!qemu.ok()) {
    std::fprintf(stderr, "nova-dt-agent: [libvirt] qemu_user/qemu_group '%s:%s': %s\n",
                 cfg->libvirt.qemu_user.c_str(), cfg->libvirt.qemu_group.c_str(),
                 std::string(qemu.status().message()).c_str());
    return 2;
  }
  if (!novadt::InitLogging(cfg->defaults.log_level)) {
    spdlog::warn("unknown log level '{}', using info", cfg->defaults.log_level);
  }

  // Block the termination signals in every thread (they inherit the mask), and take them on one
  // thread with sigwait(): no work ever runs in a signal handler.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  novadt::SystemClock clock;
  novadt::daemon::Agent agent(*std::move(cfg), clock, *std::move(qemu));

  std::atomic<bool> done{false};
  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    if (done) return;  // woken by main() after Run() returned on its own
    spdlog::info("received {}, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    agent.Stop();
    // Orderly shutdown is bounded: if it has not finished in time, leave anyway.
    std::thread([] {
      std::this_thread::sleep_for(kShutdownBound);
      spdlog::error("shutdown took longer than {} s; exiting", kShutdownBound.count());
      _exit(1);
    }).detach();
  });

  novadt::Status st = agent.Run();
  done = true;
  pthread_kill(signal_thread.native_handle(), SIGTERM);
  signal_thread.join();
  if (!st.ok()) {
    spdlog::critical("cannot start: {}", std::string(st.message()));
    return 1;
  }
  return 0;
}
