// Boot files on both sides of a pair (core/replication_link.h, "Boot files"; docs/compute-host.md,
// "Boot files"): a server Nova booted from Glance images with kernel_id/ramdisk_id boots from
// `<instances_path>/<uuid>/kernel` and `.../ramdisk`, files of its primary host only.
//
//   primary  BootFileSource reads them from Nova's instance directory at the start of every
//            replication stream, declares them in the StreamOpen and sends their bytes before
//            the seed's first epoch (PrimarySession).
//   backup   PrepareInstanceDir() makes the server's instance directory at restore, as Nova would
//            have on this host, and writes the replica's copies there, before the domain is
//            started (FailoverRestorer): libvirt then finds the kernel and ramdisk and can create
//            console.log there. SyncInstanceDir() makes them durable once the guest runs.
//
// Both run as root next to directories other users own (Nova's user owns instances_path), so no
// symbolic link in the instance directory is ever followed, no FIFO or device is read, and what
// they write is created, never opened as found.
//
// Thread-compatible; plain POSIX (no C library of the adapters).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "agent/common/scoped_fd.h"
#include "agent/common/status.h"
#include "agent/core/replication_link.h"

namespace novadt::engine {

// The boot files of one stream, opened on the primary.
class BootFileSource {
 public:
  // Opens `<instances_path>/<instance_uuid>/<name>` for each of `names` (core::IsBootFileName,
  // each at most once: InvalidArgument otherwise): `instances_path` as configured (it may be a
  // link the operator made), the instance directory and the file never through a symbolic link
  // (O_NOFOLLOW), the file only when it is a regular one (never blocking on a FIFO) and not
  // empty (FailedPrecondition naming it), and at most `max_bytes` long (ResourceExhausted naming
  // [replication] max_boot_file_bytes). NotFound when one is missing. The files stay open: what
  // Send() sends is what was opened here.
  static StatusOr<BootFileSource> Open(const std::string& instances_path,
                                       const std::string& instance_uuid,
                                       const std::vector<std::string>& names, uint64_t max_bytes);

  BootFileSource() = default;
  BootFileSource(BootFileSource&&) = default;
  BootFileSource& operator=(BootFileSource&&) = default;

  // What the StreamOpen declares (StreamOpen::boot_files), in Send() order.
  std::vector<core::BootFile> declared() const;
  // Sends every file whole as BootFileChunk items of at most core::kBootFileChunkBytes, file
  // after file in declared() order. Blocks while `stream` pushes back. The stream's error, or
  // FailedPrecondition when a file became shorter than it was when opened.
  Status Send(core::EpochStream& stream) const;

 private:
  struct File {
    std::string name;
    std::string path;  // for messages
    uint64_t size = 0;
    ScopedFd fd;
  };
  std::vector<File> files_;
};

// Who owns what PrepareInstanceDir() makes, and with which modes.
struct InstanceDirOptions {
  // Nova's instances_path ([libvirt] instances_path): it must exist (nova-compute makes it);
  // its owner and group own what is made in it, as Nova (running as that user) would have made
  // it: the directory 0755, the boot files 0644. libvirt's dynamic ownership gives the kernel and
  // ramdisk to QEMU's user while the guest runs, and makes console.log itself.
  std::string instances_path;
};

// What PrepareInstanceDir() made, to undo after a failed restore.
struct PreparedInstanceDir {
  std::string path;                // <instances_path>/<uuid>
  bool created = false;            // the directory did not exist before
  std::vector<std::string> files;  // the boot files written there (names)
};

// Makes `<instances_path>/<instance_uuid>/` as Nova would have on this host and writes each of
// `boot_files` (name -> the replica's copy, ReplicaStore::BootFiles()) there under its name,
// before a restored domain starts. The directory is created (mkdir, never through a link), or
// used as found when it is a real directory that neither group nor others may write, owned by
// root or the owner of instances_path. Each boot file is written to a new temporary file in it
// (O_CREAT|O_EXCL|O_NOFOLLOW), fsynced and renamed over its name: a leftover regular file (an
// earlier attempt's, or Nova's own from when the server ran here) is replaced, anything else by
// that name (a directory, a symbolic link, a FIFO...) is refused. The sources are opened without
// following links. What is written is in the page cache (QEMU reads it from there), not yet
// durable: SyncInstanceDir() makes it so once the guest runs, off the failover's critical path.
// Errors: FailedPrecondition naming what is wrong (instances_path missing or not a directory, the
// instance directory or a name there being something else, a foreign owner); the I/O error
// otherwise. `instance_uuid` must be canonical (InvalidArgument).
StatusOr<PreparedInstanceDir> PrepareInstanceDir(
    const InstanceDirOptions& options, const std::string& instance_uuid,
    const std::map<std::string, std::string>& boot_files);

// Makes what PrepareInstanceDir() wrote durable (fsync of the boot files, the directory and, if it
// was created, instances_path), never following a link: a later boot of the server after a crash
// of this host finds them whole. The first error.
Status SyncInstanceDir(const PreparedInstanceDir& prepared);

// Undoes a PrepareInstanceDir() after a restore failed, when it created the directory: removes
// Nova's names in it (kernel, ramdisk, console.log, whatever made them; never following a link)
// and the directory (left when anything else is in it). A directory that existed before is left
// as it is (the boot files written there are the server's own). Best effort: the first error.
Status DiscardInstanceDir(const PreparedInstanceDir& prepared);

}  // namespace novadt::engine
