// On-disk formats of a replica directory (see replica_store.h): the epoch record, the commit
// mark and the redo journal's framing. Little-endian, each small file ending in an XXH3-64 of
// all its preceding bytes so that a torn or flipped file is detected, never misread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "agent/common/status.h"
#include "agent/replica/replica_store.h"

namespace novadt::replica {

inline constexpr std::string_view kRamFile = "ram.img";
inline constexpr std::string_view kRecordFile = "epoch.rec";
inline constexpr std::string_view kJournalFile = "journal.redo";
inline constexpr std::string_view kMarkFile = "journal.commit";
inline constexpr std::string_view kTmpSuffix = ".tmp";

std::string DeviceStateFileName(uint32_t slot);
std::string DiskFileName(std::string_view disk);

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
