#include "agent/replica/replica_store.h"

#include "agent/replica/replica_owner.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/common/scoped_fd.h"
#include "agent/core/replica_basis.h"
#include "agent/replica/replica_format.h"

namespace novadt::replica {
namespace {

constexpr size_t kReadChunk = 1 << 20;

Status ErrnoStatus(int err, std::string_view op, std::string_view path) {
  return absl::ErrnoToStatus(err, Cat(op, " ", path));
}

std::string Join(const std::string& dir, std::string_view name) { return Cat(dir, "/", name); }

// Opens a file of a replica. Never follows a symbolic link: whoever can write a replica's
// directory must not be able to point the agent (root) at another file.
StatusOr<ScopedFd> OpenFile(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "open", path);
  return ScopedFd(fd);
}

// The agent itself, as the owner of the replica files QEMU never opens.
FileOwner AgentOwner() {
  FileOwner owner;
  owner.uid = ::geteuid();
  owner.gid = ::getegid();
  owner.name = "the agent";
  return owner;
}

// Creates (or truncates) a replica file: mode 0600, owned by `owner` (replica_store.h,
// "Ownership and permissions").
StatusOr<ScopedFd> CreateFile(const std::string& path, int flags, const FileOwner& owner) {
  int fd = ::open(path.c_str(), flags | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus(errno, "open", path);
  ScopedFd out(fd);
  NOVA_DT_RETURN_IF_ERROR(SetFileOwner(out.get(), owner, 0600, path));
  return out;
}

// The files a restored QEMU opens belong to QEMU's user; the others to the agent.
bool QemuOpens(std::string_view name) {
  return name == kRamFile || (name.starts_with("disk-") && name.ends_with(".raw"));
}

Status PWriteAll(int fd, std::string_view data, uint64_t offset, std::string_view path) {
  while (!data.empty()) {
    ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "write", path);
    }
    data.remove_prefix(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

// Reads exactly n bytes; DataLoss on a short file.
Status PReadAll(int fd, char* dst, size_t n, uint64_t offset, std::string_view path) {
  while (n > 0) {
    ssize_t r = ::pread(fd, dst, n, static_cast<off_t>(offset));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "read", path);
    }
    if (r == 0) return absl::DataLossError(Cat(path, ": unexpected end of file"));
    dst += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return absl::OkStatus();
}

Status Fsync(int fd, std::string_view path) {
  if (::fsync(fd) != 0) return ErrnoStatus(errno, "fsync", path);
  return absl::OkStatus();
}

Status FsyncDir(const std::string& dir) {
  StatusOr<ScopedFd> fd = OpenFile(dir, O_RDONLY | O_DIRECTORY);
  if (!fd.ok()) return fd.status();
  return Fsync(fd->get(), dir);
}

StatusOr<uint64_t> FileSize(int fd, std::string_view path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus(errno, "stat", path);
  return static_cast<uint64_t>(st.st_size);
}

// NotFound when missing.
StatusOr<std::string> ReadSmallFile(const std::string& path) {
  StatusOr<ScopedFd> fd = OpenFile(path, O_RDONLY);
  if (!fd.ok()) return fd.status();
  StatusOr<uint64_t> size = FileSize(fd->get(), path);
  if (!size.ok()) return size.status();
  if (*size > (64u << 20)) return absl::DataLossError(Cat(path, ": absurdly large"));
  std::string out(*size, '\0');
  NOVA_DT_RETURN_IF_ERROR(PReadAll(fd->get(), out.data(), out.size(), 0, path));
  return out;
}

bool Exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// Unlinks `path`; a missing file is fine.
Status Unlink(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoStatus(errno, "unlink", path);
  return absl::OkStatus();
}

// XXH3-64 of bytes [0, size) of a file, read in chunks.
StatusOr<uint64_t> HashFile(int fd, uint64_t size, std::string_view path) {
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> h(XXH3_createState(), XXH3_freeState);
  XXH3_64bits_reset(h.get());
  std::string buf(kReadChunk, '\0');
  for (uint64_t off = 0; off < size;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(kReadChunk, size - off));
    NOVA_DT_RETURN_IF_ERROR(PReadAll(fd, buf.data(), n, off, path));
    XXH3_64bits_update(h.get(), buf.data(), n);
    off += n;
  }
  return XXH3_64bits_digest(h.get());
}

// journal.redo, read in chunks.
class FileSource final : public JournalSource {
 public:
  FileSource(int fd, uint64_t size, std::string path)
      : fd_(fd), size_(size), path_(std::move(path)) {}
  Status Read(char* dst, size_t n) override {
    if (size_ - pos_ < n) return absl::DataLossError("journal: truncated record");
    while (n > 0) {
      if (buf_pos_ == buf_.size()) {
        size_t want = static_cast<size_t>(std::min<uint64_t>(kReadChunk, size_ - file_pos_));
        buf_.resize(want);
        NOVA_DT_RETURN_IF_ERROR(PReadAll(fd_, buf_.data(), want, file_pos_, path_));
        file_pos_ += want;
        buf_pos_ = 0;
      }
      size_t take = std::min(n, buf_.size() - buf_pos_);
      std::memcpy(dst, buf_.data() + buf_pos_, take);
      buf_pos_ += take;
      dst += take;
      n -= take;
      pos_ += take;
    }
    return absl::OkStatus();
  }
  uint64_t pos() const override { return pos_; }

 private:
  int fd_;
  uint64_t size_;
  std::string path_;
  std::string buf_;
  size_t buf_pos_ = 0;
  uint64_t file_pos_ = 0;
  uint64_t pos_ = 0;
};

struct HashStateFree {
  void operator()(XXH3_state_t* s) const { XXH3_freeState(s); }
};

class ReplicaStoreImpl final : public ReplicaStore {
 public:
  ReplicaStoreImpl(std::string dir, const ReplicaOptions& options)
      : dir_(std::move(dir)), options_(options) {}

  // Loads epoch.rec, opens the image files and recovers an interrupted commit.
  Status Load();

  const ReplicaGeometry& geometry() const override { return record_.geometry; }
  uint64_t committed_epoch() const override { return record_.epoch; }
  Status BeginEpoch(uint64_t epoch) override;
  Status AddPages(const std::vector<uint64_t>& page_indices, std::string_view data) override;
  Status AddDiskWrite(std::string_view disk, uint64_t offset, std::string_view data) override;
  Status SetDeviceState(std::string_view blob) override;
  Status Commit() override;
  void Abort() override;
  Status Unseed() override;
  Status BeginBootFiles(const std::vector<core::BootFile>& files) override;
  Status AddBootFileData(std::string_view name, uint64_t offset, std::string_view data) override;
  Status CommitBootFiles() override;
  StatusOr<std::map<std::string, std::string>> BootFiles() const override;
  std::string ram_path() const override { return Join(dir_, kRamFile); }
  std::string device_state_path() const override {
    return Join(dir_, DeviceStateFileName(record_.devstate_slot));
  }
  std::string disk_path(std::string_view disk) const override {
    return DiskIndex(disk) < 0 ? "" : Join(dir_, DiskFileName(disk));
  }
  ReplicaStats stats() const override {
    ReplicaStats s;
    // Heap held by the buffer; a short string lives inside the object, not on the heap.
    s.buffered_bytes =
        ep_.buf.capacity() > std::string().capacity() ? ep_.buf.capacity() : ep_.buf.size();
    s.spilled_bytes = ep_.spilled;
    s.max_buffered_bytes = options_.max_buffered_bytes;
    s.ram_size = record_.geometry.ram_size;
    return s;
  }
  Status Destroy() override;

 private:
  // The epoch being received.
  struct OpenEpoch {
    bool open = false;
    uint64_t epoch = 0;
    bool direct = false;  // seeding: writes go straight into the replica files
    std::string buf;      // journal bytes not yet in journal.redo
    ScopedFd journal;
    uint64_t spilled = 0;  // journal bytes in journal.redo
    std::unique_ptr<XXH3_state_t, HashStateFree> hash;
    bool devstate_set = false;
    ScopedFd devstate;
    uint64_t devstate_size = 0;
    uint64_t devstate_hash = 0;
  };

  // A boot file being received (BeginBootFiles .. CommitBootFiles) into boot-<name>.tmp.
  struct PendingBootFile {
    std::string name;
    uint64_t size = 0;
    uint64_t written = 0;
    ScopedFd fd;
    std::unique_ptr<XXH3_state_t, HashStateFree> hash;
  };
  // kReceiving / kFailed: the boot files are not (known to be) the ones boot.rec lists, so no
  // seed may begin (BeginEpoch()).
  enum class BootState { kUntouched, kReceiving, kCommitted, kFailed };

  Status Step(CommitStep step) {
    return options_.fault_hook ? options_.fault_hook->Before(step) : absl::OkStatus();
  }
  Status Usable() const {
    if (destroyed_) return absl::FailedPreconditionError("replica destroyed");
    if (broken_) {
      return absl::FailedPreconditionError(
          "replica needs recovery after a failed commit: reopen it");
    }
    return absl::OkStatus();
  }
  int DiskIndex(std::string_view name) const {
    for (size_t i = 0; i < record_.geometry.disks.size(); ++i) {
      if (record_.geometry.disks[i].name == name) return static_cast<int>(i);
    }
    return -1;
  }
  std::string path(std::string_view name) const { return Join(dir_, name); }

  Status JournalAppend(std::string_view head, std::string_view payload);
  Status JournalWrite(std::string_view data);
  // Drops the open epoch and its journal; OK when nothing of it can be mistaken for committed.
  Status DropEpoch();
  // Closes and removes the boot files being received; `failed` blocks seeding until the next
  // CommitBootFiles().
  void DropBootFiles(bool failed);
  Status WriteAtomic(std::string_view name, const std::string& bytes, CommitStep write,
                     CommitStep rename, CommitStep dirsync);
  // Commit steps 3-5 for `mark`, reading the journal from `src`.
  Status ApplyAndFinish(const CommitMark& mark, JournalSource& src);
  Status ApplyJournal(uint64_t epoch, uint64_t size, JournalSource& src);
  Status SyncReplica();
  Status Recover();

  std::string dir_;
  ReplicaOptions options_;
  EpochRecord record_;
  ScopedFd ram_;
  std::vector<ScopedFd> disks_;
  OpenEpoch ep_;
  std::vector<PendingBootFile> boot_;
  BootState boot_state_ = BootState::kUntouched;
  bool broken_ = false;
  bool destroyed_ = false;
};

Status ReplicaStoreImpl::Load() {
  StatusOr<std::string> rec = ReadSmallFile(path(kRecordFile));
  if (!rec.ok()) {
    if (absl::IsNotFound(rec.status())) {
      if (Exists(path(kMarkFile))) {
        return absl::DataLossError(Cat(dir_, ": commit mark without epoch.rec"));
      }
      return absl::NotFoundError(Cat(dir_, ": no replica (no epoch.rec)"));
    }
    return rec.status();
  }
  StatusOr<EpochRecord> decoded = DecodeEpochRecord(*rec);
  if (!decoded.ok()) {
    return absl::DataLossError(Cat(dir_, ": ", decoded.status().message()));
  }
  record_ = *std::move(decoded);

  auto open_image = [&](std::string_view name, uint64_t size) -> StatusOr<ScopedFd> {
    std::string p = path(name);
    StatusOr<ScopedFd> fd = OpenFile(p, O_RDWR);
    if (!fd.ok()) {
      if (absl::IsNotFound(fd.status())) return absl::DataLossError(Cat(p, " missing"));
      return fd.status();
    }
    StatusOr<uint64_t> actual = FileSize(fd->get(), p);
    if (!actual.ok()) return actual.status();
    if (*actual != size) {
      return absl::DataLossError(Cat(p, ": size ", *actual, ", epoch.rec says ", size));
    }
    return fd;
  };
  StatusOr<ScopedFd> ram = open_image(kRamFile, record_.geometry.ram_size);
  if (!ram.ok()) return ram.status();
  ram_ = *std::move(ram);
  for (const DiskGeometry& d : record_.geometry.disks) {
    StatusOr<ScopedFd> fd = open_image(DiskFileName(d.name), d.size);
    if (!fd.ok()) return fd.status();
    disks_.push_back(*std::move(fd));
  }
  NOVA_DT_RETURN_IF_ERROR(Recover());

  // The committed device state must be the one epoch.rec describes.
  if (record_.epoch > 0) {
    std::string p = path(DeviceStateFileName(record_.devstate_slot));
    StatusOr<ScopedFd> fd = OpenFile(p, O_RDONLY);
    if (!fd.ok()) return absl::DataLossError(Cat(p, ": ", fd.status().message()));
    StatusOr<uint64_t> size = FileSize(fd->get(), p);
    if (!size.ok()) return size.status();
    if (*size != record_.devstate_size) {
      return absl::DataLossError(Cat(p, ": size does not match epoch.rec"));
    }
    StatusOr<uint64_t> h = HashFile(fd->get(), *size, p);
    if (!h.ok()) return h.status();
    if (*h != record_.devstate_hash) {
      return absl::DataLossError(Cat(p, ": checksum does not match epoch.rec"));
    }
  }
  return absl::OkStatus();
}

Status ReplicaStoreImpl::Recover() {
  NOVA_DT_RETURN_IF_ERROR(Unlink(path(Cat(kRecordFile, kTmpSuffix))));
  NOVA_DT_RETURN_IF_ERROR(Unlink(path(Cat(kMarkFile, kTmpSuffix))));
  // Boot files a replacement left half-received: never listed in boot.rec.
  NOVA_DT_RETURN_IF_ERROR(Unlink(path(Cat(kBootRecordFile, kTmpSuffix))));
  for (std::string_view name : {core::kBootFileKernel, core::kBootFileRamdisk}) {
    NOVA_DT_RETURN_IF_ERROR(Unlink(path(Cat(BootFileName(name), kTmpSuffix))));
  }
  StatusOr<std::string> bytes = ReadSmallFile(path(kMarkFile));
  if (!bytes.ok()) {
    if (!absl::IsNotFound(bytes.status())) return bytes.status();
    // No valid commit mark: nothing of any journal was applied. Discard it.
    NOVA_DT_RETURN_IF_ERROR(Unlink(path(kJournalFile)));
    return FsyncDir(dir_);
  }
  StatusOr<CommitMark> mark = DecodeCommitMark(*bytes);
  if (!mark.ok()) {
    // The mark was written atomically, so a damaged one was complete once: applying may have
    // started. The replica may be a mix.
    return absl::DataLossError(
        Cat(dir_, ": ", mark.status().message(), "; replica may be a mix of epochs"));
  }
  if (mark->epoch == record_.epoch) {
    // Crashed after epoch.rec, before cleanup.
    NOVA_DT_RETURN_IF_ERROR(Unlink(path(kMarkFile)));
    NOVA_DT_RETURN_IF_ERROR(Unlink(path(kJournalFile)));
    return FsyncDir(dir_);
  }
  if (mark->epoch != record_.epoch + 1) {
    return absl::DataLossError(
        Cat(dir_, ": commit mark of epoch ", mark->epoch, " but epoch.rec is at ", record_.epoch));
  }
  auto mixed = [&](std::string_view why) {
    return absl::DataLossError(Cat(dir_, ": epoch ", mark->epoch, " committed but ", why,
                                   "; replica may be a mix of epochs"));
  };
  if (mark->devstate_slot == record_.devstate_slot && record_.epoch > 0) {
    return mixed("its devstate slot is the committed one");
  }
  std::string ds_path = path(DeviceStateFileName(mark->devstate_slot));
  StatusOr<ScopedFd> ds = OpenFile(ds_path, O_RDONLY);
  if (!ds.ok()) return mixed("its device state is unreadable");
  StatusOr<uint64_t> ds_size = FileSize(ds->get(), ds_path);
  if (!ds_size.ok()) return ds_size.status();
  if (*ds_size != mark->devstate_size) return mixed("its device state has the wrong size");
  StatusOr<uint64_t> ds_hash = HashFile(ds->get(), *ds_size, ds_path);
  if (!ds_hash.ok()) return ds_hash.status();
  if (*ds_hash != mark->devstate_hash) return mixed("its device state is corrupt");

  std::string j_path = path(kJournalFile);
  StatusOr<ScopedFd> j = OpenFile(j_path, O_RDONLY);
  if (!j.ok()) {
    if (absl::IsNotFound(j.status())) return mixed("its journal is missing");
    return j.status();
  }
  StatusOr<uint64_t> j_size = FileSize(j->get(), j_path);
  if (!j_size.ok()) return j_size.status();
  if (*j_size != mark->journal_size) return mixed("its journal has the wrong size");
  // Verify the whole journal before applying any of it.
  StatusOr<uint64_t> j_hash = HashFile(j->get(), *j_size, j_path);
  if (!j_hash.ok()) return j_hash.status();
  if (*j_hash != mark->journal_hash) return mixed("its journal is corrupt");
  FileSource src(j->get(), *j_size, j_path);
  return ApplyAndFinish(*mark, src);
}

Status ReplicaStoreImpl::BeginEpoch(uint64_t epoch) {
  NOVA_DT_RETURN_IF_ERROR(Usable());
  if (ep_.open) {
    return absl::FailedPreconditionError(
        Cat("epoch ", ep_.epoch, " is still open; commit or abort it first"));
  }
  if (epoch != record_.epoch + 1) {
    return absl::FailedPreconditionError(
        Cat("wrong epoch order: got epoch ", epoch, ", committed is ", record_.epoch));
  }
  if (boot_state_ == BootState::kReceiving || boot_state_ == BootState::kFailed) {
    return absl::FailedPreconditionError(
        Cat("epoch ", epoch, ": the replica's boot files are ",
            boot_state_ == BootState::kReceiving ? "still being received" : "incomplete",
            " (commit them first)"));
  }
  ep_ = OpenEpoch();
  ep_.open = true;
  ep_.epoch = epoch;
  ep_.direct = record_.epoch == 0;
  if (!ep_.direct) {
    ep_.hash.reset(XXH3_createState());
    XXH3_64bits_reset(ep_.hash.get());
    std::string head = EncodeJournalHeader(epoch);
    XXH3_64bits_update(ep_.hash.get(), head.data(), head.size());
    ep_.buf = std::move(head);
  }
  return absl::OkStatus();
}

Status ReplicaStoreImpl::JournalWrite(std::string_view data) {
  if (!ep_.journal.valid()) {
    StatusOr<ScopedFd> fd = CreateFile(path(kJournalFile), O_RDWR | O_TRUNC, AgentOwner());
    if (!fd.ok()) return fd.status();
    ep_.journal = *std::move(fd);
  }
  NOVA_DT_RETURN_IF_ERROR(Step(CommitStep::kJournalWrite));
  NOVA_DT_RETURN_IF_ERROR(PWriteAll(ep_.journal.get(), data, ep_.spilled, path(kJournalFile)));
  ep_.spilled += data.size();
  return absl::OkStatus();
}

Status ReplicaStoreImpl::JournalAppend(std::string_view head, std::string_view payload) {
  XXH3_64bits_update(ep_.hash.get(), head.data(), head.size());
  XXH3_64bits_update(ep_.hash.get(), payload.data(), payload.size());
  uint64_t n = head.size() + payload.size();
  if (ep_.buf.size() + n <= options_.max_buffered_bytes) {
    ep_.buf.append(head);
    ep_.buf.append(payload);
    return absl::OkStatus();
  }
  if (!ep_.buf.empty()) {
    NOVA_DT_RETURN_IF_ERROR(JournalWrite(ep_.buf));
    ep_.buf.clear();
  }
  if (n <= options_.max_buffered_bytes) {
    ep_.buf.append(head);
    ep_.buf.append(payload);
    return absl::OkStatus();
  }
  NOVA_DT_RETURN_IF_ERROR(JournalWrite(head));
  return JournalWrite(payload);
}

Status ReplicaStoreImpl::AddPages(const std::vector<uint64_t>& page_indices,
                                  std::string_view data) {
  NOVA_DT_RETURN_IF_ERROR(Usable());
  if (!ep_.open) return absl::FailedPreconditionError("AddPages: no epoch open");
  if (data.size() != page_indices.size() * kReplicaPageSize) {
    return absl::InvalidArgumentError(
        Cat("AddPages: ", data.size(), " bytes for ", page_indices.size(), " pages"));
  }
  const uint64_t pages = record_.geometry.ram_size / kReplicaPageSize;
  for (uint64_t idx : page_indices) {
    if (idx >= pages) {
      return absl::InvalidArgumentError(
          Cat("AddPages: page ", idx, " beyond guest RAM (", pages, " pages)"));
    }
  }
  if (page_indices.empty()) return absl::OkStatus();
  Status st;
  if (ep_.direct) {
    for (size_t i = 0; i < page_indices.size() && st.ok(); ++i) {
      st = PWriteAll(ram_.get(), data.substr(i * kReplicaPageSize, kReplicaPageSize),
                     page_indices[i] * kReplicaPageSize, path(kRamFile));
    }
  } else {
    // One record per call; large calls are split so that a record stays below the bound.
    const size_t per_record =
        std::max<size_t>(1, options_.max_buffered_bytes / (kReplicaPageSize + 8));
    for (size_t first = 0; first < page_indices.size() && st.ok(); first += per_record) {
      size_t count = std::min(per_record, page_indices.size() - first);
      std::string head;
      head.reserve(5 + count * 8);
      PutU8(&head, kRecordPages);
      PutU32(&head, static_cast<uint32_t>(count));
      for (size_t i = 0; i < count; ++i) PutU64(&head, page_indices[first + i]);
      st = JournalAppend(head, data.substr(first * kReplicaPageSize, count * kReplicaPageSize));
    }
  }
  if (!st.ok()) DropEpoch().IgnoreError();
  return st;
}

Status ReplicaStoreImpl::AddDiskWrite(std::string_view disk, uint64_t offset,
                                      std::string_view data) {
  NOVA_DT_RETURN_IF_ERROR(Usable());
  if (!ep_.open) return absl::FailedPreconditionError("AddDiskWrite: no epoch open");
  int idx = DiskIndex(disk);
  if (idx < 0) return absl::NotFoundError(Cat("AddDiskWrite: no disk '", disk, "'"));
  const uint64_t size = record_.geometry.disks[idx].size;
  if (offset > size || data.size() > size - offset) {
    return absl::InvalidArgumentError(Cat("AddDiskWrite: ", data.size(), " bytes at ", offset,
                                          " beyond disk '", disk, "' (", size, " bytes)"));
  }
  if (data.empty()) return absl::OkStatus();
  Status st;
  if (ep_.direct) {
    st = PWriteAll(disks_[idx].get(), data, offset, path(DiskFileName(disk)));
  } else {
    std::string head;
    PutU8(&head, kRecordDiskWrite);
    PutU32(&head, static_cast<uint32_t>(idx));
    PutU64(&head, offset);
    PutU64(&head, data.size());
    st = JournalAppend(head, data);
  }
  if (!st.ok()) DropEpoch().IgnoreError();
  return st;
}

Status ReplicaStoreImpl::SetDeviceState(std::string_view blob) {
  NOVA_DT_RETURN_IF_ERROR(Usable());
  if (!ep_.open) return absl::FailedPreconditionError("SetDeviceState: no epoch open");
  if (ep_.devstate_set) {
    return absl::FailedPreconditionError("SetDeviceState: device state already set this epoch");
  }
  // The slot the committed epoch does not use; never read until a commit mark names it.
  std::string p = path(DeviceStateFileName(1 - record_.devstate_slot));
  StatusOr<ScopedFd> fd = CreateFile(p, O_WRONLY | O_TRUNC, AgentOwner());
  Status st = fd.status();
  if (st.ok()) st = PWriteAll(fd->get(), blob, 0, p);
  if (!st.ok()) {
    DropEpoch().IgnoreError();
    return st;
  }
  ep_.devstate = *std::move(fd);
  ep_.devstate_set = true;
  ep_.devstate_size = blob.size();
  ep_.devstate_hash = Hash64(blob);
  return absl::OkStatus();
}

Status ReplicaStoreImpl::WriteAtomic(std::string_view name, const std::string& bytes,
                                     CommitStep write, CommitStep rename, CommitStep dirsync) {
  std::string final_path = path(name);
  std::string tmp = Cat(final_path, kTmpSuffix);
  NOVA_DT_RETURN_IF_ERROR(Step(write));
  {
    StatusOr<ScopedFd> fd = CreateFile(tmp, O_WRONLY | O_TRUNC, AgentOwner());
    if (!fd.ok()) return fd.status();
    Status st = PWriteAll(fd->get(), bytes, 0, tmp);
    if (st.ok()) st = Fsync(fd->get(), tmp);
    if (!st.ok()) {
      Unlink(tmp).IgnoreError();
      return st;
    }
  }
  NOVA_DT_RETURN_IF_ERROR(Step(rename));
  if (::rename(tmp.c_str(), final_path.c_str()) != 0) {
    Status st = ErrnoStatus(errno, "rename", tmp);
    Unlink(tmp).IgnoreError();
    return st;
  }
  NOVA_DT_RETURN_IF_ERROR(Step(dirsync));
  return FsyncDir(dir_);
}

Status ReplicaStoreImpl::SyncReplica() {
  NOVA_DT_RETURN_IF_ERROR(Step(CommitStep::kReplicaSync));
  NOVA_DT_RETURN_IF_ERROR(Fsync(ram_.get(), path(kRamFile)));
  for (size_t i = 0; i < disks_.size(); ++i) {
    NOVA_DT_RETURN_IF_ERROR(
        Fsync(disks_[i].get(), path(DiskFileName(record_.geometry.disks[i].name))));
  }
  return absl::OkStatus();
}

Status ReplicaStoreImpl::ApplyJournal(uint64_t epoch, uint64_t size, JournalSource& src) {
  // Writes each record in place, in journal order.
  class Apply final : public JournalVisitor {
   public:
    explicit Apply(ReplicaStoreImpl& store) : store_(store) {}
    Status BeforeRecord() override { return store_.Step(CommitStep::kApplyRecord); }
    Status Page(uint64_t page, std::string_view bytes) override {
      return PWriteAll(store_.ram_.get(), bytes, page * kReplicaPageSize, store_.path(kRamFile));
    }
    Status DiskBytes(size_t disk, uint64_t offset, std::string_view bytes) override {
      return PWriteAll(store_.disks_[disk].get(), bytes, offset,
                       store_.path(DiskFileName(store_.record_.geometry.disks[disk].name)));
    }

   private:
    ReplicaStoreImpl& store_;
  } apply(*this);
  return ReplayJournal(epoch, size, record_.geometry, src, apply);
}

Status ReplicaStoreImpl::ApplyAndFinish(const CommitMark& mark, JournalSource& src) {
  Status st = ApplyJournal(mark.epoch, mark.journal_size, src);
  if (st.ok()) st = SyncReplica();
  EpochRecord next = record_;
  next.epoch = mark.epoch;
  next.devstate_slot = mark.devstate_slot;
  next.devstate_size = mark.devstate_size;
  next.devstate_hash = mark.devstate_hash;
  if (st.ok()) {
    st = WriteAtomic(kRecordFile, EncodeEpochRecord(next), CommitStep::kRecordWrite,
                     CommitStep::kRecordRename, CommitStep::kRecordDirSync);
  }
  if (!st.ok()) {
    broken_ = true;  // epoch durable but not (known to be) applied: Open() finishes it
    return st;
  }
  record_ = std::move(next);
  // The epoch is committed. Failures to clean up are harmless: Open() removes a commit mark
  // of the committed epoch, and the next commit replaces mark and journal.
  if (Step(CommitStep::kMarkRemove).ok() && Unlink(path(kMarkFile)).ok() &&
      Step(CommitStep::kJournalRemove).ok() && Unlink(path(kJournalFile)).ok() &&
      Step(CommitStep::kCleanupDirSync).ok()) {
    FsyncDir(dir_).IgnoreError();
  }
  return absl::OkStatus();
}

Status ReplicaStoreImpl::Commit() {
  NOVA_DT_RETURN_IF_ERROR(Usable());
  if (!ep_.open) return absl::FailedPreconditionError("Commit: no epoch open");
  if (!ep_.devstate_set) return absl::FailedPreconditionError("Commit: no device state");
  std::string ds_path = path(DeviceStateFileName(1 - record_.devstate_slot));

  if (ep_.direct) {
    // Seeding: files already hold the epoch; epoch.rec makes it count.
    Status st = Step(CommitStep::kDeviceStateSync);
    if (st.ok()) st = Fsync(ep_.devstate.get(), ds_path);
    if (st.ok()) st = SyncReplica();
    EpochRecord next = record_;
    next.epoch = ep_.epoch;
    next.devstate_slot = 1 - record_.devstate_slot;
    next.devstate_size = ep_.devstate_size;
    next.devstate_hash = ep_.devstate_hash;
    if (st.ok()) {
      st = WriteAtomic(kRecordFile, EncodeEpochRecord(next), CommitStep::kRecordWrite,
                       CommitStep::kRecordRename, CommitStep::kRecordDirSync);
    }
    if (!st.ok()) {
      // A renamed but unsynced epoch.rec may or may not survive a crash; this process sees it.
      if (Exists(path(kRecordFile)) &&
          ReadSmallFile(path(kRecordFile)).value_or("") == EncodeEpochRecord(next)) {
        broken_ = true;
      }
      DropEpoch().IgnoreError();
      return st;
    }
    record_ = std::move(next);
    ep_ = OpenEpoch();
    return absl::OkStatus();
  }

  // Steps 1-2: make the journal durable, then valid.
  const bool in_memory = ep_.spilled == 0;
  Status st = JournalWrite(ep_.buf);
  if (st.ok()) st = Step(CommitStep::kJournalSync);
  if (st.ok()) st = Fsync(ep_.journal.get(), path(kJournalFile));
  if (st.ok()) st = Step(CommitStep::kDeviceStateSync);
  if (st.ok()) st = Fsync(ep_.devstate.get(), ds_path);
  CommitMark mark;
  mark.epoch = ep_.epoch;
  mark.journal_size = ep_.spilled;
  mark.journal_hash = XXH3_64bits_digest(ep_.hash.get());
  mark.devstate_slot = 1 - record_.devstate_slot;
  mark.devstate_size = ep_.devstate_size;
  mark.devstate_hash = ep_.devstate_hash;
  if (st.ok()) {
    st = WriteAtomic(kMarkFile, EncodeCommitMark(mark), CommitStep::kMarkWrite,
                     CommitStep::kMarkRename, CommitStep::kMarkDirSync);
  }
  if (!st.ok()) {
    // Nothing was applied: removing the mark (if renamed) and journal leaves the previous epoch.
    if (!DropEpoch().ok()) broken_ = true;
    return st;
  }

  // Steps 3-5.
  std::string buf = std::move(ep_.buf);
  ScopedFd journal = std::move(ep_.journal);
  ep_ = OpenEpoch();
  if (in_memory) {
    MemoryJournalSource src(buf);
    return ApplyAndFinish(mark, src);
  }
  std::string().swap(buf);
  FileSource src(journal.get(), mark.journal_size, path(kJournalFile));
  return ApplyAndFinish(mark, src);
}

Status ReplicaStoreImpl::DropEpoch() {
  bool journaled = ep_.open && !ep_.direct;
  ep_ = OpenEpoch();
  if (!journaled) return absl::OkStatus();
  NOVA_DT_RETURN_IF_ERROR(Unlink(path(kMarkFile)));
  Status st = Unlink(path(kJournalFile));
  FsyncDir(dir_).IgnoreError();
  return st;
}

void ReplicaStoreImpl::Abort() {
  if (!ep_.open) return;
  DropEpoch().IgnoreError();
}

void ReplicaStoreImpl::DropBootFiles(bool failed) {
  for (PendingBootFile& f : boot_) {
    f.fd = ScopedFd();
    Unlink(path(Cat(BootFileName(f.name), kTmpSuffix))).IgnoreError();
  }
  boot_.clear();
  if (failed) {
    // A boot.rec.tmp a failed CommitBootFiles() left (Open() would remove it too).
    Unlink(path(Cat(kBootRecordFile, kTmpSuffix))).IgnoreError();
    boot_state_ = BootState::kFailed;
  }
}

Status ReplicaStoreImpl::BeginBootFiles(const std::vector<core::BootFile>& files) {
  NOVA_DT_RETURN_IF_ERROR(Usable());
  if (ep_.open || record_.epoch != 0) {
    return absl::FailedPreconditionError(
        Cat("the boot files of a seeded replica (epoch ", record_.epoch,
            ") are never replaced: only before a seed's first epoch"));
  }
  for (size_t i = 0; i < files.size(); ++i) {
    if (!core::IsBootFileName(files[i].name) || files[i].size_bytes == 0) {
      return absl::InvalidArgumentError(Cat("boot file '", files[i].name, "' of ",
                                            files[i].size_bytes, " bytes: not kernel or ramdisk, "
                                            "or empty"));
    }
    for (size_t j = 0; j < i; ++j) {
      if (files[j].name == files[i].name) {
        return absl::InvalidArgumentError(Cat("boot file '", files[i].name, "' given twice"));
      }
    }
  }
  DropBootFiles(false);
  boot_state_ = BootState::kReceiving;
  for (const core::BootFile& f : files) {
    PendingBootFile p;
    p.name = f.name;
    p.size = f.size_bytes;
    const std::string tmp = path(Cat(BootFileName(f.name), kTmpSuffix));
    StatusOr<ScopedFd> fd = CreateFile(tmp, O_WRONLY | O_TRUNC, AgentOwner());
    if (!fd.ok()) {
      DropBootFiles(true);
      return fd.status();
    }
    p.fd = *std::move(fd);
    p.hash.reset(XXH3_createState());
    XXH3_64bits_reset(p.hash.get());
    boot_.push_back(std::move(p));
  }
  return absl::OkStatus();
}

Status ReplicaStoreImpl::AddBootFileData(std::string_view name, uint64_t offset,
                                         std::string_view data) {
  NOVA_DT_RETURN_IF_ERROR(Usable());
  if (boot_state_ != BootState::kReceiving) {
    return absl::FailedPreconditionError("AddBootFileData: no boot files being received");
  }
  PendingBootFile* file = nullptr;
  for (PendingBootFile& f : boot_) {
    if (f.name == name) file = &f;
  }
  if (file == nullptr) {
    return absl::InvalidArgumentError(Cat("AddBootFileData: no boot file '", name, "' begun"));
  }
  if (offset != file->written || data.size() > file->size - file->written) {
    return absl::InvalidArgumentError(Cat("AddBootFileData: ", data.size(), " bytes at ", offset,
                                          " of boot file '", name, "' (", file->written, " of ",
                                          file->size, " bytes given)"));
  }
  const std::string tmp = path(Cat(BootFileName(name), kTmpSuffix));
  Status st = Step(CommitStep::kBootFileWrite);
  if (st.ok()) st = PWriteAll(file->fd.get(), data, offset, tmp);
  if (!st.ok()) {
    DropBootFiles(true);
    return st;
  }
  XXH3_64bits_update(file->hash.get(), data.data(), data.size());
  file->written += data.size();
  return absl::OkStatus();
}

Status ReplicaStoreImpl::CommitBootFiles() {
  NOVA_DT_RETURN_IF_ERROR(Usable());
  if (boot_state_ != BootState::kReceiving) {
    return absl::FailedPreconditionError("CommitBootFiles: no boot files being received");
  }
  std::vector<BootRecordEntry> entries;
  for (const PendingBootFile& f : boot_) {
    if (f.written != f.size) {
      return absl::FailedPreconditionError(Cat("CommitBootFiles: boot file '", f.name,
                                               "' has ", f.written, " of ", f.size, " bytes"));
    }
    entries.push_back({f.name, f.size, XXH3_64bits_digest(f.hash.get())});
  }
  Status st;
  for (PendingBootFile& f : boot_) {
    if (st.ok()) st = Step(CommitStep::kBootFileSync);
    if (st.ok()) st = Fsync(f.fd.get(), path(Cat(BootFileName(f.name), kTmpSuffix)));
  }
  for (PendingBootFile& f : boot_) {
    const std::string final_path = path(BootFileName(f.name));
    const std::string tmp = Cat(final_path, kTmpSuffix);
    if (st.ok()) st = Step(CommitStep::kBootFileRename);
    if (st.ok() && ::rename(tmp.c_str(), final_path.c_str()) != 0) {
      st = ErrnoStatus(errno, "rename", tmp);
    }
  }
  // Boot files of the names this stream does not carry go.
  for (std::string_view name : {core::kBootFileKernel, core::kBootFileRamdisk}) {
    const bool kept = std::any_of(boot_.begin(), boot_.end(),
                                  [&](const PendingBootFile& f) { return f.name == name; });
    if (st.ok() && !kept) st = Unlink(path(BootFileName(name)));
  }
  if (st.ok()) {
    st = WriteAtomic(kBootRecordFile, EncodeBootRecord(entries), CommitStep::kBootRecordWrite,
                     CommitStep::kBootRecordRename, CommitStep::kBootRecordDirSync);
  }
  if (!st.ok()) {
    DropBootFiles(true);
    return st;
  }
  boot_.clear();
  boot_state_ = BootState::kCommitted;
  return absl::OkStatus();
}

StatusOr<std::map<std::string, std::string>> ReplicaStoreImpl::BootFiles() const {
  std::map<std::string, std::string> out;
  StatusOr<std::string> bytes = ReadSmallFile(path(kBootRecordFile));
  if (!bytes.ok()) {
    if (absl::IsNotFound(bytes.status())) return out;
    return bytes.status();
  }
  StatusOr<std::vector<BootRecordEntry>> entries = DecodeBootRecord(*bytes);
  if (!entries.ok()) return absl::DataLossError(Cat(dir_, ": ", entries.status().message()));
  for (const BootRecordEntry& e : *entries) {
    const std::string p = path(BootFileName(e.name));
    StatusOr<ScopedFd> fd = OpenFile(p, O_RDONLY | O_NONBLOCK);
    if (!fd.ok()) return absl::DataLossError(Cat(p, ": ", fd.status().message()));
    struct stat st {};
    if (::fstat(fd->get(), &st) != 0) return ErrnoStatus(errno, "stat", p);
    if (!S_ISREG(st.st_mode)) return absl::DataLossError(Cat(p, ": not a regular file"));
    if (static_cast<uint64_t>(st.st_size) != e.size) {
      return absl::DataLossError(
          Cat(p, ": ", st.st_size, " bytes, boot.rec says ", e.size));
    }
    StatusOr<uint64_t> h = HashFile(fd->get(), e.size, p);
    if (!h.ok()) return h.status();
    if (*h != e.hash) return absl::DataLossError(Cat(p, ": checksum does not match boot.rec"));
    out[e.name] = p;
  }
  return out;
}

Status ReplicaStoreImpl::Unseed() {
  NOVA_DT_RETURN_IF_ERROR(Usable());
  if (ep_.open) return absl::FailedPreconditionError(Cat("Unseed: epoch ", ep_.epoch, " is open"));
  if (record_.epoch == 0) return absl::OkStatus();
  EpochRecord next = record_;
  next.epoch = 0;
  NOVA_DT_RETURN_IF_ERROR(WriteAtomic(kRecordFile, EncodeEpochRecord(next),
                                      CommitStep::kRecordWrite, CommitStep::kRecordRename,
                                      CommitStep::kRecordDirSync));
  record_ = std::move(next);
  return absl::OkStatus();
}

Status ReplicaStoreImpl::Destroy() {
  if (destroyed_) return absl::FailedPreconditionError("replica destroyed");
  ep_ = OpenEpoch();
  boot_.clear();
  ram_ = ScopedFd();
  disks_.clear();
  destroyed_ = true;
  return ReplicaStore::Destroy(dir_);
}

bool IsReplicaFile(std::string_view name) {
  if (name.ends_with(kTmpSuffix)) name.remove_suffix(kTmpSuffix.size());
  if (name == kRamFile || name == kRecordFile || name == kJournalFile || name == kMarkFile ||
      name == kOwnerFile || name == DeviceStateFileName(0) || name == DeviceStateFileName(1) ||
      name == kBootRecordFile || name == BootFileName(core::kBootFileKernel) ||
      name == BootFileName(core::kBootFileRamdisk)) {
    return true;
  }
  return name.starts_with("disk-") && name.ends_with(".raw") &&
         ValidDiskName(name.substr(5, name.size() - 9));
}

}  // namespace

std::string_view CommitStepName(CommitStep step) {
  switch (step) {
    case CommitStep::kJournalWrite:
      return "journal-write";
    case CommitStep::kJournalSync:
      return "journal-sync";
    case CommitStep::kDeviceStateSync:
      return "devstate-sync";
    case CommitStep::kMarkWrite:
      return "mark-write";
    case CommitStep::kMarkRename:
      return "mark-rename";
    case CommitStep::kMarkDirSync:
      return "mark-dirsync";
    case CommitStep::kApplyRecord:
      return "apply-record";
    case CommitStep::kReplicaSync:
      return "replica-sync";
    case CommitStep::kRecordWrite:
      return "record-write";
    case CommitStep::kRecordRename:
      return "record-rename";
    case CommitStep::kRecordDirSync:
      return "record-dirsync";
    case CommitStep::kMarkRemove:
      return "mark-remove";
    case CommitStep::kJournalRemove:
      return "journal-remove";
    case CommitStep::kCleanupDirSync:
      return "cleanup-dirsync";
    case CommitStep::kBootFileWrite:
      return "boot-file-write";
    case CommitStep::kBootFileSync:
      return "boot-file-sync";
    case CommitStep::kBootFileRename:
      return "boot-file-rename";
    case CommitStep::kBootRecordWrite:
      return "boot-record-write";
    case CommitStep::kBootRecordRename:
      return "boot-record-rename";
    case CommitStep::kBootRecordDirSync:
      return "boot-record-dirsync";
  }
  return "unknown";
}

namespace {

// Appends HashContent of every `unit`-byte piece of the first `size` bytes of `path` (the last
// piece may be short).
Status HashPieces(const std::string& path, uint64_t size, uint64_t unit,
                  std::vector<core::ContentHash>& out) {
  StatusOr<ScopedFd> fd = OpenFile(path, O_RDONLY);
  if (!fd.ok()) return fd.status();
  const uint64_t chunk = std::max<uint64_t>(unit, kReadChunk / unit * unit);
  std::string buf(chunk, '\0');
  for (uint64_t off = 0; off < size;) {
    const size_t n = static_cast<size_t>(std::min(chunk, size - off));
    NOVA_DT_RETURN_IF_ERROR(PReadAll(fd->get(), buf.data(), n, off, path));
    for (size_t p = 0; p < n; p += unit) {
      out.push_back(
          core::HashContent(std::string_view(buf).substr(p, std::min<size_t>(unit, n - p))));
    }
    off += n;
  }
  return absl::OkStatus();
}

// Opens the source of a basis for reading: a running copy's RAM file (in the guest-RAM
// directory libvirt gives to QEMU's user) or a disk image. The agent reads it as root and copies
// it into a file QEMU's user can read back, so a compromised QEMU must not be able to make it
// name anything else (/etc/shadow, the agent's TLS key, another guest's RAM): the last component
// is never followed (O_NOFOLLOW), a FIFO or device never waited on (O_NONBLOCK, then S_ISREG),
// and the file must have exactly one name (a hard link planted to another file is refused) and
// belong to QEMU's user or to the agent. FailedPrecondition naming the file otherwise.
StatusOr<ScopedFd> OpenBasisSource(const std::string& from, const FileOwner& qemu) {
  ScopedFd in(::open(from.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!in.valid()) {
    if (errno == ELOOP) {
      return absl::FailedPreconditionError(
          Cat("basis source ", from, " is a symbolic link: refused (never followed)"));
    }
    return ErrnoStatus(errno, "open", from);
  }
  struct stat st {};
  if (::fstat(in.get(), &st) != 0) return ErrnoStatus(errno, "stat", from);
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        Cat("basis source ", from, " is not a regular file: refused"));
  }
  if (st.st_nlink != 1) {
    return absl::FailedPreconditionError(Cat("basis source ", from, " has ", st.st_nlink,
                                             " names (a hard link): refused"));
  }
  const bool qemus = qemu.uid != FileOwner::kKeepUid && st.st_uid == qemu.uid;
  if (!qemus && st.st_uid != ::geteuid()) {
    return absl::FailedPreconditionError(
        Cat("basis source ", from, " belongs to uid ", st.st_uid, ", neither QEMU's (",
            qemu.uid == FileOwner::kKeepUid ? std::string("the agent's") : qemu.name,
            ") nor the agent's: refused"));
  }
  return in;
}

// Copies the first `size` bytes of `from` over `to` (same offsets), leaving all-zero chunks
// unwritten (the target is zero already) and stopping at the end of a shorter source. The
// source is opened by OpenBasisSource().
Status CopyInto(const std::string& from, const std::string& to, uint64_t size,
                const FileOwner& qemu) {
  StatusOr<ScopedFd> source = OpenBasisSource(from, qemu);
  if (!source.ok()) return source.status();
  const ScopedFd& in = *source;
  StatusOr<ScopedFd> out = OpenFile(to, O_WRONLY);
  if (!out.ok()) return out.status();
  StatusOr<uint64_t> have = FileSize(in.get(), from);
  if (!have.ok()) return have.status();
  size = std::min(size, *have);
  std::string buf(kReadChunk, '\0');
  for (uint64_t off = 0; off < size;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kReadChunk, size - off));
    NOVA_DT_RETURN_IF_ERROR(PReadAll(in.get(), buf.data(), n, off, from));
    if (std::string_view(buf.data(), n).find_first_not_of('\0') != std::string_view::npos) {
      NOVA_DT_RETURN_IF_ERROR(PWriteAll(out->get(), std::string_view(buf.data(), n), off, to));
    }
    off += n;
  }
  return Fsync(out->get(), to);
}

// Gives an existing replica directory and its files the ownership of replica_store.h (a replica
// made before it, or under another [libvirt] qemu_user). OK when `dir` does not exist. Entries
// that are not regular replica files are left alone (Open() refuses a symbolic link).
Status OwnExisting(const std::string& dir, const FileOwner& qemu) {
  ScopedFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!d.valid()) return errno == ENOENT ? absl::OkStatus() : ErrnoStatus(errno, "open", dir);
  FileOwner dir_owner = AgentOwner();
  dir_owner.gid = qemu.gid;
  NOVA_DT_RETURN_IF_ERROR(SetFileOwner(d.get(), dir_owner, 0710, dir));
  DIR* it = ::fdopendir(::dup(d.get()));
  if (it == nullptr) return ErrnoStatus(errno, "opendir", dir);
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(it)) {
    if (IsReplicaFile(e->d_name)) names.emplace_back(e->d_name);
  }
  ::closedir(it);
  for (const std::string& name : names) {
    ScopedFd f(::openat(d.get(), name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!f.valid()) continue;  // gone meanwhile, or a symbolic link (ELOOP)
    struct stat st {};
    if (::fstat(f.get(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    std::string_view base = name;
    if (base.ends_with(kTmpSuffix)) base.remove_suffix(kTmpSuffix.size());
    NOVA_DT_RETURN_IF_ERROR(
        SetFileOwner(f.get(), QemuOpens(base) ? qemu : AgentOwner(), 0600, Join(dir, name)));
  }
  return absl::OkStatus();
}

}  // namespace

Status ReplicaStore::CreateBasis(const std::string& dir, const ReplicaGeometry& geometry,
                                 const std::string& ram_file,
                                 const std::map<std::string, std::string>& disk_files,
                                 const ReplicaOptions& options) {
  // Preallocated as any replica: a seed over it later applies epochs in place.
  auto created = Create(dir, geometry, options);
  if (!created.ok()) return created.status();
  Status st;
  if (!ram_file.empty()) {
    st = CopyInto(ram_file, (*created)->ram_path(), geometry.ram_size, options.qemu);
  }
  for (const auto& d : geometry.disks) {
    auto it = disk_files.find(d.name);
    if (!st.ok() || it == disk_files.end() || it->second.empty()) continue;
    st = CopyInto(it->second, (*created)->disk_path(d.name), d.size, options.qemu);
  }
  if (!st.ok()) {
    (*created)->Destroy().IgnoreError();
    return st;
  }
  return absl::OkStatus();
}

StatusOr<core::ReplicaBasis> HashReplica(const ReplicaStore& store) {
  core::ReplicaBasis basis;
  const ReplicaGeometry& g = store.geometry();
  basis.ram_size_bytes = g.ram_size;
  basis.ram_pages.reserve(g.ram_size / kReplicaPageSize);
  NOVA_DT_RETURN_IF_ERROR(
      HashPieces(store.ram_path(), g.ram_size, kReplicaPageSize, basis.ram_pages));
  for (const auto& d : g.disks) {
    basis.disks.push_back({d.name, d.size});
    auto& blocks = basis.disk_blocks[d.name];
    blocks.reserve(core::BasisBlockCount(d.size));
    NOVA_DT_RETURN_IF_ERROR(
        HashPieces(store.disk_path(d.name), d.size, core::kBasisBlockSize, blocks));
  }
  return basis;
}

std::string ReplicaDir(const std::string& replica_path, const std::string& instance_uuid) {
  return Join(replica_path, instance_uuid);
}

StatusOr<std::unique_ptr<ReplicaStore>> ReplicaStore::Create(const std::string& dir,
                                                             const ReplicaGeometry& geometry,
                                                             const ReplicaOptions& options) {
  NOVA_DT_RETURN_IF_ERROR(ValidateGeometry(geometry));
  std::error_code ec;
  const std::filesystem::path parent = std::filesystem::path(dir).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  if (ec) return ErrnoStatus(ec.value(), "mkdir", parent.string());
  NOVA_DT_RETURN_IF_ERROR(MakeOwnedDir(dir, ::geteuid(), options.qemu.gid, 0710));
  if (Exists(Join(dir, kRecordFile))) {
    return absl::AlreadyExistsError(Cat(dir, " already holds a replica"));
  }
  auto make_image = [&](std::string_view name, uint64_t size) -> Status {
    std::string p = Join(dir, name);
    StatusOr<ScopedFd> fd =
        CreateFile(p, O_RDWR | O_TRUNC, QemuOpens(name) ? options.qemu : AgentOwner());
    if (!fd.ok()) return fd.status();
    if (::ftruncate(fd->get(), static_cast<off_t>(size)) != 0) {
      return ErrnoStatus(errno, "truncate", p);
    }
    if (options.preallocate && size > 0 && ::fallocate(fd->get(), 0, 0, size) != 0 &&
        errno != EOPNOTSUPP && errno != ENOSYS) {
      return ErrnoStatus(errno, "fallocate", p);
    }
    return Fsync(fd->get(), p);
  };
  Status st = make_image(kRamFile, geometry.ram_size);
  for (size_t i = 0; i < geometry.disks.size() && st.ok(); ++i) {
    st = make_image(DiskFileName(geometry.disks[i].name), geometry.disks[i].size);
  }
  if (st.ok()) st = make_image(DeviceStateFileName(0), 0);
  if (st.ok()) {
    EpochRecord rec;
    rec.geometry = geometry;
    rec.devstate_hash = Hash64("");
    std::string tmp = Join(dir, Cat(kRecordFile, kTmpSuffix));
    StatusOr<ScopedFd> fd = CreateFile(tmp, O_WRONLY | O_TRUNC, AgentOwner());
    st = fd.status();
    if (st.ok()) st = PWriteAll(fd->get(), EncodeEpochRecord(rec), 0, tmp);
    if (st.ok()) st = Fsync(fd->get(), tmp);
    if (st.ok() && ::rename(tmp.c_str(), Join(dir, kRecordFile).c_str()) != 0) {
      st = ErrnoStatus(errno, "rename", tmp);
    }
    if (st.ok()) st = FsyncDir(dir);
  }
  if (!st.ok()) {
    Destroy(dir).IgnoreError();
    return st;
  }
  return Open(dir, options);
}

StatusOr<std::unique_ptr<ReplicaStore>> ReplicaStore::Open(const std::string& dir,
                                                           const ReplicaOptions& options) {
  NOVA_DT_RETURN_IF_ERROR(OwnExisting(dir, options.qemu));
  auto store = std::make_unique<ReplicaStoreImpl>(dir, options);
  NOVA_DT_RETURN_IF_ERROR(store->Load());
  return std::unique_ptr<ReplicaStore>(std::move(store));
}

Status PrepareReplicaRoot(const std::string& replica_path, const FileOwner& qemu) {
  std::error_code ec;
  std::filesystem::create_directories(replica_path, ec);
  if (ec) return ErrnoStatus(ec.value(), "mkdir", replica_path);
  NOVA_DT_RETURN_IF_ERROR(MakeOwnedDir(replica_path, ::geteuid(), qemu.gid, 0710));
  if (Status st = CheckSearchable(replica_path, qemu); !st.ok()) {
    return absl::FailedPreconditionError(
        Cat("QEMU cannot reach the replicas in ", replica_path, ": ", st.message()));
  }
  return absl::OkStatus();
}

Status ReplicaStore::Destroy(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return absl::OkStatus();
    return ErrnoStatus(errno, "opendir", dir);
  }
  std::vector<std::string> names;
  bool foreign = false;
  while (struct dirent* e = ::readdir(d)) {
    std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    if (!IsReplicaFile(name)) foreign = true;
    names.emplace_back(name);
  }
  ::closedir(d);
  if (foreign) {
    return absl::FailedPreconditionError(
        Cat(dir, " holds files that are not a replica's; not removed"));
  }
  // epoch.rec first: a crash half-way leaves "no replica", never a damaged one.
  NOVA_DT_RETURN_IF_ERROR(Unlink(Join(dir, kRecordFile)));
  for (const std::string& n : names) NOVA_DT_RETURN_IF_ERROR(Unlink(Join(dir, n)));
  if (::rmdir(dir.c_str()) != 0) return ErrnoStatus(errno, "rmdir", dir);
  return absl::OkStatus();
}

}  // namespace novadt::replica
