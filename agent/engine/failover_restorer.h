// Stage VII on the backup: restores a protected server from its committed replica
// (ARCHITECTURE.md stage VII, docs/restore-spike.md; cold restore through the hypervisor).
//
// Restore() runs, for one server:
//   0. when the definition names files in Nova's instance directory of the server (a direct
//      kernel boot's kernel and ramdisk, console.log): make <instances_path>/<uuid>/ as Nova
//      would have on this host and put the replica's copies of the boot files there
//      (engine/boot_files.h, PrepareInstanceDir): libvirt needs them to start QEMU even with
//      -incoming (the ROM blocks must match), and creates console.log there
//   1. arm the start hook: <arm_dir>/<uuid>.arm (mode 0600: the hook runs as root) names the
//      replica RAM file and who QEMU runs as (deploy/libvirt-hooks/qemu links the file to the path
//      libvirt hands QEMU as guest RAM, in a directory it gives to that user, as libvirt would)
//   2. DomainLauncher::StartPausedIncoming (same domain, disks on the replica images,
//      `-incoming defer`)
//   3. verify that QEMU's guest RAM file IS the replica RAM file (same device + inode); if not,
//      the start did not go through the hook and loading would run the guest on the wrong memory
//   4. QMP migrate-set-capabilities x-ignore-shared; getfd (the committed device-state file);
//      migrate-incoming fd:; poll query-migrate until "completed" (bounded)
//   5. DomainLauncher::Resume                                          <- the guest runs again
//   6. DomainLauncher::MakePersistent (the clean definition); the instance directory of step 0
//      made durable (SyncInstanceDir: off the critical path, the guest runs already)
//   7. disarm (remove the arm file if the hook did not)
// Any failure before 5 cleans up (destroys the half-started domain, disarms, removes an instance
// directory step 0 made) and returns a Status naming the step; the replica is left as it was
// (QEMU never writes it before the resume), so the restore can be retried. After a failed resume
// the domain is destroyed as well.
//
// Where the replica RAM must live: the hook hard-links it, so the replica RAM file must be on
// the file system of libvirt's memory_backing_dir (a tmpfs on Nova hosts with file-backed memory):
// [replication] replica_path must then be a directory inside it (e.g.
// /var/lib/libvirt/qemu/ram/nova-dt). Restore() checks this and fails with FailedPrecondition
// otherwise (no copy fallback). After a successful restore the replica RAM file and the running
// guest's RAM are ONE file: the replica must not be written again, only destroyed (which merely
// drops a link).
//
// Thread safety: thread-compatible; one Restore() per server at a time. The launcher, hypervisor
// and clock must outlive the restorer.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

#include "agent/common/clock.h"
#include "agent/common/file_owner.h"
#include "agent/common/status.h"
#include "agent/core/domain_launcher.h"
#include "agent/core/hypervisor.h"

namespace novadt::engine {

struct FailoverRestorerOptions {
  // The hook's arm directory as the agent sees it: <memory_backing_dir>/nova-dt.
  std::string arm_dir = "/var/lib/libvirt/qemu/ram/nova-dt";
  // Who QEMU runs as ([libvirt] qemu_user / qemu_group): the hook gives the guest-RAM directory
  // it makes to this user and group, mode 0700, as libvirt does with the ones it makes. The
  // default (keep) leaves that directory to root (QEMU running as root).
  FileOwner qemu;
  // Nova's instances_path as libvirtd sees it ([libvirt] instances_path): where step 0 makes a
  // server's instance directory.
  std::string instances_path = "/var/lib/nova/instances";
  // Bound on loading the device state (migrate-incoming to "completed").
  std::chrono::milliseconds load_timeout{10'000};
  // Pause between two query-migrate polls.
  std::chrono::milliseconds poll_interval{1};
};

// One server's committed replica (replica::ReplicaStore's paths) and how to run it.
struct RestoreRequest {
  std::string instance_uuid;
  // The primary's domain XML (StreamOpen.domain_xml).
  std::string domain_xml;
  // ReplicaStore::committed_epoch(); 0 (not seeded) cannot be restored.
  uint64_t committed_epoch = 0;
  std::string ram_path;           // ReplicaStore::ram_path()
  std::string device_state_path;  // ReplicaStore::device_state_path()
  // Disk target dev -> ReplicaStore::disk_path(dev), for every disk of the geometry.
  std::map<std::string, std::string> disk_paths;
  // The definition names files in Nova's instance directory of the server
  // (libvirt::InstanceDirFiles): step 0 makes it before the domain starts.
  bool instance_dir = false;
  // The boot files the definition boots from in that directory ("kernel", "ramdisk") -> the
  // replica's copy (FencedReplica::boot_files), "" when the replica has none: then the restore
  // fails before anything starts (FailedPrecondition).
  std::map<std::string, std::string> boot_files;
};

struct RestoreTimings {
  using ms = std::chrono::duration<double, std::milli>;
  ms instance_dir{0};  // step 0: the instance directory and its boot files
  ms start_paused{0};  // StartPausedIncoming (QEMU spawned, hook run, paused in incoming mode)
  ms load_state{0};    // caps + getfd + migrate-incoming + polling to "completed"
  ms resume{0};        // Resume
  ms to_running{0};    // from the start of Restore() to the return of Resume
  ms define{0};        // MakePersistent
};

struct RestoreResult {
  int domain_id = -1;
  uint64_t epoch = 0;  // the epoch the guest continues from
  RestoreTimings timings;
  // The guest runs in either case; false when MakePersistent failed (persist_error says why):
  // the domain is then transient and must be defined again by the caller. Destroying a guest
  // that already runs again would lose the server, so this is not an error of Restore().
  bool persistent = false;
  Status persist_error;
};

class FailoverRestorer {
 public:
  FailoverRestorer(core::DomainLauncher& launcher, core::Hypervisor& hypervisor, const Clock& clock,
                   FailoverRestorerOptions options = {});

  // Restores `req` (sequence in the file comment). On OK the guest runs from the committed
  // epoch under the hypervisor. Errors, each after cleaning up:
  //   FailedPrecondition: committed_epoch == 0; a boot file the definition needs is not in the
  //     replica (its primary sent none: an agent before replication protocol 4); the instance
  //     directory cannot be made (instances_path missing, something else in the way: see
  //     PrepareInstanceDir); replica RAM not on the arm directory's file system; QEMU mapped
  //     another RAM file than the replica's (hook not installed/not run); QEMU refused the
  //     device state or the resume.
  //   NotFound: a replica file is missing.
  //   DeadlineExceeded: the device state did not load within load_timeout.
  //   Errors of the launcher and hypervisor (Unavailable, InvalidArgument, AlreadyExists ...)
  //     unchanged, with the step prepended.
  StatusOr<RestoreResult> Restore(const RestoreRequest& req);

 private:
  Status Arm(const RestoreRequest& req) const;
  void Disarm(const std::string& uuid) const;
  Status LoadDeviceState(const RestoreRequest& req);

  core::DomainLauncher& launcher_;
  core::Hypervisor& hv_;
  const Clock& clock_;
  const FailoverRestorerOptions options_;
};

}  // namespace novadt::engine
