#include "agent/engine/boot_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "agent/common/file_owner.h"
#include "agent/common/identifiers.h"

namespace novadt::engine {
namespace {

constexpr size_t kCopyChunk = 1 << 20;
// The name console.log has in Nova's instance directory (libvirt creates it at start).
constexpr char kConsoleLog[] = "console.log";

Status Errno(int err, const std::string& what) { return absl::ErrnoToStatus(err, what); }

// Reads exactly `n` bytes at `offset`; FailedPrecondition when the file ends first.
Status PReadAll(int fd, char* dst, size_t n, uint64_t offset, const std::string& path) {
  while (n > 0) {
    const ssize_t r = ::pread(fd, dst, n, static_cast<off_t>(offset));
    if (r < 0) {
      if (errno == EINTR) continue;
      return Errno(errno, "read " + path);
    }
    if (r == 0) {
      return absl::FailedPreconditionError(path + " became shorter while it was read");
    }
    dst += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return absl::OkStatus();
}

Status WriteAll(int fd, const char* src, size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::write(fd, src, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Errno(errno, "write " + path);
    }
    src += w;
    n -= static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

// `st`'s file type for a message.
std::string KindOf(const struct stat& st) {
  if (S_ISDIR(st.st_mode)) return "a directory";
  if (S_ISLNK(st.st_mode)) return "a symbolic link";
  if (S_ISFIFO(st.st_mode)) return "a FIFO";
  if (S_ISSOCK(st.st_mode)) return "a socket";
  if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) return "a device";
  return "not a regular file";
}

// Opens `name` in the directory `dir_fd` (shown as `path`) as a directory, never through a link.
StatusOr<ScopedFd> OpenDirNoFollow(int dir_fd, const std::string& name, const std::string& path) {
  ScopedFd fd(::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (fd.valid()) return fd;
  const int err = errno;
  if (err == ELOOP || err == ENOTDIR) {
    // O_DIRECTORY|O_NOFOLLOW on a link fails with ENOTDIR: say which it is.
    struct stat st {};
    if (err == ELOOP ||
        (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))) {
      return absl::FailedPreconditionError(path + " is a symbolic link: refused (never followed)");
    }
    return absl::FailedPreconditionError(path + " is not a directory");
  }
  return Errno(err, "open " + path);
}

Status CheckBootFileNames(const std::vector<std::string>& names) {
  for (size_t i = 0; i < names.size(); ++i) {
    if (!core::IsBootFileName(names[i])) {
      return absl::InvalidArgumentError("boot file '" + Printable(names[i]) +
                                        "' is neither kernel nor ramdisk");
    }
    for (size_t j = 0; j < i; ++j) {
      if (names[j] == names[i]) {
        return absl::InvalidArgumentError("boot file '" + names[i] + "' named twice");
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

StatusOr<BootFileSource> BootFileSource::Open(const std::string& instances_path,
                                              const std::string& instance_uuid,
                                              const std::vector<std::string>& names,
                                              uint64_t max_bytes) {
  BootFileSource source;
  if (names.empty()) return source;
  NOVA_DT_RETURN_IF_ERROR(ValidateInstanceUuid(instance_uuid));
  NOVA_DT_RETURN_IF_ERROR(CheckBootFileNames(names));
  ScopedFd root(::open(instances_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid()) return Errno(errno, "open " + instances_path);
  const std::string dir_path = instances_path + "/" + instance_uuid;
  auto dir = OpenDirNoFollow(root.get(), instance_uuid, dir_path);
  if (!dir.ok()) return dir.status();
  for (const std::string& name : names) {
    File f;
    f.name = name;
    f.path = dir_path + "/" + name;
    // O_NONBLOCK: a FIFO planted by that name must not block the open.
    f.fd = ScopedFd(
        ::openat(dir->get(), name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!f.fd.valid()) {
      if (errno == ELOOP) {
        return absl::FailedPreconditionError("boot file " + f.path +
                                             " is a symbolic link: refused (never followed)");
      }
      return Errno(errno, "open boot file " + f.path);
    }
    struct stat st {};
    if (::fstat(f.fd.get(), &st) != 0) return Errno(errno, "stat " + f.path);
    if (!S_ISREG(st.st_mode)) {
      return absl::FailedPreconditionError("boot file " + f.path + " is " + KindOf(st) +
                                           ": refused");
    }
    f.size = static_cast<uint64_t>(st.st_size);
    if (f.size == 0) return absl::FailedPreconditionError("boot file " + f.path + " is empty");
    if (f.size > max_bytes) {
      return absl::ResourceExhaustedError(
          "boot file " + f.path + " of " + std::to_string(f.size) +
          " bytes is larger than [replication] max_boot_file_bytes = " + std::to_string(max_bytes));
    }
    source.files_.push_back(std::move(f));
  }
  return source;
}

std::vector<core::BootFile> BootFileSource::declared() const {
  std::vector<core::BootFile> out;
  for (const File& f : files_) out.push_back({f.name, f.size});
  return out;
}

Status BootFileSource::Send(core::EpochStream& stream) const {
  for (const File& f : files_) {
    for (uint64_t offset = 0; offset < f.size;) {
      const size_t n =
          static_cast<size_t>(std::min<uint64_t>(core::kBootFileChunkBytes, f.size - offset));
      core::StreamItem item = core::BootFileChunk{f.name, offset, std::string(n, '\0')};
      std::string& data = std::get<core::BootFileChunk>(item).data;
      NOVA_DT_RETURN_IF_ERROR(PReadAll(f.fd.get(), data.data(), n, offset, f.path));
      offset += n;
      NOVA_DT_RETURN_IF_ERROR(stream.Send(item));
    }
  }
  return absl::OkStatus();
}

namespace {

// Copies the regular file `from` (never through a link) into the open `to_fd`.
Status CopyInto(const std::string& from, int to_fd, const std::string& to) {
  ScopedFd in(::open(from.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!in.valid()) return Errno(errno, "open " + from);
  struct stat st {};
  if (::fstat(in.get(), &st) != 0) return Errno(errno, "stat " + from);
  if (!S_ISREG(st.st_mode)) return absl::FailedPreconditionError(from + " is " + KindOf(st));
  std::string buf(kCopyChunk, '\0');
  for (uint64_t offset = 0; offset < static_cast<uint64_t>(st.st_size);) {
    const size_t n = static_cast<size_t>(
        std::min<uint64_t>(kCopyChunk, static_cast<uint64_t>(st.st_size) - offset));
    NOVA_DT_RETURN_IF_ERROR(PReadAll(in.get(), buf.data(), n, offset, from));
    NOVA_DT_RETURN_IF_ERROR(WriteAll(to_fd, buf.data(), n, to));
    offset += n;
  }
  return absl::OkStatus();
}

// Writes `source` as `name` into the directory `dir_fd` (shown as `dir`): a new temporary file,
// given to `owner` with mode 0644, renamed over `name` unless that is something else than a
// regular file. Not fsynced (SyncInstanceDir(), once the guest runs).
Status WriteBootFile(int dir_fd, const std::string& dir, const std::string& name,
                     const std::string& source, const FileOwner& owner) {
  const std::string path = dir + "/" + name;
  const std::string tmp_name = "." + name + ".nova-dt.tmp";
  const std::string tmp = dir + "/" + tmp_name;
  // A leftover of a crashed attempt (or anything planted by that name) goes; unlinkat never
  // follows a link.
  if (::unlinkat(dir_fd, tmp_name.c_str(), 0) != 0 && errno != ENOENT) {
    return Errno(errno, "remove " + tmp);
  }
  ScopedFd out(::openat(dir_fd, tmp_name.c_str(),
                        O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!out.valid()) return Errno(errno, "create " + tmp);
  Status st = CopyInto(source, out.get(), tmp);
  if (st.ok()) st = SetFileOwner(out.get(), owner, 0644, tmp);
  if (st.ok()) {
    struct stat existing {};
    if (::fstatat(dir_fd, name.c_str(), &existing, AT_SYMLINK_NOFOLLOW) == 0) {
      if (!S_ISREG(existing.st_mode)) {
        st = absl::FailedPreconditionError(path + " exists and is " + KindOf(existing) +
                                           ": refused (only a regular file is replaced)");
      }
    } else if (errno != ENOENT) {
      st = Errno(errno, "stat " + path);
    }
  }
  if (st.ok() && ::renameat(dir_fd, tmp_name.c_str(), dir_fd, name.c_str()) != 0) {
    st = Errno(errno, "rename " + tmp + " to " + path);
  }
  if (!st.ok()) ::unlinkat(dir_fd, tmp_name.c_str(), 0);
  return st;
}

}  // namespace

StatusOr<PreparedInstanceDir> PrepareInstanceDir(
    const InstanceDirOptions& options, const std::string& instance_uuid,
    const std::map<std::string, std::string>& boot_files) {
  NOVA_DT_RETURN_IF_ERROR(ValidateInstanceUuid(instance_uuid));
  for (const auto& [name, source] : boot_files) {
    NOVA_DT_RETURN_IF_ERROR(CheckBootFileNames({name}));
  }
  const std::string& root_path = options.instances_path;
  ScopedFd root(::open(root_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid()) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      return absl::FailedPreconditionError(
          "Nova's instances_path " + root_path + " ([libvirt] instances_path) " +
          (err == ENOENT ? "does not exist" : "is not a directory") +
          " on this host: the instance directory cannot be made");
    }
    return Errno(err, "open " + root_path);
  }
  struct stat root_st {};
  if (::fstat(root.get(), &root_st) != 0) return Errno(errno, "stat " + root_path);
  // As nova-compute (running as the owner of instances_path) would have made them.
  FileOwner owner;
  owner.uid = root_st.st_uid;
  owner.gid = root_st.st_gid;
  owner.name = std::to_string(root_st.st_uid) + ":" + std::to_string(root_st.st_gid);

  PreparedInstanceDir prepared;
  prepared.path = root_path + "/" + instance_uuid;
  if (::mkdirat(root.get(), instance_uuid.c_str(), 0700) == 0) {
    prepared.created = true;
  } else if (errno != EEXIST) {
    return Errno(errno, "mkdir " + prepared.path);
  }
  auto dir = OpenDirNoFollow(root.get(), instance_uuid, prepared.path);
  if (!dir.ok()) return dir.status();
  struct stat dir_st {};
  if (::fstat(dir->get(), &dir_st) != 0) return Errno(errno, "stat " + prepared.path);
  if (prepared.created) {
    NOVA_DT_RETURN_IF_ERROR(SetFileOwner(dir->get(), owner, 0755, prepared.path));
  } else {
    // Found: someone else may have made it. Used only when nobody but its owner (root, or Nova's
    // user) can have put anything in it.
    if (dir_st.st_uid != 0 && dir_st.st_uid != root_st.st_uid) {
      return absl::FailedPreconditionError(
          prepared.path + " exists and belongs to uid " + std::to_string(dir_st.st_uid) +
          ", neither root nor the owner of " + root_path + ": refused");
    }
    if ((dir_st.st_mode & 022) != 0) {
      return absl::FailedPreconditionError(prepared.path +
                                           " exists and is writable by group or others: refused");
    }
  }
  for (const auto& [name, source] : boot_files) {
    if (Status st = WriteBootFile(dir->get(), prepared.path, name, source, owner); !st.ok()) {
      DiscardInstanceDir(prepared).IgnoreError();
      return st;
    }
    prepared.files.push_back(name);
  }
  return prepared;
}

Status SyncInstanceDir(const PreparedInstanceDir& prepared) {
  const size_t slash = prepared.path.rfind('/');
  const std::string parent = prepared.path.substr(0, slash);
  ScopedFd root(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid()) return Errno(errno, "open " + parent);
  auto dir = OpenDirNoFollow(root.get(), prepared.path.substr(slash + 1), prepared.path);
  if (!dir.ok()) return dir.status();
  for (const std::string& name : prepared.files) {
    ScopedFd f(::openat(dir->get(), name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!f.valid()) return Errno(errno, "open " + prepared.path + "/" + name);
    if (::fsync(f.get()) != 0) return Errno(errno, "fsync " + prepared.path + "/" + name);
  }
  if (::fsync(dir->get()) != 0) return Errno(errno, "fsync " + prepared.path);
  if (prepared.created && ::fsync(root.get()) != 0) return Errno(errno, "fsync " + parent);
  return absl::OkStatus();
}

Status DiscardInstanceDir(const PreparedInstanceDir& prepared) {
  if (!prepared.created) return absl::OkStatus();
  const size_t slash = prepared.path.rfind('/');
  const std::string parent = prepared.path.substr(0, slash);
  const std::string name = prepared.path.substr(slash + 1);
  ScopedFd root(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid()) return Errno(errno, "open " + parent);
  auto dir = OpenDirNoFollow(root.get(), name, prepared.path);
  if (!dir.ok()) return absl::IsNotFound(dir.status()) ? absl::OkStatus() : dir.status();
  Status first;
  for (const std::string_view file :
       {core::kBootFileKernel, core::kBootFileRamdisk, std::string_view(kConsoleLog)}) {
    if (::unlinkat(dir->get(), std::string(file).c_str(), 0) != 0 && errno != ENOENT &&
        first.ok()) {
      first = Errno(errno, "remove " + prepared.path + "/" + std::string(file));
    }
  }
  if (::unlinkat(root.get(), name.c_str(), AT_REMOVEDIR) != 0 && first.ok()) {
    first = Errno(errno, "rmdir " + prepared.path);
  }
  return first;
}

}  // namespace novadt::engine
