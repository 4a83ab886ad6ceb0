// Stage I, disk half: every guest write to the protected disks, captured synchronously (a guest
// write completes only once the capture has it) and buffered until the next checkpoint pause
// takes it into the epoch. The first writes after Start() are the block copy's initial full copy
// of each disk: they seed the replica's disks.
//
// Thread safety: TakeWrites()/buffered_bytes() may be called from any thread; Start()/Stop()
// from the owner only.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "agent/common/file_owner.h"
#include "agent/core/hypervisor.h"
#include "agent/core/replication_link.h"

namespace novadt::engine {

class DiskCapture {
 public:
  virtual ~DiskCapture() = default;
  // Starts capturing every disk and returns once each is in its mirroring phase (its initial
  // copy is then buffered). DeadlineExceeded after `timeout`; on any error nothing is captured.
  virtual Status Start(std::chrono::milliseconds timeout) = 0;
  // The writes captured since the previous call, in the order the guest issued them.
  virtual std::vector<core::DiskWrite> TakeWrites() = 0;
  virtual uint64_t buffered_bytes() const = 0;
  // Ends the capture; the guest keeps its disks. Idempotent.
  virtual void Stop() = 0;
};

// The real capture: one NBD endpoint per disk on a unix socket in `socket_dir`, fed by libvirt's
// synchronous block copy. The endpoint keeps no copy of the disk: a write is captured and
// acknowledged, reads (which the block copy does not issue) return zeroes.
//
// QEMU, running as `qemu` (the [libvirt] qemu_user / qemu_group), connects to the sockets: Start()
// makes `socket_dir` (and its parent, the socket root, when missing) owned by the agent and
// qemu's group, mode 0710, and each socket qemu's, mode 0600 — QEMU can connect, nobody else can,
// and QEMU cannot list or replace anything. Start() fails with FailedPrecondition, before any
// block copy, when `qemu` cannot search every directory on the way to `socket_dir`.
std::unique_ptr<DiskCapture> MakeNbdDiskCapture(core::Hypervisor& hv, std::string instance_uuid,
                                                std::vector<core::DiskGeometry> disks,
                                                std::string socket_dir, FileOwner qemu = {});

// Makes `socket_root` (created with parents if missing) the directory of the captures' socket
// directories ([DEFAULT] state_path/nbd): owned by the agent and qemu's group, mode 0710.
// FailedPrecondition when `qemu` cannot search every directory on the way to it (protecting a
// server would fail: QEMU could not connect to the capture).
Status PrepareNbdSocketRoot(const std::string& socket_root, const FileOwner& qemu);

}  // namespace novadt::engine
