#include "agent/core/replication_receiver.h"

#include <set>
#include <string>
#include <string_view>

#include "agent/common/identifiers.h"

namespace novadt::core {
namespace {

std::string Str(uint64_t v) { return std::to_string(v); }
// A peer's name for a message: quoted, printable, bounded.
std::string Quoted(std::string_view v) { return "'" + Printable(v) + "'"; }

}  // namespace

StatusOr<std::unique_ptr<ReplicationReceiver>> ReplicationReceiver::Start(
    const StreamOpen& open, const ReplicaSinkFactory& factory, const StreamLimits& limits) {
  if (open.protocol < kMinReplicationProtocolVersion ||
      open.protocol > kReplicationProtocolVersion) {
    return absl::FailedPreconditionError(
        "replication protocol version " + Str(open.protocol) + " from " +
        Printable(open.primary_host) + ", this agent speaks " +
        Str(kMinReplicationProtocolVersion) + " to " + Str(kReplicationProtocolVersion));
  }
  if (open.basis_id != 0 && open.protocol < 3) {
    return absl::InvalidArgumentError("StreamOpen names a basis in protocol version " +
                                      Str(open.protocol));
  }
  NOVA_DT_RETURN_IF_ERROR(ValidateInstanceUuid(open.instance_uuid));
  NOVA_DT_RETURN_IF_ERROR(ValidateHostName(open.primary_host));
  if (open.ram_size_bytes == 0 || open.ram_size_bytes % kGuestPageSize != 0) {
    return absl::InvalidArgumentError("StreamOpen ram_size_bytes " + Str(open.ram_size_bytes) +
                                      " is not a positive multiple of the page size");
  }
  if (open.ram_size_bytes > limits.max_guest_ram_bytes) {
    return absl::ResourceExhaustedError(
        "guest RAM of " + Str(open.ram_size_bytes) + " bytes is more than this backup accepts " +
        "([replication] max_guest_ram_bytes = " + Str(limits.max_guest_ram_bytes) + ")");
  }
  if (open.disks.size() > limits.max_disks) {
    return absl::ResourceExhaustedError(Str(open.disks.size()) +
                                        " disks are more than this backup accepts "
                                        "([replication] max_disks = " +
                                        Str(limits.max_disks) + ")");
  }
  std::set<std::string_view> names;
  for (const auto& d : open.disks) {
    NOVA_DT_RETURN_IF_ERROR(ValidateDiskName(d.name));
    if (d.size_bytes == 0) {
      return absl::InvalidArgumentError("StreamOpen disk '" + d.name + "' has no size");
    }
    if (d.size_bytes > limits.max_disk_bytes) {
      return absl::ResourceExhaustedError(
          "disk '" + d.name + "' of " + Str(d.size_bytes) + " bytes is larger than this backup " +
          "accepts ([replication] max_disk_bytes = " + Str(limits.max_disk_bytes) + ")");
    }
    if (!names.insert(d.name).second) {
      return absl::InvalidArgumentError("StreamOpen names disk '" + d.name + "' twice");
    }
  }
  if (!open.boot_files.empty() && open.protocol < kBootFilesProtocolVersion) {
    return absl::InvalidArgumentError("StreamOpen declares boot files in protocol version " +
                                      Str(open.protocol));
  }
  std::set<std::string_view> boot_names;
  for (const auto& f : open.boot_files) {
    if (!IsBootFileName(f.name)) {
      return absl::InvalidArgumentError("StreamOpen boot file " + Quoted(f.name) +
                                        " is neither kernel nor ramdisk");
    }
    if (!boot_names.insert(f.name).second) {
      return absl::InvalidArgumentError("StreamOpen names boot file '" + f.name + "' twice");
    }
    if (f.size_bytes == 0) {
      return absl::InvalidArgumentError("StreamOpen boot file '" + f.name + "' is empty");
    }
    if (f.size_bytes > limits.max_boot_file_bytes) {
      return absl::ResourceExhaustedError(
          "boot file '" + f.name + "' of " + Str(f.size_bytes) +
          " bytes is larger than this backup accepts ([replication] max_boot_file_bytes = " +
          Str(limits.max_boot_file_bytes) + ")");
    }
  }
  if (open.domain_xml.size() > limits.max_domain_xml_bytes) {
    return absl::ResourceExhaustedError("domain XML of " + Str(open.domain_xml.size()) +
                                        " bytes (at most " + Str(limits.max_domain_xml_bytes) +
                                        ")");
  }
  auto sink = factory(open);
  if (!sink.ok()) return sink.status();
  return std::unique_ptr<ReplicationReceiver>(
      new ReplicationReceiver(open, *std::move(sink), limits));
}

Status ReplicationReceiver::CountEpochBytes(uint64_t bytes) {
  epoch_bytes_ += bytes;
  // The stream's first epoch is its seed: written in place, bounded by the replica's geometry.
  if (last_committed_ == 0 || epoch_bytes_ <= limits_.max_epoch_bytes) return absl::OkStatus();
  return absl::ResourceExhaustedError(
      "epoch " + Str(epoch_) + " carries more than " + Str(limits_.max_epoch_bytes) +
      " bytes ([replication] max_epoch_bytes of the backup)");
}

Status ReplicationReceiver::HandleBootFile(const BootFileChunk& c) {
  if (boot_files_done_) {
    return absl::InvalidArgumentError("BootFileChunk of " + Quoted(c.name) +
                                      " after the first epoch began");
  }
  if (boot_file_ >= open_.boot_files.size()) {
    return absl::InvalidArgumentError("BootFileChunk of " + Quoted(c.name) + " but " +
                                      (open_.boot_files.empty()
                                           ? std::string("the StreamOpen declares no boot file")
                                           : std::string("every declared boot file is complete")));
  }
  const BootFile& file = open_.boot_files[boot_file_];
  if (c.name != file.name) {
    return absl::InvalidArgumentError("BootFileChunk of " + Quoted(c.name) + " while boot file '" +
                                      file.name + "' is incomplete (" + Str(boot_file_bytes_) +
                                      " of " + Str(file.size_bytes) + " bytes)");
  }
  if (c.data.empty()) {
    return absl::InvalidArgumentError("empty BootFileChunk of '" + file.name + "'");
  }
  if (c.offset != boot_file_bytes_) {
    return absl::InvalidArgumentError("BootFileChunk of '" + file.name + "' at offset " +
                                      Str(c.offset) + ", expected " + Str(boot_file_bytes_));
  }
  if (c.data.size() > file.size_bytes - boot_file_bytes_) {
    return absl::InvalidArgumentError("BootFileChunk of '" + file.name + "' at " + Str(c.offset) +
                                      "+" + Str(c.data.size()) + " beyond its declared " +
                                      Str(file.size_bytes) + " bytes");
  }
  NOVA_DT_RETURN_IF_ERROR(sink_->AddBootFileData(c));
  boot_file_bytes_ += c.data.size();
  if (boot_file_bytes_ == file.size_bytes) {
    ++boot_file_;
    boot_file_bytes_ = 0;
  }
  return absl::OkStatus();
}

Status ReplicationReceiver::EndBootFiles() {
  if (boot_file_ < open_.boot_files.size()) {
    const BootFile& file = open_.boot_files[boot_file_];
    return absl::InvalidArgumentError("EpochBegin before boot file '" + file.name +
                                      "' is complete (" + Str(boot_file_bytes_) + " of " +
                                      Str(file.size_bytes) + " bytes)");
  }
  NOVA_DT_RETURN_IF_ERROR(sink_->EndBootFiles());
  boot_files_done_ = true;
  return absl::OkStatus();
}

Status ReplicationReceiver::Expect(bool in_epoch, const char* item) const {
  if (in_epoch_ == in_epoch) return absl::OkStatus();
  return absl::InvalidArgumentError(
      std::string(item) +
      (in_epoch ? " outside an epoch" : " while epoch " + Str(epoch_) + " is still open"));
}

StatusOr<std::optional<uint64_t>> ReplicationReceiver::Handle(const StreamItem& item) {
  const std::optional<uint64_t> no_ack;
  if (const auto* f = std::get_if<BootFileChunk>(&item)) {
    NOVA_DT_RETURN_IF_ERROR(Expect(false, "BootFileChunk"));
    NOVA_DT_RETURN_IF_ERROR(HandleBootFile(*f));
    return no_ack;
  }
  if (const auto* b = std::get_if<EpochBegin>(&item)) {
    NOVA_DT_RETURN_IF_ERROR(Expect(false, "EpochBegin"));
    if (!boot_files_done_) NOVA_DT_RETURN_IF_ERROR(EndBootFiles());
    if (b->epoch != last_committed_ + 1 && last_committed_ != 0) {
      return absl::InvalidArgumentError("EpochBegin " + Str(b->epoch) + " after committed epoch " +
                                        Str(last_committed_) + " (wrong epoch order)");
    }
    NOVA_DT_RETURN_IF_ERROR(sink_->BeginEpoch(b->epoch));
    in_epoch_ = true;
    device_state_done_ = false;
    state_wire_.clear();
    epoch_ = b->epoch;
    pages_ = disk_writes_ = device_state_bytes_ = epoch_bytes_ = 0;
    return no_ack;
  }
  if (const auto* p = std::get_if<RamPages>(&item)) {
    NOVA_DT_RETURN_IF_ERROR(Expect(true, "RamPages"));
    if (p->data.size() != p->page_index.size() * kGuestPageSize) {
      return absl::InvalidArgumentError("RamPages with " + Str(p->page_index.size()) +
                                        " pages carries " + Str(p->data.size()) + " bytes");
    }
    const uint64_t page_count = open_.ram_size_bytes / kGuestPageSize;
    for (uint64_t idx : p->page_index) {
      if (idx >= page_count) {
        return absl::InvalidArgumentError("RamPages page " + Str(idx) + " beyond guest RAM (" +
                                          Str(page_count) + " pages)");
      }
    }
    NOVA_DT_RETURN_IF_ERROR(CountEpochBytes(p->data.size()));
    NOVA_DT_RETURN_IF_ERROR(sink_->AddPages(*p));
    pages_ += p->page_index.size();
    return no_ack;
  }
  if (const auto* w = std::get_if<DiskWrite>(&item)) {
    NOVA_DT_RETURN_IF_ERROR(Expect(true, "DiskWrite"));
    const DiskGeometry* disk = nullptr;
    for (const auto& d : open_.disks) {
      if (d.name == w->disk) disk = &d;
    }
    if (!disk) return absl::InvalidArgumentError("DiskWrite to unknown disk '" + w->disk + "'");
    const uint64_t len = w->zeroes ? w->length : w->data.size();
    if (w->zeroes && !w->data.empty()) {
      return absl::InvalidArgumentError("DiskWrite of zeroes carries data");
    }
    if (w->offset > disk->size_bytes || len > disk->size_bytes - w->offset) {
      return absl::InvalidArgumentError("DiskWrite " + Str(w->offset) + "+" + Str(len) +
                                        " beyond disk '" + w->disk + "' (" +
                                        Str(disk->size_bytes) + " bytes)");
    }
    NOVA_DT_RETURN_IF_ERROR(CountEpochBytes(len));
    NOVA_DT_RETURN_IF_ERROR(sink_->AddDiskWrite(*w));
    ++disk_writes_;
    return no_ack;
  }
  if (const auto* c = std::get_if<DeviceStateChunk>(&item)) {
    NOVA_DT_RETURN_IF_ERROR(Expect(true, "DeviceState"));
    if (device_state_done_) {
      return absl::InvalidArgumentError("DeviceState after the last chunk of epoch " + Str(epoch_));
    }
    if (device_state_bytes_ == 0 && state_wire_.empty()) {
      state_encoding_ = c->encoding;
    } else if (c->encoding != state_encoding_) {
      return absl::InvalidArgumentError("DeviceState chunks of epoch " + Str(epoch_) +
                                        " with different encodings");
    }
    if (c->data.size() > limits_.max_device_state_bytes - device_state_bytes_) {
      return absl::ResourceExhaustedError(
          "device state of epoch " + Str(epoch_) + " is larger than " +
          Str(limits_.max_device_state_bytes) +
          " bytes ([replication] max_device_state_bytes of the backup)");
    }
    NOVA_DT_RETURN_IF_ERROR(CountEpochBytes(c->data.size()));
    device_state_bytes_ += c->data.size();
    device_state_done_ = c->last;
    // Raw chunks go to the sink as they come; the decoder needs the whole state either way (a
    // raw one is the base of the next delta), a delta only decodes whole.
    if (state_encoding_ == DeviceStateEncoding::kRaw) {
      NOVA_DT_RETURN_IF_ERROR(sink_->AddDeviceState(*c));
    }
    state_wire_ += c->data;
    if (!c->last) return no_ack;
    auto state = device_states_.Decode(state_encoding_, state_wire_);
    state_wire_.clear();
    if (!state.ok()) return state.status();
    if (state_encoding_ != DeviceStateEncoding::kRaw) {
      NOVA_DT_RETURN_IF_ERROR(sink_->AddDeviceState(DeviceStateChunk{*std::move(state), true}));
    }
    return no_ack;
  }
  const auto& e = std::get<EpochEnd>(item);
  NOVA_DT_RETURN_IF_ERROR(Expect(true, "EpochEnd"));
  if (e.epoch != epoch_) {
    return absl::InvalidArgumentError("EpochEnd " + Str(e.epoch) + " for open epoch " + Str(epoch_));
  }
  if (!device_state_done_) {
    return absl::InvalidArgumentError("EpochEnd " + Str(e.epoch) + " without the device state");
  }
  if (e.pages != pages_ || e.disk_writes != disk_writes_ ||
      e.device_state_bytes != device_state_bytes_) {
    return absl::InvalidArgumentError(
        "epoch " + Str(e.epoch) + " incomplete: primary sent " + Str(e.pages) + " pages, " +
        Str(e.disk_writes) + " disk writes, " + Str(e.device_state_bytes) +
        " device-state bytes; received " + Str(pages_) + ", " + Str(disk_writes_) + ", " +
        Str(device_state_bytes_));
  }
  NOVA_DT_RETURN_IF_ERROR(sink_->CommitEpoch(e));
  in_epoch_ = false;
  last_committed_ = e.epoch;
  return std::optional<uint64_t>(e.epoch);
}

void ReplicationReceiver::Close(Status why) {
  if (closed_) return;
  closed_ = true;
  if (why.ok() && in_epoch_) {
    why = absl::DataLossError("stream ended inside epoch " + Str(epoch_) +
                              "; the replica stays at epoch " + Str(last_committed_));
  }
  sink_->Close(why);
}

}  // namespace novadt::core
