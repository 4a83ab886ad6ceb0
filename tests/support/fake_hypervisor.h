// A core::Hypervisor that records QMP commands and answers them from a script; any command can
// be made to fail (LevelDB FaultInjectionTestEnv style). Thread-safe.
#pragma once

#include <unistd.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/core/hypervisor.h"

namespace novadt::testing {

class FakeHypervisor final : public core::Hypervisor {
 public:
  // Reply for an "execute" name: a function of the arguments returning a full QMP reply.
  using Handler = std::function<nlohmann::json(const nlohmann::json& arguments)>;

  // Answers `execute` with {"return": value}.
  void Returns(const std::string& execute, nlohmann::json value) {
    On(execute, [value](const nlohmann::json&) { return nlohmann::json{{"return", value}}; });
  }
  void On(const std::string& execute, Handler h) {
    std::lock_guard<std::mutex> lock(mu_);
    handlers_[execute] = std::make_shared<Handler>(std::move(h));
  }
  // The next command with this "execute" gets a QMP error of `cls`.
  void FailNext(const std::string& execute, const std::string& cls = "GenericError",
                const std::string& desc = "injected failure") {
    std::lock_guard<std::mutex> lock(mu_);
    failures_[execute].push_back({cls, desc});
  }
  // Every command sent, as compact JSON text, in order.
  std::vector<std::string> Commands() {
    std::lock_guard<std::mutex> lock(mu_);
    return commands_;
  }
  void ClearCommands() {
    std::lock_guard<std::mutex> lock(mu_);
    commands_.clear();
  }

  bool connected() const override { return true; }
  unsigned reconnects() const override { return 0; }
  std::string uri() const override { return "fake://"; }
  StatusOr<core::DomainInfo> LookupDomain(std::string_view uuid) override {
    return core::DomainInfo{std::string(uuid), "fake", core::DomainState::kRunning, 1};
  }
  StatusOr<std::vector<core::DomainInfo>> ListDomains() override { return std::vector<core::DomainInfo>{}; }

  std::string domain_xml = "<domain type='qemu'><name>fake</name></domain>";
  std::vector<Disk> disks = {{"vda", 1 << 20}};
  StatusOr<std::string> DomainXml(std::string_view) override { return domain_xml; }
  StatusOr<std::vector<Disk>> ListDisks(std::string_view) override { return disks; }

  // The fd is dup()ed and kept under the command's "fdname" (getfd) for TakeFd().
  StatusOr<std::string> QemuMonitorCommandWithFd(std::string_view uuid, std::string_view qmp_json,
                                                 int fd) override {
    const nlohmann::json cmd = nlohmann::json::parse(qmp_json);
    {
      std::lock_guard<std::mutex> lock(mu_);
      const std::string name = cmd.value("arguments", nlohmann::json::object()).value("fdname", "");
      if (fds_.count(name)) ::close(fds_[name]);
      fds_[name] = ::dup(fd);
    }
    return QemuMonitorCommand(uuid, qmp_json);
  }
  // The fd passed with `getfd` under `fdname` (the caller owns it now), or -1.
  int TakeFd(const std::string& fdname) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = fds_.find(fdname);
    if (it == fds_.end()) return -1;
    const int fd = it->second;
    fds_.erase(it);
    return fd;
  }
  ~FakeHypervisor() override {
    for (auto& [name, fd] : fds_) ::close(fd);
  }

  // Disk capture is recorded as pseudo-commands "capture-start <disk> <socket> <export>",
  // "capture-stop <disk>"; it is ready at once.
  Status StartDiskCapture(std::string_view, std::string_view disk, std::string_view socket,
                          std::string_view export_name) override {
    std::lock_guard<std::mutex> lock(mu_);
    commands_.push_back("capture-start " + std::string(disk) + " " + std::string(socket) + " " +
                        std::string(export_name));
    return absl::OkStatus();
  }
  StatusOr<bool> DiskCaptureReady(std::string_view, std::string_view) override { return true; }
  Status StopDiskCapture(std::string_view, std::string_view disk) override {
    std::lock_guard<std::mutex> lock(mu_);
    commands_.push_back("capture-stop " + std::string(disk));
    return absl::OkStatus();
  }

  StatusOr<std::string> QemuMonitorCommand(std::string_view, std::string_view qmp_json) override {
    const nlohmann::json cmd = nlohmann::json::parse(qmp_json);
    const std::string execute = cmd.value("execute", "");
    std::shared_ptr<Handler> handler;  // shared, so a stateful handler keeps its state
    {
      std::lock_guard<std::mutex> lock(mu_);
      commands_.push_back(cmd.dump());
      auto& f = failures_[execute];
      if (!f.empty()) {
        auto [cls, desc] = f.front();
        f.erase(f.begin());
        return nlohmann::json{{"error", {{"class", cls}, {"desc", desc}}}}.dump();
      }
      auto it = handlers_.find(execute);
      if (it != handlers_.end()) handler = it->second;
    }
    const nlohmann::json args = cmd.value("arguments", nlohmann::json::object());
    return (handler ? (*handler)(args) : nlohmann::json{{"return", nlohmann::json::object()}}).dump();
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Handler>> handlers_;
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> failures_;
  std::vector<std::string> commands_;
  std::map<std::string, int> fds_;
};

}  // namespace novadt::testing
