// Network output commit (ARCHITECTURE.md invariant 1; stages I, III and VI): the guest's egress
// frames are held per epoch in QEMU `filter-buffer` objects on every NIC and leave only when the
// backup has committed that epoch.
//
// Mechanics (SPIKE-NOTES.md, "Network output commit"): one filter-buffer per NIC and epoch,
// `queue: rx` (the guest's transmit direction as seen from the netdev), added at the TAIL of the
// NIC's filter list (QEMU's default position: for this direction filters are walked from the
// tail, so the newest buffer catches new frames while older ones keep theirs); `object-del` of a
// buffer flushes exactly its frames. The buffer's own timer is made harmless with the largest
// interval QEMU accepts; epochs are far shorter.
//
// Not thread-safe: owned by the server's epoch engine.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "agent/core/hypervisor.h"

namespace novadt::engine {

class EgressGate {
 public:
  // Finds the guest's NICs and their netdevs through QMP (query-rx-filter, then each device's
  // "netdev" property). FailedPrecondition when the domain has no NIC QEMU can filter.
  static StatusOr<std::unique_ptr<EgressGate>> Create(core::Hypervisor& hypervisor,
                                                      std::string instance_uuid);

  // Stage I/III: from now on the guest's frames are held in epoch `epoch`'s buffers.
  // REQUIRES: epoch greater than every epoch opened before. On failure nothing new is held
  // (buffers added to some NICs are removed again) and the gate is unchanged.
  Status Open(uint64_t epoch);

  // Stage VI: the backup committed `epoch`: releases the buffers of every held epoch <= `epoch`,
  // oldest first, so exactly their frames leave, in order. Stops at the first QMP failure
  // (the remaining epochs stay held; calling again retries).
  Status Release(uint64_t epoch);

  // Undoes Open(epoch) for a checkpoint that failed: removes epoch `epoch`'s buffers, whose
  // frames fall into the previous epoch's buffer (still held) or, with none held, leave — as if
  // the buffer had never been added. REQUIRES: `epoch` is the newest held epoch (otherwise
  // FailedPrecondition, nothing done). On a QMP failure the epoch stays held (ReleaseAll still
  // releases it).
  Status Cancel(uint64_t epoch);

  // Degraded or unprotected: releases everything held, oldest first.
  Status ReleaseAll();

  // Epochs whose frames are currently held, oldest first.
  std::vector<uint64_t> held_epochs() const;
  // The netdev ids being gated, e.g. {"hostnet0"}.
  const std::vector<std::string>& netdevs() const { return netdevs_; }

  // QEMU object id of epoch `epoch`'s buffer on `netdev`.
  static std::string BufferId(const std::string& netdev, uint64_t epoch);

 private:
  EgressGate(core::Hypervisor& hv, std::string uuid, std::vector<std::string> netdevs)
      : hv_(hv), uuid_(std::move(uuid)), netdevs_(std::move(netdevs)) {}

  Status Qmp(const std::string& command_json);
  Status Delete(uint64_t epoch);

  core::Hypervisor& hv_;
  const std::string uuid_;
  const std::vector<std::string> netdevs_;
  std::deque<uint64_t> held_;
};

}  // namespace novadt::engine
