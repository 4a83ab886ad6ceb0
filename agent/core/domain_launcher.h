// Starting a guest from a replica on the backup host (ARCHITECTURE.md stage VII): the part of a
// failover that needs the hypervisor's domain lifecycle, as plain data. The QMP side of the
// restore (loading the device state) goes through core::Hypervisor; the sequence lives in
// agent/engine/failover_restorer.h. The only implementation outside tests is agent/libvirt's
// LibvirtLauncher (libvirt_launcher.h); docs/restore-spike.md explains the mechanism.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "agent/common/status.h"

namespace novadt::core {

// What to start: the primary's domain, pointed at the backup's replica.
struct RestoreSpec {
  // The primary's domain XML (the replication stream's StreamOpen.domain_xml), live or inactive.
  // Its guest RAM must be shared file-backed memory (<memoryBacking><source type='file'/>
  // <access mode='shared'/>): the restored QEMU maps the replica RAM file as guest RAM.
  std::string domain_xml;
  // Guest disk target dev (e.g. "vda") -> the replica's raw image of that disk, as the agent
  // sees the path. Every disk (device='disk') of domain_xml must be listed, and nothing else.
  std::map<std::string, std::string> disk_images;
};

// A domain the launcher started.
struct LaunchedDomain {
  std::string uuid;
  std::string name;
  int id = -1;  // the hypervisor's runtime id
};

// Thread safety: every method may be called from any thread; calls for one UUID must not
// overlap (the failover restorer of that server is its only user).
class DomainLauncher {
 public:
  virtual ~DomainLauncher() = default;

  // Starts `spec` as a transient domain whose vCPUs stay paused and whose QEMU waits for an
  // incoming migration (`-incoming defer`: nothing is loaded until the caller sends
  // `migrate-incoming`, and QEMU writes no ROM or kernel image into guest RAM). The guest RAM
  // file is whatever the hypervisor's start hook placed at the path DomainRamFile() names (the
  // caller arms the hook beforehand). On success the domain exists, paused, and must end
  // either with Resume() + MakePersistent() or with Destroy().
  // InvalidArgument when spec cannot be turned into a restore definition (unparsable XML, no
  // shared file-backed memory, a disk without replica image or an image without disk);
  // AlreadyExists when a domain with the UUID is running; Unavailable when the hypervisor
  // cannot be reached or refuses the start (the message carries its reason).
  virtual StatusOr<LaunchedDomain> StartPausedIncoming(const RestoreSpec& spec) = 0;

  // The guest RAM file (memory backend "pc.ram") QEMU of the running domain `uuid` mapped, as
  // the agent sees the path. NotFound when no such domain runs.
  virtual StatusOr<std::string> DomainRamFile(std::string_view uuid) = 0;

  // Lets the vCPUs of the paused domain run. NotFound when there is none; FailedPrecondition
  // when it is not paused or QEMU refuses (e.g. its incoming migration did not complete).
  virtual Status Resume(std::string_view uuid) = 0;

  // Defines `spec` as the domain's persistent definition (without any restore-only argument),
  // so a later start of the server is an ordinary boot. The running domain is not touched.
  // InvalidArgument as for StartPausedIncoming(); Unavailable when the hypervisor refuses.
  virtual Status MakePersistent(const RestoreSpec& spec) = 0;

  // Stops the domain `uuid` at once (power off, no guest shutdown). A transient domain is gone
  // afterwards. OK when no such domain runs (idempotent; also after QEMU exited by itself).
  virtual Status Destroy(std::string_view uuid) = 0;
};

}  // namespace novadt::core
