// Backup side of one replication stream, transport-free: checks the order and completeness of
// what arrives (StreamOpen, then per epoch EpochBegin, data items, EpochEnd) and drives the
// ReplicaSink. The gRPC service feeds it; tests feed it directly.
//
// Not thread-safe: one stream, one thread.
#pragma once

#include <memory>
#include <optional>

#include "agent/core/device_state_codec.h"
#include "agent/core/replication_link.h"

namespace novadt::core {

// What a backup accepts from one stream ([replication] max_* options, docs/security.md): every
// byte from the primary is checked against these before it is held or stored.
struct StreamLimits {
  uint64_t max_guest_ram_bytes = 1ull << 40;
  size_t max_disks = 32;
  uint64_t max_disk_bytes = 16ull << 40;
  size_t max_domain_xml_bytes = 1 << 20;
  // Encoded bytes of one epoch's device state (held in memory until its last chunk).
  uint64_t max_device_state_bytes = 256ull << 20;
  // Bytes of one epoch (pages, disk writes including zeroed ranges, device state), except the
  // stream's first epoch: the seed is written in place and bounded by the geometry.
  uint64_t max_epoch_bytes = 512ull << 20;
  // Bytes of one boot file (StreamOpen::boot_files; at most two per stream: kernel, ramdisk).
  uint64_t max_boot_file_bytes = 256ull << 20;
};

class ReplicationReceiver {
 public:
  // Checks `open` (protocol version, identity: canonical instance UUID, host and disk names;
  // geometry and boot files within `limits`: each named kernel or ramdisk at most once, not
  // empty, at most max_boot_file_bytes, only from protocol 4 on) and asks `factory` for the
  // sink. FailedPrecondition for another protocol version, InvalidArgument for a malformed open,
  // ResourceExhausted for one beyond `limits` (nothing is made: the factory is not called), and
  // the factory's own error when it refuses.
  static StatusOr<std::unique_ptr<ReplicationReceiver>> Start(const StreamOpen& open,
                                                              const ReplicaSinkFactory& factory,
                                                              const StreamLimits& limits = {});

  // Handles the next item. Returns the epoch to acknowledge when `item` completed one, nullopt
  // otherwise, or the error that ends the stream: InvalidArgument for a malformed item or one
  // out of order (the message says which; e.g. a boot file chunk that is not the next bytes of
  // the next declared file, or an EpochBegin before every declared boot file is complete),
  // ResourceExhausted for an epoch or device state beyond the limits, the sink's error when it
  // refuses. The sink's EndBootFiles() runs before the stream's first BeginEpoch. After an
  // error the receiver must not be fed again.
  StatusOr<std::optional<uint64_t>> Handle(const StreamItem& item);

  // A heartbeat (or any message) arrived.
  void Heard() { sink_->OnPrimaryHeard(); }

  // The stream ended, cleanly (`why` OK) or not. An epoch still open is reported as the reason
  // (the primary went away mid-epoch); the sink drops it.
  void Close(Status why);

  const StreamOpen& open() const { return open_; }
  uint64_t last_committed() const { return last_committed_; }

 private:
  ReplicationReceiver(StreamOpen open, std::unique_ptr<ReplicaSink> sink, StreamLimits limits)
      : open_(std::move(open)), sink_(std::move(sink)), limits_(limits) {}

  Status Expect(bool in_epoch, const char* item) const;
  // Counts `bytes` more of the open epoch; ResourceExhausted beyond max_epoch_bytes.
  Status CountEpochBytes(uint64_t bytes);
  Status HandleBootFile(const BootFileChunk& chunk);
  // Before the first epoch: every declared boot file complete, then the sink's EndBootFiles().
  Status EndBootFiles();

  StreamOpen open_;
  std::unique_ptr<ReplicaSink> sink_;
  const StreamLimits limits_;
  bool in_epoch_ = false;
  bool device_state_done_ = false;
  bool closed_ = false;
  uint64_t epoch_ = 0;
  uint64_t last_committed_ = 0;
  bool boot_files_done_ = false;  // EndBootFiles() ran: no more boot file chunks
  size_t boot_file_ = 0;          // index into open_.boot_files of the file being received
  uint64_t boot_file_bytes_ = 0;  // of it, received so far
  uint64_t pages_ = 0;
  uint64_t disk_writes_ = 0;
  uint64_t device_state_bytes_ = 0;       // on the wire (encoded), as EpochEnd counts them
  uint64_t epoch_bytes_ = 0;              // of the open epoch, for max_epoch_bytes
  DeviceStateDecoder device_states_;      // the stream's previous state, for deltas
  DeviceStateEncoding state_encoding_ = DeviceStateEncoding::kRaw;  // of this epoch's chunks
  std::string state_wire_;                // this epoch's chunks so far
};

}  // namespace novadt::core
