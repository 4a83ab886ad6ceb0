// What the agent needs from the hypervisor (libvirt + QEMU's monitor), as plain data.
// The only implementation outside tests is agent/libvirt's LibvirtHypervisor.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/common/status.h"

namespace novadt::core {

// libvirt's domain states, in the agent's words.
enum class DomainState { kNoState, kRunning, kBlocked, kPaused, kShutdown, kShutoff, kCrashed,
                         kPmSuspended };
std::string_view DomainStateName(DomainState s);

struct DomainInfo {
  std::string uuid;  // Nova instance UUID == libvirt domain UUID
  std::string name;
  DomainState state = DomainState::kNoState;
  int id = -1;  // libvirt's runtime id; -1 when not running
  // Paused by a QMP `stop` (kPaused only): the agent's own (an epoch checkpoint, a switchover)
  // leaves libvirt's "unknown" reason; Nova's pause, a save or a migration leave theirs.
  bool paused_by_monitor = false;
};

// A domain lifecycle event (virDomainEventLifecycle) as seen on the hypervisor.
struct DomainEvent {
  enum class Kind { kDefined, kUndefined, kStarted, kSuspended, kResumed, kStopped, kShutdown,
                    kPmSuspended, kCrashed, kUnknown };
  std::string uuid;
  std::string name;
  Kind kind = Kind::kUnknown;
  int detail = 0;  // libvirt's per-kind detail code, for logs
};
std::string_view DomainEventKindName(DomainEvent::Kind k);

// Callbacks from the hypervisor adapter. They run on the adapter's own event thread and must
// only hand the data over (post to the EventLoop); they must not call back into the adapter.
struct HypervisorObserver {
  std::function<void(const DomainEvent&)> on_domain_event;
  // `connected` false: the connection dropped (reconnect is automatic); true: (re)connected.
  std::function<void(bool connected)> on_connection_change;
};

// Thread safety: every method may be called from any thread.
class Hypervisor {
 public:
  virtual ~Hypervisor() = default;

  // True while the connection to the hypervisor is up.
  virtual bool connected() const = 0;
  // How often the connection was re-established after dropping.
  virtual unsigned reconnects() const = 0;
  virtual std::string uri() const = 0;

  // Looks a domain up by UUID. NotFound when there is none; Unavailable while disconnected.
  virtual StatusOr<DomainInfo> LookupDomain(std::string_view uuid) = 0;
  // Every domain the hypervisor knows, running or defined.
  virtual StatusOr<std::vector<DomainInfo>> ListDomains() = 0;

  // Sends one QMP command (a JSON object text) to the domain's QEMU and returns QEMU's JSON
  // reply text unchanged (including an "error" member: QMP errors are not Status errors).
  // NotFound for an unknown domain; FailedPrecondition when it is not running; Unavailable
  // while disconnected.
  virtual StatusOr<std::string> QemuMonitorCommand(std::string_view uuid,
                                                   std::string_view qmp_json) = 0;

  // The domain's live definition (libvirt XML). NotFound for an unknown domain.
  virtual StatusOr<std::string> DomainXml(std::string_view uuid) = 0;

  struct Disk {
    std::string target;  // e.g. "vda"
    uint64_t capacity_bytes = 0;
  };
  // The domain's disks (device='disk'), in definition order, with their virtual sizes.
  virtual StatusOr<std::vector<Disk>> ListDisks(std::string_view uuid) = 0;

  // QemuMonitorCommand() that also hands QEMU the file descriptor `fd` (SCM_RIGHTS through
  // libvirt), for QMP `getfd`: device state then flows through a pipe or file the agent owns,
  // never a path or `exec:` (libvirt's seccomp sandbox kills QEMU on exec). `fd` stays owned
  // by the caller. Errors as for QemuMonitorCommand().
  virtual StatusOr<std::string> QemuMonitorCommandWithFd(std::string_view uuid,
                                                         std::string_view qmp_json, int fd) = 0;

  // Stage I disk capture. Starts a libvirt block copy of disk `disk` (its target dev, e.g.
  // "vda") into the NBD export `export_name` served on the unix socket `socket_path`, with
  // synchronous writes (a guest write completes only once the export has it) as a transient job
  // (nothing persisted in the domain). The copy first transfers the whole disk, then mirrors.
  // NotFound for an unknown domain or disk; FailedPrecondition when a job already runs on it.
  virtual Status StartDiskCapture(std::string_view uuid, std::string_view disk,
                                  std::string_view socket_path, std::string_view export_name) = 0;
  // True once the copy is in its mirroring phase (every later write reaches the export
  // synchronously). FailedPrecondition when no capture runs on the disk.
  virtual StatusOr<bool> DiskCaptureReady(std::string_view uuid, std::string_view disk) = 0;
  // Ends the capture; the guest keeps using its own disk. OK when none runs.
  virtual Status StopDiskCapture(std::string_view uuid, std::string_view disk) = 0;
};

}  // namespace novadt::core
