#include "agent/replica/replica_format.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"

namespace novadt::replica {
namespace {

constexpr std::string_view kRecordMagic = "NDTEREC1";
constexpr std::string_view kMarkMagic = "NDTJMRK1";
constexpr std::string_view kBootMagic = "NDTBOOT1";
constexpr uint32_t kFormatVersion = 1;

// Bounds-checked reader over a decoded file.
class Decoder {
 public:
  explicit Decoder(std::string_view b) : b_(b) {}
  bool U8(uint8_t* v) {
    if (!Have(1)) return false;
    *v = static_cast<uint8_t>(b_[pos_++]);
    return true;
  }
  bool U16(uint16_t* v) {
    if (!Have(2)) return false;
    *v = static_cast<uint16_t>(static_cast<uint8_t>(b_[pos_]) |
                               (static_cast<uint8_t>(b_[pos_ + 1]) << 8));
    pos_ += 2;
    return true;
  }
  bool U32(uint32_t* v) {
    if (!Have(4)) return false;
    *v = GetU32(b_.data() + pos_);
    pos_ += 4;
    return true;
  }
  bool U64(uint64_t* v) {
    if (!Have(8)) return false;
    *v = GetU64(b_.data() + pos_);
    pos_ += 8;
    return true;
  }
  bool Bytes(size_t n, std::string_view* v) {
    if (!Have(n)) return false;
    *v = b_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool done() const { return pos_ == b_.size(); }

 private:
  bool Have(size_t n) const { return b_.size() - pos_ >= n; }
  std::string_view b_;
  size_t pos_ = 0;
};

void Seal(std::string* out) { PutU64(out, Hash64(*out)); }

// Checks magic and trailing checksum; returns the body between them.
StatusOr<std::string_view> Unseal(std::string_view bytes, std::string_view magic,
                                  std::string_view what) {
  if (bytes.size() < magic.size() + 4 + 8) {
    return absl::DataLossError(Cat(what, ": short file (", bytes.size(), " bytes)"));
  }
  std::string_view body = bytes.substr(0, bytes.size() - 8);
  if (GetU64(bytes.data() + body.size()) != Hash64(body)) {
    return absl::DataLossError(Cat(what, ": checksum mismatch"));
  }
  if (body.substr(0, magic.size()) != magic) {
    return absl::DataLossError(Cat(what, ": bad magic"));
  }
  if (GetU32(body.data() + magic.size()) != kFormatVersion) {
    return absl::DataLossError(Cat(what, ": unknown format version"));
  }
  return body.substr(magic.size() + 4);
}

}  // namespace

std::string DeviceStateFileName(uint32_t slot) { return Cat("devstate-", slot, ".bin"); }
std::string DiskFileName(std::string_view disk) { return Cat("disk-", disk, ".raw"); }
std::string BootFileName(std::string_view name) { return Cat("boot-", name); }

void PutU8(std::string* out, uint8_t v) { out->push_back(static_cast<char>(v)); }
void PutU16(std::string* out, uint16_t v) {
  PutU8(out, v & 0xff);
  PutU8(out, v >> 8);
}
void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) PutU8(out, (v >> (8 * i)) & 0xff);
}
void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) PutU8(out, (v >> (8 * i)) & 0xff);
}
uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

uint64_t Hash64(std::string_view bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

bool ValidDiskName(std::string_view name) {
  if (name.empty() || name.size() > 64 || name[0] == '.') return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Status ValidateGeometry(const ReplicaGeometry& g) {
  if (g.ram_size == 0 || g.ram_size % kReplicaPageSize != 0) {
    return absl::InvalidArgumentError(
        Cat("ram_size ", g.ram_size, " is not a non-zero multiple of 4096"));
  }
  std::set<std::string> seen;
  for (const DiskGeometry& d : g.disks) {
    if (!ValidDiskName(d.name)) {
      return absl::InvalidArgumentError(Cat("bad disk name '", d.name, "'"));
    }
    if (!seen.insert(d.name).second) {
      return absl::InvalidArgumentError(Cat("duplicate disk name '", d.name, "'"));
    }
  }
  return absl::OkStatus();
}

std::string EncodeEpochRecord(const EpochRecord& r) {
  std::string out(kRecordMagic);
  PutU32(&out, kFormatVersion);
  PutU64(&out, r.epoch);
  PutU64(&out, r.geometry.ram_size);
  PutU32(&out, r.devstate_slot);
  PutU64(&out, r.devstate_size);
  PutU64(&out, r.devstate_hash);
  PutU32(&out, static_cast<uint32_t>(r.geometry.disks.size()));
  for (const DiskGeometry& d : r.geometry.disks) {
    PutU16(&out, static_cast<uint16_t>(d.name.size()));
    out.append(d.name);
    PutU64(&out, d.size);
  }
  Seal(&out);
  return out;
}

StatusOr<EpochRecord> DecodeEpochRecord(std::string_view bytes) {
  StatusOr<std::string_view> body = Unseal(bytes, kRecordMagic, kRecordFile);
  if (!body.ok()) return body.status();
  Decoder d(*body);
  EpochRecord r;
  uint32_t ndisks = 0;
  if (!d.U64(&r.epoch) || !d.U64(&r.geometry.ram_size) || !d.U32(&r.devstate_slot) ||
      !d.U64(&r.devstate_size) || !d.U64(&r.devstate_hash) || !d.U32(&ndisks)) {
    return absl::DataLossError("epoch.rec: truncated header");
  }
  if (ndisks > 4096) return absl::DataLossError("epoch.rec: absurd disk count");
  for (uint32_t i = 0; i < ndisks; ++i) {
    uint16_t len = 0;
    std::string_view name;
    DiskGeometry disk;
    if (!d.U16(&len) || !d.Bytes(len, &name) || !d.U64(&disk.size)) {
      return absl::DataLossError("epoch.rec: truncated disk list");
    }
    disk.name = std::string(name);
    r.geometry.disks.push_back(std::move(disk));
  }
  if (!d.done()) return absl::DataLossError("epoch.rec: trailing bytes");
  if (r.devstate_slot > 1) return absl::DataLossError("epoch.rec: bad devstate slot");
  if (Status st = ValidateGeometry(r.geometry); !st.ok()) {
    return absl::DataLossError(Cat("epoch.rec: ", st.message()));
  }
  return r;
}

std::string EncodeBootRecord(const std::vector<BootRecordEntry>& files) {
  std::string out(kBootMagic);
  PutU32(&out, kFormatVersion);
  PutU32(&out, static_cast<uint32_t>(files.size()));
  for (const BootRecordEntry& f : files) {
    PutU16(&out, static_cast<uint16_t>(f.name.size()));
    out.append(f.name);
    PutU64(&out, f.size);
    PutU64(&out, f.hash);
  }
  Seal(&out);
  return out;
}

StatusOr<std::vector<BootRecordEntry>> DecodeBootRecord(std::string_view bytes) {
  StatusOr<std::string_view> body = Unseal(bytes, kBootMagic, kBootRecordFile);
  if (!body.ok()) return body.status();
  Decoder d(*body);
  uint32_t count = 0;
  if (!d.U32(&count)) return absl::DataLossError("boot.rec: truncated header");
  if (count > 2) return absl::DataLossError("boot.rec: more than two boot files");
  std::vector<BootRecordEntry> files;
  for (uint32_t i = 0; i < count; ++i) {
    uint16_t len = 0;
    std::string_view name;
    BootRecordEntry f;
    if (!d.U16(&len) || !d.Bytes(len, &name) || !d.U64(&f.size) || !d.U64(&f.hash)) {
      return absl::DataLossError("boot.rec: truncated entry");
    }
    if (!core::IsBootFileName(name)) return absl::DataLossError("boot.rec: unknown boot file");
    for (const BootRecordEntry& seen : files) {
      if (seen.name == name) return absl::DataLossError("boot.rec: a boot file twice");
    }
    f.name = std::string(name);
    files.push_back(std::move(f));
  }
  if (!d.done()) return absl::DataLossError("boot.rec: trailing bytes");
  return files;
}

std::string EncodeCommitMark(const CommitMark& m) {
  std::string out(kMarkMagic);
  PutU32(&out, kFormatVersion);
  PutU64(&out, m.epoch);
  PutU64(&out, m.journal_size);
  PutU64(&out, m.journal_hash);
  PutU32(&out, m.devstate_slot);
  PutU64(&out, m.devstate_size);
  PutU64(&out, m.devstate_hash);
  Seal(&out);
  return out;
}

StatusOr<CommitMark> DecodeCommitMark(std::string_view bytes) {
  StatusOr<std::string_view> body = Unseal(bytes, kMarkMagic, kMarkFile);
  if (!body.ok()) return body.status();
  Decoder d(*body);
  CommitMark m;
  if (!d.U64(&m.epoch) || !d.U64(&m.journal_size) || !d.U64(&m.journal_hash) ||
      !d.U32(&m.devstate_slot) || !d.U64(&m.devstate_size) || !d.U64(&m.devstate_hash) ||
      !d.done()) {
    return absl::DataLossError("journal.commit: malformed");
  }
  if (m.devstate_slot > 1) return absl::DataLossError("journal.commit: bad devstate slot");
  return m;
}

std::string EncodeJournalHeader(uint64_t epoch) {
  std::string out(kJournalMagic);
  PutU64(&out, epoch);
  return out;
}

Status MemoryJournalSource::Read(char* dst, size_t n) {
  if (bytes_.size() - pos_ < n) return absl::DataLossError("journal: truncated record");
  std::memcpy(dst, bytes_.data() + pos_, n);
  pos_ += n;
  return absl::OkStatus();
}

Status ReplayJournal(uint64_t epoch, uint64_t size, const ReplicaGeometry& geometry,
                     JournalSource& src, JournalVisitor& visitor) {
  char head[kJournalHeaderSize];
  if (size < sizeof head) return absl::DataLossError("journal: shorter than its header");
  NOVA_DT_RETURN_IF_ERROR(src.Read(head, sizeof head));
  if (std::string_view(head, kJournalMagic.size()) != kJournalMagic ||
      GetU64(head + kJournalMagic.size()) != epoch) {
    return absl::DataLossError("journal: bad header");
  }
  const uint64_t pages = geometry.ram_size / kReplicaPageSize;
  // Bytes of the journal not read yet.
  auto left = [&] { return src.pos() < size ? size - src.pos() : 0; };
  std::string buf;
  while (src.pos() < size) {
    NOVA_DT_RETURN_IF_ERROR(visitor.BeforeRecord());
    char type;
    NOVA_DT_RETURN_IF_ERROR(src.Read(&type, 1));
    if (static_cast<uint8_t>(type) == kRecordPages) {
      char cnt[4];
      NOVA_DT_RETURN_IF_ERROR(src.Read(cnt, 4));
      const uint32_t count = GetU32(cnt);
      // Checked before the index array is allocated: a corrupt count must not ask for 32 GiB.
      if (count > left() / (8 + kReplicaPageSize)) {
        return absl::DataLossError("journal: page record longer than the journal");
      }
      std::string idx(static_cast<size_t>(count) * 8, '\0');
      NOVA_DT_RETURN_IF_ERROR(src.Read(idx.data(), idx.size()));
      buf.resize(kReplicaPageSize);
      for (uint32_t i = 0; i < count; ++i) {
        const uint64_t page = GetU64(idx.data() + size_t{i} * 8);
        if (page >= pages) return absl::DataLossError("journal: page beyond guest RAM");
        NOVA_DT_RETURN_IF_ERROR(src.Read(buf.data(), kReplicaPageSize));
        NOVA_DT_RETURN_IF_ERROR(visitor.Page(page, buf));
      }
    } else if (static_cast<uint8_t>(type) == kRecordDiskWrite) {
      char h[20];
      NOVA_DT_RETURN_IF_ERROR(src.Read(h, sizeof h));
      const uint32_t disk = GetU32(h);
      uint64_t offset = GetU64(h + 4);
      uint64_t len = GetU64(h + 12);
      if (disk >= geometry.disks.size() || offset > geometry.disks[disk].size ||
          len > geometry.disks[disk].size - offset) {
        return absl::DataLossError("journal: disk write beyond the disk");
      }
      // Checked before any of it is applied: a truncated record changes nothing.
      if (len > left()) return absl::DataLossError("journal: disk write longer than the journal");
      while (len > 0) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(len, kJournalReadChunk));
        buf.resize(n);
        NOVA_DT_RETURN_IF_ERROR(src.Read(buf.data(), n));
        NOVA_DT_RETURN_IF_ERROR(visitor.DiskBytes(disk, offset, buf));
        offset += n;
        len -= n;
      }
    } else {
      return absl::DataLossError("journal: unknown record type");
    }
  }
  if (src.pos() != size) return absl::DataLossError("journal: last record runs past its end");
  return absl::OkStatus();
}

}  // namespace novadt::replica
