// On-disk formats of a replica directory (see replica_store.h): the epoch record, the commit
// mark and the redo journal's framing. Little-endian, each small file ending in an XXH3-64 of
// all its preceding bytes so that a torn or flipped file is detected, never misread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/common/status.h"
#include "agent/replica/replica_store.h"

namespace novadt::replica {

inline constexpr std::string_view kRamFile = "ram.img";
inline constexpr std::string_view kRecordFile = "epoch.rec";
inline constexpr std::string_view kJournalFile = "journal.redo";
inline constexpr std::string_view kMarkFile = "journal.commit";
inline constexpr std::string_view kTmpSuffix = ".tmp";

inline constexpr std::string_view kBootRecordFile = "boot.rec";

std::string DeviceStateFileName(uint32_t slot);
std::string DiskFileName(std::string_view disk);
// "boot-<name>" of a boot file (core::IsBootFileName).
std::string BootFileName(std::string_view name);

// epoch.rec: what "committed" means.
struct EpochRecord {
  uint64_t epoch = 0;
  ReplicaGeometry geometry;
  uint32_t devstate_slot = 0;  // 0 or 1
  uint64_t devstate_size = 0;
  uint64_t devstate_hash = 0;  // XXH3-64 of the blob
};
std::string EncodeEpochRecord(const EpochRecord& record);
// DataLoss for a short, corrupt (checksum) or malformed record.
StatusOr<EpochRecord> DecodeEpochRecord(std::string_view bytes);

// boot.rec: the boot files the replica holds (ReplicaStore::BeginBootFiles), each in
// boot-<name>: its size and XXH3-64. No boot.rec: none.
struct BootRecordEntry {
  std::string name;  // core::IsBootFileName
  uint64_t size = 0;
  uint64_t hash = 0;
  bool operator==(const BootRecordEntry&) const = default;
};
std::string EncodeBootRecord(const std::vector<BootRecordEntry>& files);
// DataLoss for a short, corrupt (checksum) or malformed record, an unknown or repeated name.
StatusOr<std::vector<BootRecordEntry>> DecodeBootRecord(std::string_view bytes);

// journal.commit: its presence makes journal.redo of `epoch` valid.
struct CommitMark {
  uint64_t epoch = 0;
  uint64_t journal_size = 0;
  uint64_t journal_hash = 0;  // XXH3-64 of all of journal.redo
  uint32_t devstate_slot = 0;
  uint64_t devstate_size = 0;
  uint64_t devstate_hash = 0;
};
std::string EncodeCommitMark(const CommitMark& mark);
StatusOr<CommitMark> DecodeCommitMark(std::string_view bytes);

// journal.redo = header, then records:
//   kPages:     u8 type, u32 count, count x u64 page index, count x 4096 bytes
//   kDiskWrite: u8 type, u32 disk index (geometry order), u64 offset, u64 length, bytes
inline constexpr std::string_view kJournalMagic = "NDTJRNL1";
inline constexpr size_t kJournalHeaderSize = 16;  // magic + u64 epoch
inline constexpr uint8_t kRecordPages = 1;
inline constexpr uint8_t kRecordDiskWrite = 2;
std::string EncodeJournalHeader(uint64_t epoch);

// Sequential reader over the bytes of a journal (in memory, or journal.redo in the store).
class JournalSource {
 public:
  virtual ~JournalSource() = default;
  // Exactly n bytes, or DataLoss when fewer are left (or the I/O error).
  virtual Status Read(char* dst, size_t n) = 0;
  // Bytes read so far.
  virtual uint64_t pos() const = 0;
};

class MemoryJournalSource final : public JournalSource {
 public:
  explicit MemoryJournalSource(std::string_view bytes) : bytes_(bytes) {}
  Status Read(char* dst, size_t n) override;
  uint64_t pos() const override { return pos_; }

 private:
  std::string_view bytes_;
  size_t pos_ = 0;
};

// What a replayed journal asks for, in record order.
class JournalVisitor {
 public:
  virtual ~JournalVisitor() = default;
  // Called before each record (the store's kApplyRecord fault point); an error stops the replay.
  virtual Status BeforeRecord() { return absl::OkStatus(); }
  // RAM page `page` (below ram_size / kReplicaPageSize) gets `bytes` (kReplicaPageSize long).
  virtual Status Page(uint64_t page, std::string_view bytes) = 0;
  // Disk `disk` (an index into geometry.disks) gets `bytes` at `offset`; the range lies within
  // the disk. A long write comes as consecutive pieces of at most kJournalReadChunk bytes.
  virtual Status DiskBytes(size_t disk, uint64_t offset, std::string_view bytes) = 0;
};
inline constexpr size_t kJournalReadChunk = 1 << 20;

// Replays the journal of `epoch`, the first `size` bytes of `src`, against `geometry`. Every
// count, page index, disk index, offset and length is checked against the geometry and the
// bytes left before it is used: a journal that is not what Commit() wrote is DataLoss (bad
// header, truncated record, page beyond RAM, write beyond a disk, unknown record type), never
// an out-of-range write, an allocation the journal cannot fill, or a throw. The visitor's
// first error stops the replay and is returned.
Status ReplayJournal(uint64_t epoch, uint64_t size, const ReplicaGeometry& geometry,
                     JournalSource& src, JournalVisitor& visitor);

// Little-endian helpers.
void PutU8(std::string* out, uint8_t v);
void PutU16(std::string* out, uint16_t v);
void PutU32(std::string* out, uint32_t v);
void PutU64(std::string* out, uint64_t v);
uint64_t GetU64(const char* p);
uint32_t GetU32(const char* p);

uint64_t Hash64(std::string_view bytes);

// absl::StrCat that also takes std::string_view (Debian's abseil has its own string_view).
template <typename... Args>
std::string Cat(const Args&... args) {
  std::string out;
  auto piece = [&out](const auto& a) {
    if constexpr (std::is_convertible_v<decltype(a), std::string_view>) {
      out.append(std::string_view(a));
    } else {
      out.append(absl::StrCat(a));
    }
  };
  (piece(args), ...);
  return out;
}

// Checks a disk name (see DiskGeometry::name).
bool ValidDiskName(std::string_view name);
// InvalidArgument when the geometry is unusable.
Status ValidateGeometry(const ReplicaGeometry& geometry);

}  // namespace novadt::replica
