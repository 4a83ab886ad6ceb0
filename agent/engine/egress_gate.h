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

  // Agent restart recovery (issue 6 item 5): takes over the `dt-egress-*` buffers a dead agent
  // left on this domain's NICs (found with QMP `qom-list /objects`) as held output. They hold
  // frames from before anything a new stream captures, so they are released before any epoch
  // of this gate: by the first Release() (the new stream's first commit), by ReleaseAll(), or
  // never (a copy another host owns is destroyed with them). From then on this gate names its
  // buffers with the next incarnation ("dt-egress-<netdev>-r<N>-<epoch>"), so new buffers never
  // collide with adopted ones and a later restart orders them (incarnation, epoch).
  // REQUIRES: called before the first Open(). Returns how many epochs were adopted (0: none
  // left over); on a QMP failure nothing is adopted.
  StatusOr<size_t> AdoptLeftovers();

  // Stage VI: the backup committed `epoch`: releases the adopted buffers (if any) and then the
  // buffers of every held epoch <= `epoch`, oldest first, so exactly their frames leave, in
  // order. Stops at the first QMP failure (the rest stays held; calling again retries).
  Status Release(uint64_t epoch);

  // Undoes Open(epoch) for a checkpoint that failed: removes epoch `epoch`'s buffers, whose
  // frames fall into the previous epoch's buffer (still held) or, with none held, leave — as if
  // the buffer had never been added. REQUIRES: `epoch` is the newest held epoch (otherwise
  // FailedPrecondition, nothing done). On a QMP failure the epoch stays held (ReleaseAll still
  // releases it).
  Status Cancel(uint64_t epoch);

  // Degraded or unprotected: releases everything held (adopted buffers first), oldest first.
  Status ReleaseAll();

  // Epochs whose frames are currently held, oldest first (this gate's own, not adopted ones).
  std::vector<uint64_t> held_epochs() const;
  // Buffers adopted from a dead agent and not released yet, per epoch, oldest first.
  size_t adopted_epochs() const { return adopted_.size(); }
  // True while any output is held: an own epoch or an adopted buffer.
  bool holds_output() const { return !held_.empty() || !adopted_.empty(); }
  // The netdev ids being gated, e.g. {"hostnet0"}.
  const std::vector<std::string>& netdevs() const { return netdevs_; }

  // QEMU object id of epoch `epoch`'s buffer on `netdev`, by a gate of incarnation
  // `incarnation` (0: the first agent that gated the domain; +1 per adoption).
  static std::string BufferId(const std::string& netdev, uint64_t epoch,
                              uint64_t incarnation = 0);

 private:
  EgressGate(core::Hypervisor& hv, std::string uuid, std::vector<std::string> netdevs)
      : hv_(hv), uuid_(std::move(uuid)), netdevs_(std::move(netdevs)) {}

  Status Qmp(const std::string& command_json);
  Status Delete(uint64_t epoch);
  Status DeleteIds(const std::vector<std::string>& ids);
  Status ReleaseAdopted();

  core::Hypervisor& hv_;
  const std::string uuid_;
  const std::vector<std::string> netdevs_;
  std::deque<uint64_t> held_;
  uint64_t incarnation_ = 0;
  // Adopted buffers: object ids per (incarnation, epoch), oldest first.
  std::deque<std::vector<std::string>> adopted_;
};

}  // namespace novadt::engine
