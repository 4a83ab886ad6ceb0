// Helpers shared by nova-dt's C++ tests: scratch directories, child processes, polling.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "agent/common/scoped_fd.h"

namespace novadt::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& prefix = "nova-dt-test");
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }
  // Writes `content` to path()/name and returns the full path.
  std::string Write(const std::string& name, const std::string& content) const;

 private:
  std::string path_;
};

// A child process. Killed (SIGKILL, whole process group) and reaped on destruction unless it
// already exited. stdout+stderr go to `log_path` when given.
class Subprocess {
 public:
  Subprocess(std::vector<std::string> argv, const std::string& log_path = "");
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  void Signal(int sig) const;
  // Waits up to `timeout` for exit; returns the exit code (128+signal when killed), or nullopt
  // when it is still running.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  bool Running();

 private:
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
};

// Runs a command to completion (bounded by `timeout`, then SIGKILL) and returns its exit code;
// its combined output goes to *output when given.
int RunCommand(const std::vector<std::string>& argv, std::string* output = nullptr,
        std::chrono::milliseconds timeout = std::chrono::seconds(60));

// Polls `pred` every 20 ms until it is true or `timeout` passes; returns the last result.
bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout);

// A TCP port on 127.0.0.1 that was free a moment ago.
int FreeTcpPort();
// A blocking TCP connection to 127.0.0.1:`port`; not valid() when nothing accepts there.
ScopedFd ConnectLoopback(int port);
// The last `lines` lines of `text` (all of it when it has fewer).
std::string LastLines(const std::string& text, int lines);

std::string ReadFile(const std::string& path);

// `n` deterministic pseudo-random bytes (xorshift64), different for every `seed`.
inline std::string PseudoRandomBytes(uint64_t seed, size_t n) {
  std::string s(n, '\0');
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s[i] = static_cast<char>(x);
  }
  return s;
}

}  // namespace novadt::testing
