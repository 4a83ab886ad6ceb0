#include "agent/common/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "agent/common/scoped_fd.h"

namespace novadt {
namespace {

Status Errno(int err, const std::string& what, const std::string& path) {
  std::string msg = what + " " + path + ": " + std::strerror(err);
  if (err == ENOENT) return absl::NotFoundError(msg);
  if (err == ENOSPC || err == EDQUOT) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

std::string DirOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

Status WriteFileAtomically(const std::string& path, std::string_view bytes, mode_t mode) {
  const std::string tmp = path + ".tmp";
  Status st;
  {
    ScopedFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode));
    if (fd.get() < 0) return Errno(errno, "cannot create", tmp);
    // O_CREAT honours the umask; the mode asked for is the mode the file gets.
    if (::fchmod(fd.get(), mode) != 0) st = Errno(errno, "cannot chmod", tmp);
    for (size_t done = 0; st.ok() && done < bytes.size();) {
      const ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) st = Errno(errno, "cannot write", tmp);
      if (n > 0) done += static_cast<size_t>(n);
    }
    if (st.ok() && ::fsync(fd.get()) != 0) st = Errno(errno, "cannot fsync", tmp);
  }
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) st = Errno(errno, "cannot rename", tmp);
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  const std::string dir = DirOf(path);
  ScopedFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d.get() < 0) return Errno(errno, "cannot open directory", dir);
  if (::fsync(d.get()) != 0) return Errno(errno, "cannot fsync directory", dir);
  return absl::OkStatus();
}

StatusOr<std::string> ReadSmallFile(const std::string& path, size_t max_bytes) {
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0) return Errno(errno, "cannot open", path);
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Errno(errno, "cannot read", path);
    if (n == 0) return out;
    if (out.size() + static_cast<size_t>(n) > max_bytes) {
      return absl::DataLossError(path + " is larger than " + std::to_string(max_bytes) +
                                 " bytes");
    }
    out.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace novadt
