// The backup's replica of one protected server (ARCHITECTURE.md stage VI, invariants 2 and 4).
//
// One directory per server, `<replica_path>/<instance_uuid>/` (ReplicaDir()):
//   ram.img            guest RAM, in place: the file the restored QEMU maps as its memory
//   devstate-0.bin     CPU + device state blob, two slots: the committed epoch's slot is never
//   devstate-1.bin       written; the next epoch's blob goes to the other one
//   disk-<name>.raw    one raw image per guest disk, in place
//   epoch.rec          the epoch record: committed epoch, geometry, devstate slot/size/hash,
//                      checksum of itself. Replaced atomically (temp + fsync + rename + fsync
//                      dir) as the LAST step of a commit: it is what "committed" means.
//   journal.redo       the redo journal of the epoch being received / applied
//   journal.commit     the commit mark: epoch, size and XXH3 of journal.redo, devstate
//                      slot/size/hash. Its atomic appearance makes the journal valid.
//   boot-kernel        the server's boot files (core/replication_link.h, "Boot files"), when its
//   boot-ramdisk         domain boots from Nova's instance directory: the primary's copies
//   boot.rec           their names, sizes and XXH3-64s; replaced atomically. None: no boot files.
//
// Why a REDO journal (and not an undo journal): epoch N must be held somewhere until its
// "end of epoch" arrives anyway (the primary may die mid-epoch and the replica must stay at
// N-1), and it must not be held in RAM beyond a bound (the backup idles at ~1x guest RAM). The
// spill file for the incoming epoch therefore already is a redo journal: making it valid costs
// one fsync and one small atomic rename, after which the epoch is applied in place from it.
// An undo journal would additionally need reading the old bytes of every dirty page/extent out
// of ram.img and the disks and writing them out before applying - one more read+write pass on
// the commit path (which gates the primary's output release) for no gain in safety.
//
// Commit(N) sequence (each numbered CommitStep is a fault/crash point, see FaultHook):
//   1. write the rest of the buffered epoch to journal.redo, fsync it; fsync devstate-<new>
//   2. write journal.commit atomically                              <- epoch N is now durable
//   3. apply every journal record in place to ram.img / disk-*.raw (in arrival order), fsync
//   4. write epoch.rec (epoch N, devstate slot new) atomically       <- replica is now epoch N
//   5. unlink journal.commit and journal.redo, fsync the directory
// Open() recovery: no valid commit mark -> any journal is discarded (nothing of it was
// applied: the replica is exactly the epoch of epoch.rec). A valid mark for epoch.rec+1 whose
// journal hashes to the mark's value -> the journal is re-applied (idempotent: every record is
// an absolute write of bytes at a position, replayed in the original order) and steps 3-5
// finish. A mark for epoch.rec -> steps 4 done, only cleanup left. Anything else (corrupt
// epoch.rec, corrupt mark, journal not matching a valid mark) -> DataLoss: the replica may be
// a mix and must be re-seeded; Open() never silently returns a mix.
//
// Seeding: while nothing is committed (committed_epoch() == 0) there is no consistent state to
// protect, so epoch 1 (every page, full disks) is written straight into the replica files with
// no journal and no buffering; only Commit()'s epoch.rec makes it count. A crash during seeding
// leaves committed_epoch() == 0 (not seeded) and the seed is restarted.
//
// Boot files: replaced as a set (BeginBootFiles, AddBootFileData, CommitBootFiles: each file
// received into boot-<name>.tmp, fsynced, renamed, then boot.rec written atomically), and only
// while the replica is not seeded (committed_epoch() == 0): a stream sends them before its seed's
// first epoch, so the epoch.rec that makes a replica restorable is written after its boot files
// are durable, and a replica that can be restored holds exactly the boot files of the stream
// that seeded it. A crash while they are replaced leaves a replica that is not seeded (re-seeded,
// never restored). BootFiles() checks them against boot.rec before a restore uses them.
//
// Durability: process death at any step is tested for (tests/unit/replica); power loss relies
// on the fsync ordering above and on the checksums of epoch.rec, journal.commit and the journal.
//
// Ownership and permissions (ReplicaOptions::qemu; docs/compute-host.md): a restored QEMU runs
// as the user QEMU runs as (libvirt-qemu on Debian) and opens ram.img (through the libvirt hook's
// hard link) and disk-*.raw (by path). So those two kinds of files belong to that user and its
// group, mode 0600; every other file (epoch.rec, journal, commit mark, device state, boot files:
// a restore copies those into the instance directory) belongs to the agent, mode 0600; the
// directory belongs to the agent and QEMU's group, mode 0710: QEMU can reach its images but
// cannot list the directory, nor create, replace or remove anything in it (so no file the agent
// or libvirt's relabelling later opens as root can be swapped for a symbolic link); nobody else
// can enter it. Files are opened with O_NOFOLLOW all the same.
// Open() gives an existing replica (e.g. one made before this scheme) the same ownership.
//
// Thread safety: a ReplicaStore is thread-compatible (one owner, e.g. the replication stream of
// the server; calls must not overlap). Two stores must never be open on one directory.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "agent/common/file_owner.h"
#include "agent/common/status.h"
#include "agent/core/replication_link.h"

namespace novadt::replica {

inline constexpr uint64_t kReplicaPageSize = 4096;

struct DiskGeometry {
  // Disk name as used in the stream and in `disk-<name>.raw`: [A-Za-z0-9._-], 1..64 chars,
  // not starting with '.'. E.g. the libvirt target dev "vda".
  std::string name;
  // Size in bytes of the raw image.
  uint64_t size = 0;
};

struct ReplicaGeometry {
  // Guest RAM size in bytes; a non-zero multiple of kReplicaPageSize.
  uint64_t ram_size = 0;
  // Guest disks; names unique.
  std::vector<DiskGeometry> disks;
};

// Numbered points of Commit() and of Open()'s recovery, in the order they happen. The hook is
// called BEFORE the step takes effect.
enum class CommitStep : int {
  kJournalWrite = 1,     // an append to journal.redo (also on spills during AddPages/AddDiskWrite)
  kJournalSync = 2,      // fsync journal.redo
  kDeviceStateSync = 3,  // fsync devstate-<new slot>.bin
  kMarkWrite = 4,        // write + fsync journal.commit.tmp
  kMarkRename = 5,       // rename it to journal.commit
  kMarkDirSync = 6,      // fsync the directory: the epoch is durable after this step
  kApplyRecord = 7,      // apply one journal record in place (called once per record)
  kReplicaSync = 8,      // fsync ram.img and disk-*.raw
  kRecordWrite = 9,      // write + fsync epoch.rec.tmp
  kRecordRename = 10,    // rename it to epoch.rec
  kRecordDirSync = 11,   // fsync the directory: the replica is the new epoch after this step
  kMarkRemove = 12,      // unlink journal.commit
  kJournalRemove = 13,   // unlink journal.redo
  kCleanupDirSync = 14,  // fsync the directory
  // Boot files (BeginBootFiles .. CommitBootFiles), before a seed's first epoch.
  kBootFileWrite = 15,      // a write to boot-<name>.tmp
  kBootFileSync = 16,       // fsync boot-<name>.tmp
  kBootFileRename = 17,     // rename it to boot-<name>
  kBootRecordWrite = 18,    // write + fsync boot.rec.tmp
  kBootRecordRename = 19,   // rename it to boot.rec
  kBootRecordDirSync = 20,  // fsync the directory: the boot files are durable after this step
};
std::string_view CommitStepName(CommitStep step);

// Fault injection (LevelDB FaultInjectionTestEnv spirit): production passes none. Tests use it
// to kill the process at step k (real process death) or to fail a step (e.g. ENOSPC).
class FaultHook {
 public:
  virtual ~FaultHook() = default;
  // Called before `step`. OK lets the step run; an error makes the step fail with that status,
  // exactly as if its I/O had failed.
  virtual Status Before(CommitStep step) = 0;
};

struct ReplicaOptions {
  // Bytes of an incoming epoch held in memory; beyond this the epoch is spilled to
  // journal.redo as it arrives. Bounds the backup's RSS above its ~1x guest RAM page cache.
  uint64_t max_buffered_bytes = 64ull << 20;
  // Reserve the blocks of ram.img and disk images at Create() (fallocate) so that applying a
  // committed epoch in place cannot hit ENOSPC. Ignored where the file system cannot do it.
  bool preallocate = true;
  // Not owned; may be null. Must outlive the store.
  FaultHook* fault_hook = nullptr;
  // The user and group QEMU runs as ([libvirt] qemu_user / qemu_group): the owner of ram.img and
  // disk-*.raw, and the group of the directory (file comment, "Ownership and permissions").
  // Default: keep the agent's own ids (QEMU running as the agent's user, tests).
  FileOwner qemu;
};

// Memory accounting of one replica, for the agent's status (backup RSS vs guest RAM).
struct ReplicaStats {
  uint64_t buffered_bytes = 0;      // heap held for the open epoch (buffer capacity)
  uint64_t spilled_bytes = 0;       // bytes of the open epoch already in journal.redo
  uint64_t max_buffered_bytes = 0;  // the configured bound
  uint64_t ram_size = 0;            // guest RAM size, for comparison
};

class ReplicaStore {
 public:
  virtual ~ReplicaStore() = default;

  // Creates a replica at `dir` (created with parents if missing; `dir` itself owned as the file
  // comment says, parents as the umask makes them): zero-filled ram.img and disk images of the
  // geometry's sizes, epoch.rec with committed_epoch() == 0 (not seeded).
  // InvalidArgument for a bad geometry; AlreadyExists when `dir` already holds an epoch.rec;
  // ResourceExhausted when the file system is full (nothing usable is left behind).
  static StatusOr<std::unique_ptr<ReplicaStore>> Create(const std::string& dir,
                                                        const ReplicaGeometry& geometry,
                                                        const ReplicaOptions& options = {});
  // Opens an existing replica and recovers an interrupted commit (see the file comment).
  // NotFound when `dir` holds no replica (or its Create() never finished); DataLoss when the
  // files are inconsistent or corrupt in a way that could hide a mix of epochs (re-seed).
  static StatusOr<std::unique_ptr<ReplicaStore>> Open(const std::string& dir,
                                                      const ReplicaOptions& options = {});
  // Creates a replica that is not seeded (committed_epoch() 0) holding what a host has left of a
  // server it no longer runs: the bytes of `ram_file` and of raw disk images (`disk_files`:
  // disk name -> path; "" or a missing name leaves that part zero). It serves as the basis of
  // a later seed towards this host (core/replica_basis.h); it is never restored from.
  // A source shorter than its part leaves the rest zero; a longer one is cut. AlreadyExists
  // when `dir` holds a replica; errors of Create() and of reading the sources (the directory
  // is then removed).
  static Status CreateBasis(const std::string& dir, const ReplicaGeometry& geometry,
                            const std::string& ram_file,
                            const std::map<std::string, std::string>& disk_files,
                            const ReplicaOptions& options = {});
  // Removes the replica files of `dir` and the directory. OK when `dir` does not exist;
  // FailedPrecondition when `dir` holds files that are not a replica's (left untouched).
  static Status Destroy(const std::string& dir);

  // Geometry as recorded in epoch.rec.
  virtual const ReplicaGeometry& geometry() const = 0;
  // The last committed epoch; 0 = not seeded yet (the replica cannot be restored).
  virtual uint64_t committed_epoch() const = 0;

  // Starts receiving epoch `epoch`.
  // REQUIRES: epoch == committed_epoch() + 1, else FailedPrecondition "wrong epoch order";
  // no epoch open (FailedPrecondition; Abort() first); the store not broken; no boot files
  // being replaced or failed to commit (FailedPrecondition).
  virtual Status BeginEpoch(uint64_t epoch) = 0;
  // Adds dirty RAM pages: page_indices[i] gets data[i*4096, (i+1)*4096).
  // REQUIRES: an epoch is open; data.size() == 4096 * page_indices.size(); every index below
  // ram_size / 4096 (InvalidArgument, epoch stays open and unchanged).
  // A page given twice in one epoch ends with the later bytes.
  // A failed spill (e.g. ResourceExhausted on ENOSPC) aborts the epoch; the replica stays at
  // committed_epoch().
  virtual Status AddPages(const std::vector<uint64_t>& page_indices, std::string_view data) = 0;
  // Adds one guest write to disk `disk` at byte `offset`. Writes are applied in call order, so
  // overlapping writes end as on the primary. A whole image is seeded by calling this with
  // chunks (any size; chunks larger than max_buffered_bytes go straight to the journal).
  // REQUIRES: an epoch is open; `disk` in the geometry; offset + data.size() <= disk size
  // (InvalidArgument / NotFound, epoch unchanged). Spill failure as for AddPages.
  virtual Status AddDiskWrite(std::string_view disk, uint64_t offset, std::string_view data) = 0;
  // Sets the CPU + device state blob of the open epoch (written at once to the unused devstate
  // slot; the store keeps no copy of it).
  // REQUIRES: an epoch is open, no device state set yet in it (FailedPrecondition).
  // Failure (e.g. ResourceExhausted) aborts the epoch.
  virtual Status SetDeviceState(std::string_view blob) = 0;
  // "End of epoch": makes the open epoch the committed one, atomically and durably (sequence in
  // the file comment). On OK committed_epoch() is the new epoch and the caller may ack it.
  // REQUIRES: an epoch is open and its device state set (FailedPrecondition).
  // An error before the commit mark is durable (e.g. ResourceExhausted on ENOSPC) aborts the
  // epoch: the replica stays at the previous epoch, exactly. An error after it (I/O failing
  // while applying in place) leaves the store broken: every later call fails with
  // FailedPrecondition until the replica is re-Open()ed, which finishes the commit.
  virtual Status Commit() = 0;
  // Drops the open epoch (no-op when none). The replica stays at committed_epoch().
  virtual void Abort() = 0;

  // Starts replacing the replica's boot files (file comment) by `files`: each name
  // core::IsBootFileName and at most once, each size > 0 (InvalidArgument). Their bytes follow
  // through AddBootFileData(); CommitBootFiles() makes them the replica's. A replacement begun
  // before and not committed is dropped. REQUIRES: committed_epoch() == 0 and no epoch open
  // (FailedPrecondition: the boot files of a seeded replica are never changed).
  virtual Status BeginBootFiles(const std::vector<core::BootFile>& files) = 0;
  // Bytes [offset, offset + data.size()) of boot file `name`. REQUIRES: BeginBootFiles() named
  // it, `offset` is what it was given so far and the bytes fit its size (InvalidArgument; the
  // replacement goes on). A failed write (e.g. ResourceExhausted) drops the replacement.
  virtual Status AddBootFileData(std::string_view name, uint64_t offset,
                                 std::string_view data) = 0;
  // Makes the files given since BeginBootFiles() the replica's boot files, durably: the others
  // are removed, boot.rec lists exactly these. REQUIRES: a replacement begun and every file of
  // it complete (FailedPrecondition). On error the replacement is dropped, and BeginEpoch()
  // refuses to seed until another one is committed.
  virtual Status CommitBootFiles() = 0;
  // The replica's boot files, name -> path, each checked against boot.rec: a regular file (never
  // followed through a symbolic link) of the recorded size and XXH3-64. Empty when boot.rec is
  // missing (a replica without boot files). DataLoss naming the file for a corrupt boot.rec or a
  // file that is missing or does not match it.
  virtual StatusOr<std::map<std::string, std::string>> BootFiles() const = 0;

  // Makes the replica not seeded (committed_epoch() 0) while its files keep their bytes: the
  // basis of a seed that sends only what differs (core/replica_basis.h). Durable before it
  // returns (epoch.rec replaced atomically); from then on the replica cannot be restored until
  // the seed's epoch 1 commits. REQUIRES: no epoch open (FailedPrecondition).
  virtual Status Unseed() = 0;

  // Paths for the failover restorer; meaningful when committed_epoch() > 0 and no epoch is
  // being committed.
  virtual std::string ram_path() const = 0;
  virtual std::string device_state_path() const = 0;
  // "" when `disk` is not in the geometry.
  virtual std::string disk_path(std::string_view disk) const = 0;

  virtual ReplicaStats stats() const = 0;

  // Closes the store and removes the replica (static Destroy() of its directory). The store is
  // unusable afterwards (every call fails with FailedPrecondition).
  virtual Status Destroy() = 0;
};

// The bytes of `store`'s RAM image and disk images, hashed as a basis (core/replica_basis.h;
// its id is left 0 for the caller to set). Reads every file whole; REQUIRES no epoch being
// committed. Errors name the file.
StatusOr<core::ReplicaBasis> HashReplica(const ReplicaStore& store);

// `<replica_path>/<instance_uuid>`.
std::string ReplicaDir(const std::string& replica_path, const std::string& instance_uuid);

// Makes `replica_path` (created with parents if missing) the root of the replicas: owned by the
// agent and `qemu`'s group, mode 0710, like each replica directory — a restored QEMU reaches its
// replica's disk images through it, nobody but the agent lists it (the libvirt hook's *.arm
// files, mode 0600, live there too). Errors of creating or changing it; FailedPrecondition when
// `qemu` cannot search every directory on the way to it (CheckSearchable(); failover would then
// fail to open the replica's disks).
Status PrepareReplicaRoot(const std::string& replica_path, const FileOwner& qemu);

}  // namespace novadt::replica
