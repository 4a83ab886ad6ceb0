#include "tests/support/rig.h"

#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "tests/support/test_util.h"

namespace novadt::testing {
namespace {

const std::string kRig = std::string(NOVA_DT_SOURCE_DIR) + "/tests/rig/rig";
const std::string kRigAgent = std::string(NOVA_DT_SOURCE_DIR) + "/tests/rig/rig-agent";

Status Failed(const std::string& what, const std::string& out) {
  return absl::InternalError(what + " failed:\n" + out);
}

// `name` with $NOVA_DT_RIG_SUFFIX appended (tests/rig/README.md): test runs of two checkouts on
// one machine then never bring up, tear down or share each other's rigs.
std::string RunRigName(std::string name) {
  const char* suffix = std::getenv("NOVA_DT_RIG_SUFFIX");
  return suffix ? name + suffix : name;
}

}  // namespace

Rig::Rig(std::string name)
    : name_(RunRigName(std::move(name))), dir_("/tmp/nova-dt-rig-" + name_) {}

Rig::~Rig() {
  if (up_) (void)Down();
}

int Rig::Script(const std::string& script, const std::vector<std::string>& args,
                std::string* out, int timeout_s) const {
  std::vector<std::string> argv = ScriptCommand(script);
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, out, std::chrono::seconds(timeout_s));
}

Status Rig::Up(const std::string& netem) {
  up_ = true;
  std::string out;
  std::vector<std::string> args = {"up"};
  if (!netem.empty()) args.insert(args.end(), {"--netem", netem});
  if (Script(kRig, args, &out, 90) != 0) return Failed("rig up", out);
  if (Script(kRig, {"observer", "start"}, &out) != 0) return Failed("rig observer start", out);
  return absl::OkStatus();
}

Status Rig::Down() {
  std::string out;
  const int rc = Script(kRig, {"down"}, &out, 60);
  up_ = false;
  return rc == 0 ? absl::OkStatus() : Failed("rig down", out);
}

Status Rig::VerifyGone() const {
  std::string out;
  RunCommand({"ip", "netns", "list"}, &out);
  for (const char* suffix : {"-a", "-b", "-net"}) {
    const std::string ns = name_ + suffix;
    std::istringstream lines(out);
    for (std::string line; std::getline(lines, line);) {
      if (line.substr(0, line.find(' ')) == ns) {
        return absl::InternalError("network namespace " + ns + " left behind");
      }
    }
  }
  if (std::filesystem::exists(dir_)) return absl::InternalError(dir_ + " left behind");
  if (ReadFile("/proc/self/mountinfo").find(dir_) != std::string::npos) {
    return absl::InternalError("mounts under " + dir_ + " left behind");
  }
  return absl::OkStatus();
}

int Rig::Exec(const std::string& host, const std::vector<std::string>& argv,
              std::string* out) const {
  std::vector<std::string> args = {"exec", host};
  args.insert(args.end(), argv.begin(), argv.end());
  return Script(kRig, args, out);
}

std::vector<std::string> Rig::ScriptCommand(const std::string& script) const {
  return {"env", "RIG_NAME=" + name_, "RIG_DIR=" + dir_,
          std::string("NOVA_DT_BUILD=") + NOVA_DT_BINARY_DIR,
          std::string("RIG_GUEST_DIR=") + NOVA_DT_BINARY_DIR + "/guest", script};
}

std::vector<std::string> Rig::ExecPrefix(const std::string& host) const {
  std::vector<std::string> argv = ScriptCommand(kRig);
  argv.insert(argv.end(), {"exec", host});
  return argv;
}

Status Rig::Netem(const std::string& host, const std::string& args) {
  std::string out;
  if (Script(kRig, {"netem", host, args}, &out) != 0) return Failed("rig netem", out);
  return absl::OkStatus();
}

Status Rig::BootGuest(const std::string& host, const std::string& name, const std::string& uuid,
                      int memory_mib, const std::vector<std::string>& options) {
  std::string out;
  std::vector<std::string> args = {"boot-guest", host, name, uuid, "--memory",
                                   std::to_string(memory_mib)};
  args.insert(args.end(), options.begin(), options.end());
  if (Script(kRig, args, &out) != 0) return Failed("rig boot-guest", out);
  return absl::OkStatus();
}

Status Rig::Kill(const std::string& host) {
  std::string out;
  if (Script(kRig, {"kill", host}, &out, 30) != 0) return Failed("rig kill " + host, out);
  return absl::OkStatus();
}

std::vector<int64_t> Rig::ObserverValues() const {
  std::string out;
  Script(kRig, {"observer", "values"}, &out);
  std::vector<int64_t> values;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    try {
      values.push_back(std::stoll(line));
    } catch (...) {
      // Not a value line (e.g. a MISMATCH report): not a counter.
    }
  }
  return values;
}

Status Rig::StartAgent(const std::string& host, const std::vector<std::string>& overrides) {
  std::string out;
  std::vector<std::string> args = {"start", host};
  args.insert(args.end(), overrides.begin(), overrides.end());
  if (Script(kRigAgent, args, &out) != 0) return Failed("rig-agent start " + host, out);
  return absl::OkStatus();
}

StatusOr<int> Rig::StopAgent(const std::string& host, bool kill) {
  std::string out;
  if (Script(kRigAgent, {kill ? "kill" : "stop", host}, &out) != 0) {
    return Failed("rig-agent stop " + host, out);
  }
  return std::stoi(out);
}

std::string Rig::AgentControlAddress(const std::string& host) const {
  return "unix:" + dir_ + "/" + host + "/agent/agent.sock";
}

std::string Rig::LibvirtUri(const std::string& host) const {
  return "qemu+unix:///system?socket=" + dir_ + "/" + host + "/run/libvirt-sock";
}

}  // namespace novadt::testing
