// Ownership and permissions of the files the agent makes for QEMU to open (replica images, NBD
// sockets): they belong to the user and group QEMU runs as (libvirt's qemu.conf `user`/`group`,
// the agent's [libvirt] qemu_user/qemu_group; Debian: libvirt-qemu:libvirt-qemu) and nobody
// else can read them. docs/compute-host.md, "Ownership and permissions".
//
// POSIX only (no C library of the adapters). Thread-safe (no shared state).
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "agent/common/status.h"

namespace novadt {

// A user and group to give files to. The default value keeps what the creating process gets
// (chown with -1), which is what tests and hosts running QEMU as the agent's own user need.
struct FileOwner {
  static constexpr uid_t kKeepUid = static_cast<uid_t>(-1);
  static constexpr gid_t kKeepGid = static_cast<gid_t>(-1);
  uid_t uid = kKeepUid;
  gid_t gid = kKeepGid;
  // Every group a process of this owner runs with (gid and the user's supplementary groups, as
  // libvirt gives them to QEMU): what CheckSearchable() tests the group bits against.
  std::vector<gid_t> groups;
  // For messages: "libvirt-qemu:libvirt-qemu" (or the numbers).
  std::string name;

  bool keeps() const { return uid == kKeepUid && gid == kKeepGid; }
  bool operator==(const FileOwner&) const = default;
};

// Resolves a user and a group as libvirt's qemu.conf spells them: a name, or "+N" for the
// numeric id N without a lookup. NotFound ("no such user 'x'") when a name does not exist on
// this host; InvalidArgument for an empty or malformed value.
StatusOr<FileOwner> ResolveFileOwner(std::string_view user, std::string_view group);

// Gives the open file `fd` to `owner` (fields that are kKeep* stay) and exactly `mode`.
// `path` is for the error message only.
Status SetFileOwner(int fd, const FileOwner& owner, mode_t mode, std::string_view path);

// Makes `path` a directory owned by `uid`:`gid` (kKeep* leaves that part) with exactly `mode`:
// created when missing (its parent must exist), fixed when it exists. FailedPrecondition when
// `path` is a symbolic link or not a directory (never followed, never changed).
Status MakeOwnedDir(const std::string& path, uid_t uid, gid_t gid, mode_t mode);

// OK when a process running as `owner` (uid and groups) can search every directory on the way
// to the absolute path `dir`, `dir` included (mode bits only; ACLs are not read). Always OK for
// uid 0 and for an owner that keeps the creator's ids. FailedPrecondition naming the first
// directory it cannot pass, NotFound when one is missing.
Status CheckSearchable(const std::string& dir, const FileOwner& owner);

}  // namespace novadt
