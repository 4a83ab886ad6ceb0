// C++ handle on the two-host test rig (tests/rig/rig and tests/rig/rig-agent): bring-up,
// commands inside a host, the test guest, the observer and the agents. See tests/rig/README.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "agent/common/status.h"

namespace novadt::testing {

class Rig {
 public:
  // Names the rig (1-8 chars [a-z0-9], $NOVA_DT_RIG_SUFFIX appended when set); nothing starts
  // until Up().
  explicit Rig(std::string name);
  // Tears the rig down (bounded) if Up() was called, whatever happened in between.
  ~Rig();
  Rig(const Rig&) = delete;
  Rig& operator=(const Rig&) = delete;

  // `rig up` (+ observer). The error carries the rig's own output.
  Status Up(const std::string& netem = "");
  // `rig down`; afterwards VerifyGone() tells whether anything was left behind.
  Status Down();
  Status VerifyGone() const;

  // Runs a command inside host "a"/"b"/"net"; returns its exit code, output in *out.
  int Exec(const std::string& host, const std::vector<std::string>& argv,
           std::string* out = nullptr) const;
  // The command prefix that runs a program inside host "a"/"b"/"net" (for long-running helpers
  // started with their own process management, e.g. a broker in the switch namespace).
  std::vector<std::string> ExecPrefix(const std::string& host) const;
  // The switch namespace's address (the observer's), reachable from both hosts.
  static constexpr const char* kNetAddress = "198.18.0.100";
  // Who the hosts' libvirtds run QEMU as: Debian's default (tests/rig/README.md). Anything a
  // test hands QEMU by path must be reachable by it (agent/common/file_owner.h).
  static constexpr const char* kQemuUser = "libvirt-qemu";
  static constexpr const char* kQemuGroup = "libvirt-qemu";
  // `rig netem HOST ARGS` ("delay 50ms 20ms loss 5%", or "clear"): impairs HOST's link.
  Status Netem(const std::string& host, const std::string& args);
  // `rig boot-guest`; `options` are more guest options of the rig (e.g. "--nova-instance-dir").
  Status BootGuest(const std::string& host, const std::string& name, const std::string& uuid,
                   int memory_mib = 256, const std::vector<std::string>& options = {});
  // `rig kill HOST`: the host loses power (SIGKILL to every process of its namespaces: libvirtd,
  // QEMU, the agent); its files stay.
  Status Kill(const std::string& host);
  // Counter values the observer received so far, in arrival order.
  std::vector<int64_t> ObserverValues() const;

  Status StartAgent(const std::string& host, const std::vector<std::string>& overrides = {});
  // Stops the agent with SIGTERM (SIGKILL when `kill`); returns its exit code.
  StatusOr<int> StopAgent(const std::string& host, bool kill = false);
  // unix:… address of the agent's control API in `host`.
  std::string AgentControlAddress(const std::string& host) const;
  // libvirt URI reaching `host`'s libvirtd from outside the rig.
  std::string LibvirtUri(const std::string& host) const;
  std::string dir() const { return dir_; }

 private:
  // `script` (rig or rig-agent) with this rig's environment.
  std::vector<std::string> ScriptCommand(const std::string& script) const;
  int Script(const std::string& script, const std::vector<std::string>& args,
             std::string* out = nullptr, int timeout_s = 120) const;

  std::string name_;
  std::string dir_;
  bool up_ = false;
};

}  // namespace novadt::testing
