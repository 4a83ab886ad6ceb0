// The replication stream of one protected server, as the epoch engine sees it (stages IV-VI):
// the primary writes an ordered sequence of stream items; the backup hands them to a
// ReplicaSink and acknowledges each epoch once the sink committed it. The gRPC implementation
// is in agent/rpc; tests use fakes.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "agent/core/device_state_codec.h"

#include "agent/common/status.h"

namespace novadt::core {

// How a backup refuses a stream for a server it runs itself (it failed the server over): code
// ABORTED with this wording (the code alone is not enough: the primary's own code returns
// ABORTED for other reasons). The stream's primary must then stand down: never release the
// output it holds, never resume its copy (ARCHITECTURE.md invariant 3, also without a witness).
inline constexpr std::string_view kTakenOverWording = " was taken over by this host";
inline Status TakenOverRefusal(const std::string& instance_uuid) {
  return absl::AbortedError("server " + instance_uuid + std::string(kTakenOverWording));
}
inline bool IsTakenOverRefusal(const Status& st) {
  return absl::IsAborted(st) &&
         std::string(st.message()).find(kTakenOverWording) != std::string::npos;
}


// 2: device state may be delta-encoded (DeviceStateChunk::encoding).
// 3: StreamOpen::basis_id (a seed that sends only what differs from the backup's basis).
// 4: StreamOpen::boot_files and BootFileChunk items. A primary sends 3 for a server without boot
//    files, so that it still replicates to a backup that predates 4.
// A backup accepts streams of every version from kMinReplicationProtocolVersion on.
inline constexpr uint32_t kReplicationProtocolVersion = 4;
inline constexpr uint32_t kBasisProtocolVersion = 3;
inline constexpr uint32_t kBootFilesProtocolVersion = 4;
inline constexpr uint32_t kMinReplicationProtocolVersion = 2;
inline constexpr size_t kGuestPageSize = 4096;

// Boot files: the files a server's domain boots from in Nova's instance directory on its primary
// (`<instances_path>/<uuid>/kernel` and `.../ramdisk`, a direct kernel boot from Glance images
// with kernel_id/ramdisk_id). The backup has no instance directory of the server, so they travel
// with every stream, are kept with the replica and put in place at restore
// (docs/compute-host.md, "Boot files"). These are the only names: Nova's own.
inline constexpr std::string_view kBootFileKernel = "kernel";
inline constexpr std::string_view kBootFileRamdisk = "ramdisk";
inline bool IsBootFileName(std::string_view name) {
  return name == kBootFileKernel || name == kBootFileRamdisk;
}
// Largest BootFileChunk a primary sends (well below the 16 MiB gRPC message bound).
inline constexpr size_t kBootFileChunkBytes = 1 << 20;

// A boot file a stream carries: its name (IsBootFileName) and size (> 0).
struct BootFile {
  std::string name;
  uint64_t size_bytes = 0;
  bool operator==(const BootFile&) const = default;
};

struct DiskGeometry {
  std::string name;  // target device, e.g. "vda"
  uint64_t size_bytes = 0;
  bool operator==(const DiskGeometry&) const = default;
};

// First item of every stream: which server, and the shape of its replica.
struct StreamOpen {
  uint32_t protocol = kReplicationProtocolVersion;
  std::string instance_uuid;
  std::string primary_host;
  uint64_t ram_size_bytes = 0;
  std::vector<DiskGeometry> disks;
  std::string domain_xml;
  int64_t witness_generation = 0;  // 0: no witness (docs/witness.md)
  // The backup's basis (core/replica_basis.h) this stream's seed is relative to: epoch 1 omits
  // what the basis already holds, so the backup seeds in place over it. 0: a full seed into a
  // fresh replica.
  uint64_t basis_id = 0;
  // Protocol 4: the boot files whose bytes (BootFileChunk items) follow before the first epoch,
  // each name at most once. Empty: the domain boots from none (or an older primary).
  std::vector<BootFile> boot_files;
};

// XXH3-128 of some bytes (HashContent in core/replica_basis.h).
struct ContentHash {
  uint64_t low = 0;
  uint64_t high = 0;
  bool operator==(const ContentHash&) const = default;
};

// What a backup already holds of a server's replica, as hashes, so that a (re)seed sends only
// what differs (core/replica_basis.h).
struct ReplicaBasis {
  uint64_t id = 0;  // names this basis in StreamOpen::basis_id; never 0
  uint64_t ram_size_bytes = 0;
  std::vector<DiskGeometry> disks;
  std::vector<ContentHash> ram_pages;  // one per kGuestPageSize page
  // Per disk, one per kBasisBlockSize block (BasisBlockCount of its size).
  std::map<std::string, std::vector<ContentHash>> disk_blocks;
  // The basis describes a replica of exactly this shape (a resized server seeds in full).
  bool Fits(uint64_t ram_size, const std::vector<DiskGeometry>& geometry) const;
  // InvalidArgument unless the id is set and every hash vector has its geometry's length.
  Status Validate() const;
};

struct EpochBegin {
  uint64_t epoch = 0;
};
// Guest-RAM pages: page_index[i] has data[i * kGuestPageSize, (i+1) * kGuestPageSize).
struct RamPages {
  std::vector<uint64_t> page_index;
  std::string data;
};
struct DiskWrite {
  std::string disk;
  uint64_t offset = 0;
  std::string data;     // empty when `zeroes`
  bool zeroes = false;  // write `length` zero bytes
  uint64_t length = 0;  // only with `zeroes`
};
// A chunk of the epoch's CPU+device state; `last` ends it. Every chunk of an epoch has the same
// encoding; the receiver decodes the whole state at the last one (device_state_codec.h).
struct DeviceStateChunk {
  std::string data;
  bool last = false;
  DeviceStateEncoding encoding = DeviceStateEncoding::kRaw;
};
// Ends epoch `epoch`; the counts let the backup check it received the whole epoch.
struct EpochEnd {
  uint64_t epoch = 0;
  uint64_t pages = 0;
  uint64_t disk_writes = 0;
  uint64_t device_state_bytes = 0;
};

// Bytes [offset, offset + data.size()) of the declared boot file `name`. A file's chunks come in
// order without gaps, each file whole before the next (in StreamOpen::boot_files order), all of
// them before the first EpochBegin; none is empty.
struct BootFileChunk {
  std::string name;
  uint64_t offset = 0;
  std::string data;
};

using StreamItem =
    std::variant<EpochBegin, RamPages, DiskWrite, DeviceStateChunk, EpochEnd, BootFileChunk>;

// Backup side: receives one server's stream, in order, on one thread. Each method returns an
// error to refuse the stream (it then ends; the sink is not called again except Close()).
class ReplicaSink {
 public:
  virtual ~ReplicaSink() = default;
  // Called for every message received, heartbeats included, before it is handled: the input
  // of the backup's failure detector (stage VII).
  virtual void OnPrimaryHeard() {}
  // Bytes of a boot file the StreamOpen declared (protocol 4), as checked by the receiver: in
  // order, within the declared size, before the first epoch.
  virtual Status AddBootFileData(const BootFileChunk& chunk) = 0;
  // Every boot file the StreamOpen declared is complete: from now on the replica has exactly
  // these (none when none were declared, e.g. an older primary's stream). Called once per
  // stream, before its first BeginEpoch.
  virtual Status EndBootFiles() = 0;
  virtual Status BeginEpoch(uint64_t epoch) = 0;
  virtual Status AddPages(const RamPages& pages) = 0;
  virtual Status AddDiskWrite(const DiskWrite& write) = 0;
  virtual Status AddDeviceState(const DeviceStateChunk& chunk) = 0;
  // Makes the epoch durable; the stream acks it only after this returned OK.
  virtual Status CommitEpoch(const EpochEnd& end) = 0;
  // The stream ended: OK when the primary closed it, else why (cancelled, refused, broken).
  // An uncommitted epoch must be dropped; the committed replica stays.
  virtual void Close(const Status& why) = 0;
};

// Backup side: accepts or refuses a new stream (unknown server, no space...).
using ReplicaSinkFactory = std::function<StatusOr<std::unique_ptr<ReplicaSink>>(const StreamOpen&)>;

// What the backup sent back.
struct StreamAck {
  // kSynced: the backup has received everything sent before the Sync() of token `epoch`.
  enum class Kind { kCommitted, kHeartbeat, kSynced };
  Kind kind = Kind::kHeartbeat;
  uint64_t epoch = 0;  // kCommitted: the epoch; kSynced: the token
};

// Primary side: one open stream. Send() may be called from one thread at a time (the sender
// thread of stages IV/V); the callbacks given to ReplicationLink::Open run on a link thread.
class EpochStream {
 public:
  virtual ~EpochStream() = default;
  // Queues `item` for the backup in order. Blocks while the transport pushes back (flow
  // control). Returns the stream's terminal error once it has ended.
  virtual Status Send(const StreamItem& item) = 0;
  // Sends a heartbeat now (the caller decides when the stream is idle).
  virtual Status Heartbeat() = 0;
  // A barrier: asks the backup to answer with a kSynced ack of `token` once it has received
  // and handled everything sent before (streams are ordered). Unimplemented on a link that
  // cannot (the caller then goes without).
  virtual Status Sync(uint64_t token) {
    (void)token;
    return absl::UnimplementedError("this stream has no sync barrier");
  }
  // Half-closes the stream and waits (bounded by `timeout`) for the backup's last acks and end.
  virtual Status Finish(std::chrono::milliseconds timeout) = 0;
  // Breaks the stream off; the done callback reports Cancelled. Safe from any thread.
  virtual void Cancel() = 0;
};

struct EpochStreamCallbacks {
  std::function<void(const StreamAck&)> on_ack;
  // Called exactly once when the stream ends, with the backup's refusal or the transport error
  // (OK after a clean Finish()).
  std::function<void(const Status&)> on_done;
};

class ReplicationLink {
 public:
  virtual ~ReplicationLink() = default;
  // Opens a stream to the agent at `address` and sends `open`. Fails with Unavailable when the
  // backup cannot be reached; a refusal of `open` itself arrives through on_done, which is
  // called exactly once in every case (also when Open() fails).
  virtual StatusOr<std::unique_ptr<EpochStream>> Open(const std::string& address,
                                                      const StreamOpen& open,
                                                      EpochStreamCallbacks callbacks) = 0;
  // Asks the backup at `address` for its basis of `open.instance_uuid` (core/replica_basis.h),
  // as `open.primary_host`, to be named in the next Open()'s StreamOpen::basis_id. NotFound:
  // it holds nothing usable (seed in full); the taken-over refusal as for Open();
  // Unimplemented: a link without bases. Blocks the calling thread, bounded by `timeout`.
  virtual StatusOr<ReplicaBasis> Basis(const std::string& address, const StreamOpen& open,
                                        std::chrono::milliseconds timeout) {
    (void)address, (void)open, (void)timeout;
    return absl::UnimplementedError("this link carries no replica bases");
  }
  // Tells the backup at `address` that `open.primary_host` ends protection of
  // `open.instance_uuid` on purpose, before it releases output the replica lacks: OK once the
  // backup recorded that it will never restore that replica. Blocks, bounded by `timeout`.
  virtual Status Release(const std::string& address, const StreamOpen& open,
                         std::chrono::milliseconds timeout) {
    (void)address, (void)open, (void)timeout;
    return absl::UnimplementedError("this link cannot release replicas");
  }
};

}  // namespace novadt::core
