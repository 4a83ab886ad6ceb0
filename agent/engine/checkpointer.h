// Stages II and III on the primary — the checkpoint pause of one epoch:
//   II  `stop` (QEMU drains block I/O, so every disk write of the epoch has reached the capture
//       endpoint); start saving CPU and device state without the shared RAM (`migrate` into a
//       memfd with x-ignore-shared, which also keeps the ROM/BIOS/ACPI blocks that
//       xen-save-devices-state omits: a restored guest with an empty BIOS block could not
//       reboot; SPIKE-NOTES.md) and, while QEMU's migration thread writes it, collect the dirty
//       pages and copy them out of the shared RAM file; wait for the save;
//   III `cont` — before anything of the epoch crosses the network (the sender streams the
//       staged epoch afterwards). The next epoch's egress buffer is opened at the tail just
//       before `stop` (frames sent in between are held one epoch longer, never shorter), which
//       keeps that QMP round trip out of the pause.
// Every QMP command is a round trip through libvirtd (about 1 ms here), so the pause holds only
// those it needs: stop, migrate, query-migrate (usually once: the save finished during the
// scan), cont.
// Whatever fails after `stop`, the guest is resumed: availability comes before protection (the
// engine then degrades the pair).
//
// Not thread-safe: owned by the server's epoch engine.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "agent/common/clock.h"
#include "agent/core/epoch_sender.h"
#include "agent/core/hypervisor.h"
#include "agent/dirty/dirty_tracker.h"
#include "agent/common/scoped_fd.h"
#include "agent/engine/egress_gate.h"
#include "agent/engine/ram_stager.h"

namespace novadt::engine {

// Where each part of one pause went.
struct PauseTimings {
  Clock::Duration prepare{0};       // before the pause: egress buffer + device-state fd
  Clock::Duration total{0};         // stop sent .. cont answered
  Clock::Duration stop{0};
  Clock::Duration save_start{0};    // the `migrate` command
  Clock::Duration dirty{0};         // dirty-page collection
  Clock::Duration copy{0};          // staging the dirty pages and the epoch's disk writes
  Clock::Duration device_state{0};  // waiting for the save after staging, reading it
  Clock::Duration resume{0};        // cont
};

class Checkpointer {
 public:
  // Hands over the disk writes captured since the previous checkpoint, in guest order
  // (stage I's capture endpoint buffers them); called while the guest is stopped.
  using TakeDiskWrites = std::function<std::vector<core::DiskWrite>()>;

  // All references must outlive the Checkpointer.
  Checkpointer(core::Hypervisor& hv, std::string instance_uuid, dirty::DirtyTracker& tracker,
               const RamStager& stager, EgressGate& egress, TakeDiskWrites take_disk_writes,
               const Clock& clock);

  // Once before the first checkpoint: enables x-ignore-shared so device-state saves skip the
  // shared guest RAM. FailedPrecondition (QEMU's reason) when QEMU refuses.
  Status Prepare();

  // Called during the pause with the pages the tracker found; may add pages it cannot know of
  // or replace the set (seeding: exactly the pages whose content differs from what the running
  // copy sent). The pages in the set on return are the epoch's.
  using ExtraDirty = std::function<void(dirty::DirtyPages&)>;

  // What Take() does with the guest once the checkpoint is taken.
  enum class After {
    kResume,      // stage III: `cont`
    kStayPaused,  // planned switchover's final epoch: the guest never runs here again
  };

  // Takes the checkpoint of epoch `epoch` into `out` (pages, disk writes, device state), opens
  // egress epoch `epoch + 1` and resumes the guest (kStayPaused: leaves it paused; `stop` on a
  // guest already paused is harmless). On error the guest is running again (or never stopped)
  // and `out` must not be sent; the egress gate holds what it held before (or, if even
  // removing it failed, also epoch `epoch + 1`, released with the rest by ReleaseAll).
  StatusOr<PauseTimings> Take(uint64_t epoch, core::StagedEpoch& out,
                              const ExtraDirty& extra_dirty = nullptr,
                              After after = After::kResume);

  // Bound on the device-state save (QEMU normally needs a few ms); then the save is cancelled.
  void set_device_state_timeout(std::chrono::milliseconds t) { device_state_timeout_ = t; }

 private:
  Status PassDeviceStateFd();
  Status StartDeviceStateSave();
  Status WaitDeviceStateSave();
  Status ReadDeviceState(std::string& out);
  Status Qmp(const char* execute);

  core::Hypervisor& hv_;
  const std::string uuid_;
  dirty::DirtyTracker& tracker_;
  const RamStager& stager_;
  EgressGate& egress_;
  TakeDiskWrites take_disk_writes_;
  const Clock& clock_;
  std::chrono::milliseconds device_state_timeout_{5000};
  ScopedFd state_file_;  // memfd QEMU writes the device state into, reused every epoch
};

}  // namespace novadt::engine
