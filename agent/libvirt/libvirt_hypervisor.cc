#include "agent/libvirt/libvirt_hypervisor.h"

#include <algorithm>
#include <atomic>
#include <mutex>

#include <libvirt/libvirt-qemu.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <spdlog/spdlog.h>

#include "agent/libvirt/domain_xml.h"
#include "agent/libvirt/errors.h"
#include "agent/libvirt/event_thread.h"
#include "agent/libvirt/handles.h"

namespace novadt::libvirt {
namespace {

using core::DomainEvent;
using core::DomainInfo;
using core::DomainState;

DomainState FromVirState(int s) {
  switch (s) {
    case VIR_DOMAIN_RUNNING: return DomainState::kRunning;
    case VIR_DOMAIN_BLOCKED: return DomainState::kBlocked;
    case VIR_DOMAIN_PAUSED: return DomainState::kPaused;
    case VIR_DOMAIN_SHUTDOWN: return DomainState::kShutdown;
    case VIR_DOMAIN_SHUTOFF: return DomainState::kShutoff;
    case VIR_DOMAIN_CRASHED: return DomainState::kCrashed;
    case VIR_DOMAIN_PMSUSPENDED: return DomainState::kPmSuspended;
    default: return DomainState::kNoState;
  }
}

DomainEvent::Kind FromVirEvent(int e) {
  switch (e) {
    case VIR_DOMAIN_EVENT_DEFINED: return DomainEvent::Kind::kDefined;
    case VIR_DOMAIN_EVENT_UNDEFINED: return DomainEvent::Kind::kUndefined;
    case VIR_DOMAIN_EVENT_STARTED: return DomainEvent::Kind::kStarted;
    case VIR_DOMAIN_EVENT_SUSPENDED: return DomainEvent::Kind::kSuspended;
    case VIR_DOMAIN_EVENT_RESUMED: return DomainEvent::Kind::kResumed;
    case VIR_DOMAIN_EVENT_STOPPED: return DomainEvent::Kind::kStopped;
    case VIR_DOMAIN_EVENT_SHUTDOWN: return DomainEvent::Kind::kShutdown;
    case VIR_DOMAIN_EVENT_PMSUSPENDED: return DomainEvent::Kind::kPmSuspended;
    case VIR_DOMAIN_EVENT_CRASHED: return DomainEvent::Kind::kCrashed;
    default: return DomainEvent::Kind::kUnknown;
  }
}

std::string DomainUuid(virDomainPtr dom) {
  char buf[VIR_UUID_STRING_BUFLEN] = {};
  if (virDomainGetUUIDString(dom, buf) < 0) return {};
  return buf;
}

StatusOr<DomainInfo> Describe(virDomainPtr dom) {
  DomainInfo info;
  info.uuid = DomainUuid(dom);
  const char* name = virDomainGetName(dom);
  info.name = name ? name : "";
  int state = 0, reason = 0;
  if (virDomainGetState(dom, &state, &reason, 0) < 0) {
    return LastError("cannot read state of domain " + info.uuid);
  }
  info.state = FromVirState(state);
  // A QMP `stop` through the monitor is VIR_DOMAIN_PAUSED_UNKNOWN (qemuProcessHandleStop).
  info.paused_by_monitor = state == VIR_DOMAIN_PAUSED && reason == VIR_DOMAIN_PAUSED_UNKNOWN;
  const unsigned id = virDomainGetID(dom);
  info.id = id == static_cast<unsigned>(-1) ? -1 : static_cast<int>(id);
  return info;
}

// Owns the connection and its callbacks. Everything that touches the connection's lifecycle
// (open, callback registration, close, reconnect) runs on libvirt's event thread; the public
// methods only take a reference to the current connection under mu_.
class LibvirtHypervisor final : public core::Hypervisor {
 public:
  LibvirtHypervisor(const config::LibvirtSection& cfg, core::HypervisorObserver observer)
      : cfg_(cfg), observer_(std::move(observer)), events_(EventThread::Acquire()) {
    events_->RunSync([this] {
      timer_ = virEventAddTimeout(-1, &LibvirtHypervisor::OnTimer, this, nullptr);
      TryConnect();
    });
  }

  ~LibvirtHypervisor() override {
    events_->RunSync([this] {
      shutting_down_ = true;
      if (timer_ >= 0) virEventRemoveTimeout(timer_);
      Disconnect();
    });
  }

  bool connected() const override { return connected_; }
  unsigned reconnects() const override { return reconnects_; }
  std::string uri() const override { return cfg_.connection_uri; }

  StatusOr<DomainInfo> LookupDomain(std::string_view uuid) override {
    auto dom = Lookup(uuid);
    if (!dom.ok()) return dom.status();
    return Describe(dom->get());
  }

  StatusOr<std::vector<DomainInfo>> ListDomains() override {
    ConnectPtr conn = Current();
    if (!conn) return Disconnected();
    virDomainPtr* doms = nullptr;
    const int n = virConnectListAllDomains(conn.get(), &doms, 0);
    if (n < 0) return LastError("cannot list domains");
    std::vector<DomainPtr> owned;
    for (int i = 0; i < n; ++i) owned.emplace_back(doms[i]);
    free(doms);
    std::vector<DomainInfo> out;
    for (auto& d : owned) {
      auto info = Describe(d.get());
      if (info.ok()) out.push_back(*std::move(info));
    }
    return out;
  }

  StatusOr<std::string> QemuMonitorCommand(std::string_view uuid,
                                           std::string_view qmp_json) override {
    auto dom = Lookup(uuid);
    if (!dom.ok()) return dom.status();
    char* raw = nullptr;
    const std::string cmd(qmp_json);
    if (virDomainQemuMonitorCommand(dom->get(), cmd.c_str(), &raw,
                                    VIR_DOMAIN_QEMU_MONITOR_COMMAND_DEFAULT) < 0) {
      return LastError("QMP command to domain " + std::string(uuid) + " failed");
    }
    CString reply(raw);
    return std::string(reply.get());
  }

  StatusOr<std::string> DomainXml(std::string_view uuid) override {
    auto dom = Lookup(uuid);
    if (!dom.ok()) return dom.status();
    CString xml(virDomainGetXMLDesc(dom->get(), 0));
    if (!xml) return LastError("cannot read the definition of domain " + std::string(uuid));
    return std::string(xml.get());
  }

  StatusOr<std::vector<Disk>> ListDisks(std::string_view uuid) override {
    auto xml = DomainXml(uuid);
    if (!xml.ok()) return xml.status();
    auto targets = DiskTargets(*xml);
    if (!targets.ok()) return targets.status();
    auto dom = Lookup(uuid);
    if (!dom.ok()) return dom.status();
    std::vector<Disk> disks;
    for (const auto& target : *targets) {
      virDomainBlockInfo info{};
      if (virDomainGetBlockInfo(dom->get(), target.c_str(), &info, 0) < 0) {
        return LastError("cannot read the size of disk " + target);
      }
      disks.push_back({target, info.capacity});
    }
    return disks;
  }

  StatusOr<std::string> QemuMonitorCommandWithFd(std::string_view uuid,
                                                 std::string_view qmp_json, int fd) override {
    auto dom = Lookup(uuid);
    if (!dom.ok()) return dom.status();
    char* raw = nullptr;
    const std::string cmd(qmp_json);
    int files[1] = {fd};
    if (virDomainQemuMonitorCommandWithFiles(dom->get(), cmd.c_str(), 1, files, nullptr, nullptr,
                                             &raw, VIR_DOMAIN_QEMU_MONITOR_COMMAND_DEFAULT) < 0) {
      return LastError("QMP command with fd to domain " + std::string(uuid) + " failed");
    }
    CString reply(raw);
    return std::string(reply.get());
  }

  Status StartDiskCapture(std::string_view uuid, std::string_view disk,
                          std::string_view socket_path, std::string_view export_name) override {
    auto dom = Lookup(uuid);
    if (!dom.ok()) return dom.status();
    // SPIKE-NOTES.md: the NBD target as a network disk on a unix socket, raw format.
    const std::string xml = "<disk type='network'><driver name='qemu' type='raw'/>"
                            "<source protocol='nbd' name='" + XmlEscape(export_name) +
                            "'><host transport='unix' socket='" + XmlEscape(socket_path) +
                            "'/></source></disk>";
    const std::string d(disk);
    if (virDomainBlockCopy(dom->get(), d.c_str(), xml.c_str(), nullptr, 0,
                           VIR_DOMAIN_BLOCK_COPY_SYNCHRONOUS_WRITES |
                               VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB |
                               VIR_DOMAIN_BLOCK_COPY_REUSE_EXT) < 0) {
      return LastError("block copy of " + d + " into " + std::string(socket_path) + " failed");
    }
    return absl::OkStatus();
  }

  StatusOr<bool> DiskCaptureReady(std::string_view uuid, std::string_view disk) override {
    auto job = BlockJob(uuid, disk);
    if (!job.ok()) return job.status();
    if (!job->running) {
      return absl::FailedPreconditionError("no disk capture runs on " + std::string(disk));
    }
    // A copy job is ready (mirroring) once it has caught up with the whole disk.
    const auto& info = job->info;
    return info.type == VIR_DOMAIN_BLOCK_JOB_TYPE_COPY && info.end > 0 && info.cur == info.end;
  }

  Status StopDiskCapture(std::string_view uuid, std::string_view disk) override {
    auto job = BlockJob(uuid, disk);
    if (!job.ok()) return job.status();
    if (!job->running) return absl::OkStatus();
    if (virDomainBlockJobAbort(job->dom.get(), std::string(disk).c_str(), 0) < 0) {
      return LastError("cannot stop the disk capture of " + std::string(disk));
    }
    return absl::OkStatus();
  }

 private:
  struct JobState {
    DomainPtr dom;
    bool running = false;
    virDomainBlockJobInfo info{};
  };
  // The block job on `disk` of domain `uuid`, if any.
  StatusOr<JobState> BlockJob(std::string_view uuid, std::string_view disk) {
    auto dom = Lookup(uuid);
    if (!dom.ok()) return dom.status();
    JobState job{*std::move(dom)};
    const std::string d(disk);
    const int r = virDomainGetBlockJobInfo(job.dom.get(), d.c_str(), &job.info, 0);
    if (r < 0) return LastError("cannot read the block job of " + d);
    job.running = r == 1;
    return job;
  }

  static std::string XmlEscape(std::string_view in) {
    std::string out;
    for (char c : in) {
      switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '\'': out += "&apos;"; break;
        case '"': out += "&quot;"; break;
        default: out += c;
      }
    }
    return out;
  }

  static Status Disconnected() { return absl::UnavailableError("not connected to libvirt"); }

  ConnectPtr Current() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!conn_ || !connected_) return nullptr;
    virConnectRef(conn_.get());
    return ConnectPtr(conn_.get());
  }

  StatusOr<DomainPtr> Lookup(std::string_view uuid) {
    ConnectPtr conn = Current();
    if (!conn) return Disconnected();
    const std::string u(uuid);
    virDomainPtr dom = virDomainLookupByUUIDString(conn.get(), u.c_str());
    if (!dom) return LastError("no domain with UUID " + u);
    return DomainPtr(dom);
  }

  // Event thread only.
  void TryConnect() {
    if (shutting_down_) return;
    virConnectPtr raw = virConnectOpen(cfg_.connection_uri.c_str());
    if (!raw) {
      spdlog::warn("libvirt: cannot connect to {}: {} (retrying in {} ms)", cfg_.connection_uri,
                   virGetLastErrorMessage(), backoff_ms_);
      Arm(backoff_ms_);
      backoff_ms_ = std::min(backoff_ms_ * 2, cfg_.reconnect_max_backoff_ms);
      return;
    }
    ConnectPtr conn(raw);
    // Keepalive needs the remote driver; local drivers (test://) answer "unsupported" (1).
    if (virConnectSetKeepAlive(conn.get(), cfg_.keepalive_interval_s, cfg_.keepalive_count) <
        0) {
      spdlog::info("libvirt: keepalive not enabled on {}: {}", cfg_.connection_uri,
                   virGetLastErrorMessage());
    }
    if (virConnectRegisterCloseCallback(conn.get(), &LibvirtHypervisor::OnClose, this,
                                        nullptr) < 0) {
      // Local drivers have no close callbacks; a remote one without would hide drops.
      spdlog::debug("libvirt: no close callback on {}: {}", cfg_.connection_uri,
                    virGetLastErrorMessage());
    }
    lifecycle_cb_ = virConnectDomainEventRegisterAny(
        conn.get(), nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
        VIR_DOMAIN_EVENT_CALLBACK(&LibvirtHypervisor::OnLifecycle), this, nullptr);
    if (lifecycle_cb_ < 0) {
      spdlog::error("libvirt: cannot subscribe to domain events on {}: {}", cfg_.connection_uri,
                    virGetLastErrorMessage());
      virConnectUnregisterCloseCallback(conn.get(), &LibvirtHypervisor::OnClose);
      Arm(backoff_ms_);
      backoff_ms_ = std::min(backoff_ms_ * 2, cfg_.reconnect_max_backoff_ms);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      conn_ = std::move(conn);
    }
    if (ever_connected_) ++reconnects_;
    ever_connected_ = true;
    connected_ = true;
    backoff_ms_ = kInitialBackoffMs;
    spdlog::info("libvirt: connected to {}", cfg_.connection_uri);
    if (observer_.on_connection_change) observer_.on_connection_change(true);
  }

  // Event thread only. Drops the current connection and its callbacks.
  void Disconnect() {
    ConnectPtr conn;
    {
      std::lock_guard<std::mutex> lock(mu_);
      conn = std::move(conn_);
    }
    connected_ = false;
    if (!conn) return;
    if (lifecycle_cb_ >= 0) virConnectDomainEventDeregisterAny(conn.get(), lifecycle_cb_);
    lifecycle_cb_ = -1;
    virConnectUnregisterCloseCallback(conn.get(), &LibvirtHypervisor::OnClose);
    virResetLastError();
  }

  void Arm(int ms) {
    if (timer_ >= 0) virEventUpdateTimeout(timer_, ms);
  }

  static void OnTimer(int timer, void* opaque) {
    auto* self = static_cast<LibvirtHypervisor*>(opaque);
    virEventUpdateTimeout(timer, -1);
    if (self->closed_) {
      self->closed_ = false;
      self->Disconnect();
    }
    if (!self->connected_) self->TryConnect();
  }

  static void OnClose(virConnectPtr, int reason, void* opaque) {
    auto* self = static_cast<LibvirtHypervisor*>(opaque);
    if (self->shutting_down_) return;
    static constexpr const char* kReasons[] = {"error", "end of file", "keepalive timeout",
                                               "client request"};
    spdlog::warn("libvirt: connection to {} closed ({}); reconnecting",
                 self->cfg_.connection_uri,
                 reason >= 0 && reason < 4 ? kReasons[reason] : "unknown");
    // libvirt holds the close-callback lock while calling us and unregisters the callback
    // itself afterwards: tear the connection down from the timer, not from here.
    self->closed_ = true;
    self->connected_ = false;
    if (self->observer_.on_connection_change) self->observer_.on_connection_change(false);
    self->Arm(0);
  }

  static int OnLifecycle(virConnectPtr, virDomainPtr dom, int event, int detail, void* opaque) {
    auto* self = static_cast<LibvirtHypervisor*>(opaque);
    if (!self->observer_.on_domain_event) return 0;
    DomainEvent ev;
    ev.uuid = DomainUuid(dom);
    const char* name = virDomainGetName(dom);
    ev.name = name ? name : "";
    ev.kind = FromVirEvent(event);
    ev.detail = detail;
    self->observer_.on_domain_event(ev);
    return 0;
  }

  static constexpr int kInitialBackoffMs = 100;

  const config::LibvirtSection cfg_;
  const core::HypervisorObserver observer_;
  std::shared_ptr<EventThread> events_;

  mutable std::mutex mu_;
  ConnectPtr conn_;  // guarded by mu_; replaced only on the event thread

  // Event-thread state.
  int timer_ = -1;
  int lifecycle_cb_ = -1;
  int backoff_ms_ = kInitialBackoffMs;
  bool ever_connected_ = false;
  bool shutting_down_ = false;
  bool closed_ = false;  // the close callback fired; Disconnect() pending

  std::atomic<bool> connected_{false};
  std::atomic<unsigned> reconnects_{0};
};

}  // namespace

std::unique_ptr<core::Hypervisor> MakeLibvirtHypervisor(const config::LibvirtSection& cfg,
                                                        core::HypervisorObserver observer) {
  return std::make_unique<LibvirtHypervisor>(cfg, std::move(observer));
}

}  // namespace novadt::libvirt
