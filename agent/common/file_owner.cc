#include "agent/common/file_owner.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>

#include "agent/common/scoped_fd.h"

namespace novadt {
namespace {

Status Errno(int err, std::string_view what) {
  return absl::ErrnoToStatus(err, std::string(what));
}

// "+N" -> N; false for anything else.
bool ParseNumericId(std::string_view s, unsigned long* id) {
  if (s.size() < 2 || s[0] != '+') return false;
  auto [end, ec] = std::from_chars(s.data() + 1, s.data() + s.size(), *id);
  return ec == std::errc() && end == s.data() + s.size() && *id < 0xffffffffUL;
}

}  // namespace

StatusOr<FileOwner> ResolveFileOwner(std::string_view user, std::string_view group) {
  if (user.empty()) return absl::InvalidArgumentError("empty user name");
  if (group.empty()) return absl::InvalidArgumentError("empty group name");
  FileOwner owner;
  std::string user_name;  // for the supplementary groups; empty for "+N" without an entry
  unsigned long id = 0;
  if (ParseNumericId(user, &id)) {
    owner.uid = static_cast<uid_t>(id);
    if (const passwd* pw = ::getpwuid(owner.uid)) user_name = pw->pw_name;
  } else if (user[0] == '+') {
    return absl::InvalidArgumentError("malformed numeric user '" + std::string(user) + "'");
  } else {
    const std::string name(user);
    const passwd* pw = ::getpwnam(name.c_str());
    if (pw == nullptr) return absl::NotFoundError("no such user '" + name + "' on this host");
    owner.uid = pw->pw_uid;
    user_name = name;
  }
  if (ParseNumericId(group, &id)) {
    owner.gid = static_cast<gid_t>(id);
  } else if (group[0] == '+') {
    return absl::InvalidArgumentError("malformed numeric group '" + std::string(group) + "'");
  } else {
    const std::string name(group);
    const struct group* gr = ::getgrnam(name.c_str());
    if (gr == nullptr) return absl::NotFoundError("no such group '" + name + "' on this host");
    owner.gid = gr->gr_gid;
  }
  // libvirt runs QEMU with the configured gid plus the user's groups (getgrouplist).
  owner.groups = {owner.gid};
  if (!user_name.empty()) {
    int n = 64;
    std::vector<gid_t> list(static_cast<size_t>(n));
    if (::getgrouplist(user_name.c_str(), owner.gid, list.data(), &n) < 0) {
      // Too small: `n` is the number needed now. A second failure (the groups changed between
      // the calls, or the lookup broke) leaves `list` unfilled: never taken for groups (its
      // padding would read as gid 0).
      if (n <= 0) n = 64;
      list.assign(static_cast<size_t>(n), 0);
      if (::getgrouplist(user_name.c_str(), owner.gid, list.data(), &n) < 0) {
        return absl::UnavailableError("cannot list the groups of user '" + user_name +
                                      "' (getgrouplist failed twice); try again");
      }
    }
    list.resize(static_cast<size_t>(std::max(n, 0)));
    for (gid_t g : list) {
      if (std::find(owner.groups.begin(), owner.groups.end(), g) == owner.groups.end()) {
        owner.groups.push_back(g);
      }
    }
  }
  owner.name = std::string(user) + ":" + std::string(group);
  return owner;
}

Status SetFileOwner(int fd, const FileOwner& owner, mode_t mode, std::string_view path) {
  if (!owner.keeps() && ::fchown(fd, owner.uid, owner.gid) != 0) {
    return Errno(errno, "chown " + std::string(path) + " to " + owner.name);
  }
  if (::fchmod(fd, mode) != 0) return Errno(errno, "chmod " + std::string(path));
  return absl::OkStatus();
}

Status MakeOwnedDir(const std::string& path, uid_t uid, gid_t gid, mode_t mode) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) return Errno(errno, "mkdir " + path);
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ELOOP || errno == ENOTDIR) {
      return absl::FailedPreconditionError(path + " is not a directory (or is a symbolic link)");
    }
    return Errno(errno, "open " + path);
  }
  if ((uid != FileOwner::kKeepUid || gid != FileOwner::kKeepGid) &&
      ::fchown(fd.get(), uid, gid) != 0) {
    return Errno(errno, "chown " + path);
  }
  if (::fchmod(fd.get(), mode) != 0) return Errno(errno, "chmod " + path);
  return absl::OkStatus();
}

Status CheckSearchable(const std::string& dir, const FileOwner& owner) {
  if (owner.uid == 0 || owner.uid == FileOwner::kKeepUid) return absl::OkStatus();
  if (dir.empty() || dir[0] != '/') {
    return absl::InvalidArgumentError("not an absolute path: '" + dir + "'");
  }
  std::string prefix;
  size_t pos = 0;
  while (true) {
    const size_t next = dir.find('/', pos + 1);
    prefix = next == std::string::npos ? dir : dir.substr(0, next);
    if (prefix.empty()) prefix = "/";
    struct stat st {};
    if (::stat(prefix.c_str(), &st) != 0) return Errno(errno, "stat " + prefix);
    mode_t bit = S_IXOTH;
    if (st.st_uid == owner.uid) {
      bit = S_IXUSR;
    } else if (std::find(owner.groups.begin(), owner.groups.end(), st.st_gid) !=
               owner.groups.end()) {
      bit = S_IXGRP;
    }
    if ((st.st_mode & bit) == 0) {
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
      return absl::FailedPreconditionError(prefix + " (mode " + mode + ", owner " +
                                           std::to_string(st.st_uid) + ":" +
                                           std::to_string(st.st_gid) +
                                           ") is not searchable by " + owner.name);
    }
    if (next == std::string::npos || next + 1 == dir.size()) return absl::OkStatus();
    pos = next;
  }
}

}  // namespace novadt
