// The primary's protection table (ARCHITECTURE.md invariant 4): which servers this host protects
// and towards which backup, kept in one small file under [DEFAULT] state_path so that an agent
// restarted after a crash (kill -9) protects them again instead of silently dropping them.
//
// Crash safety: Save() writes a temporary file next to the table, fsyncs it, renames it over the
// table and fsyncs the directory. A crash at any step leaves either the old or the new table
// (a stale temporary file is ignored and overwritten by the next Save). The file carries a
// header, an entry count and a checksum, so a file that is truncated or not the table's format
// is reported by Load() as DataLoss — never half-read, never a crash.
//
// Pure data + POSIX files; thread-compatible (callers serialise Save/Load on one path).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>

#include "agent/common/status.h"

namespace novadt::core {

// ProtectionEntry::backup_host of a server that runs here unprotected after a failover or
// switchover and waits to be protected again towards [replication] reprotect_hosts.
inline constexpr char kReprotectPending[] = "*";

struct ProtectionEntry {
  std::string backup_host;  // or kReprotectPending
  // How many times protection of this server was recovered after an agent restart (for status
  // and logs: a server that keeps needing recovery points at a crashing agent).
  uint64_t incarnation = 0;
};

// By instance UUID.
using ProtectionMap = std::map<std::string, ProtectionEntry>;

class ProtectionTable {
 public:
  // The steps of Save(), for fault injection in tests.
  enum class SaveStep { kCreateTemp, kWriteTemp, kSyncTemp, kRename, kSyncDir };
  // Called before each step; returning false simulates a crash there: Save() stops at once
  // (the half-written temporary file stays, as after a real crash) and returns Aborted. At
  // kWriteTemp a crash leaves half of the content written.
  using CrashHook = std::function<bool(SaveStep)>;

  // `path`: the table file (its directory must exist or be creatable).
  explicit ProtectionTable(std::string path, CrashHook hook = nullptr)
      : path_(std::move(path)), hook_(std::move(hook)) {}

  // The table on disk. An absent file is an empty table. DataLoss (message names the file and
  // what is wrong) when the file is truncated, corrupt or of another format; Internal/errno
  // errors when it cannot be read.
  StatusOr<ProtectionMap> Load() const;

  // Replaces the table on disk with `entries`, crash-safely (see above). Creates the directory
  // when missing. On failure the old table is still in place.
  Status Save(const ProtectionMap& entries) const;

  // Moves an unreadable table aside (to <path>.corrupt) so the next Save() starts clean while
  // the bad file stays for inspection. OK when there is nothing to move.
  Status QuarantineCorrupt() const;

  const std::string& path() const { return path_; }

  // The file format (exposed for tests and fuzzing). Decode() never throws: any bytes that are
  // not a table Encode() wrote (bad numbers included) are DataLoss naming what is wrong.
  static std::string Encode(const ProtectionMap& entries);
  static StatusOr<ProtectionMap> Decode(std::string_view text);
  // The last line of the format, "end <count> <checksum of body>\n", for a `body` (header and
  // entry lines) of `count` entries: lets a test or fuzz target seal bytes of its own.
  static std::string Trailer(std::string_view body, size_t count);

 private:
  const std::string path_;
  const CrashHook hook_;
};

}  // namespace novadt::core
