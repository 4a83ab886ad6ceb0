#include "agent/core/protection_table.h"

#include "agent/common/identifiers.h"
#include "agent/common/numbers.h"
#include "agent/common/scoped_fd.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>
#include <vector>

namespace novadt::core {
namespace {

constexpr char kHeader[] = "nova-dt-protection-table 1";

// FNV-1a 64: enough to tell a torn or edited file from the one Save() wrote.
uint64_t Checksum(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

Status Errno(const std::string& what, int err) {
  return absl::InternalError(what + ": " + std::strerror(err));
}

std::string DirOf(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

Status MakeDirs(const std::string& dir) {
  if (dir.empty() || dir == "/" || dir == ".") return absl::OkStatus();
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) return absl::OkStatus();
  NOVA_DT_RETURN_IF_ERROR(MakeDirs(DirOf(dir)));
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return Errno("mkdir " + dir, errno);
  return absl::OkStatus();
}

// Python-like str.split(sep): always at least one (maybe empty) piece.
std::vector<std::string_view> SplitFields(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (size_t start = 0;;) {
    const size_t at = s.find(sep, start);
    out.push_back(s.substr(start, at == std::string_view::npos ? at : at - start));
    if (at == std::string_view::npos) return out;
    start = at + 1;
  }
}

bool ValidField(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c == '\t' || c == '\n' || c == '\r' || c == ' ') return false;
  }
  return true;
}

}  // namespace

std::string ProtectionTable::Trailer(std::string_view body, size_t count) {
  return "end " + std::to_string(count) + " " + std::to_string(Checksum(body)) + "\n";
}

std::string ProtectionTable::Encode(const ProtectionMap& entries) {
  std::string body = std::string(kHeader) + "\n";
  for (const auto& [uuid, e] : entries) {
    body += uuid + "\t" + e.backup_host + "\t" + std::to_string(e.incarnation) + "\n";
  }
  return body + Trailer(body, entries.size());
}

// Every number is read with ParseInteger (std::from_chars): a number that does not fit is
// DataLoss like any other damage, never an exception (std::stoull threw on a 20-digit
// incarnation at every start of the agent, found by fuzzing).
StatusOr<ProtectionMap> ProtectionTable::Decode(std::string_view text) {
  // The trailer line "end <count> <checksum>" covers everything before it.
  if (text.empty() || text.back() != '\n') {
    return absl::DataLossError("truncated (no final newline)");
  }
  const size_t trailer_at = text.rfind('\n', text.size() - 2);
  const std::string_view body =
      trailer_at == std::string_view::npos ? std::string_view() : text.substr(0, trailer_at + 1);
  const std::vector<std::string_view> trailer =
      SplitFields(text.substr(body.size(), text.size() - body.size() - 1), ' ');
  const auto count = trailer.size() == 3 ? ParseInteger<size_t>(trailer[1]) : std::nullopt;
  const auto sum = trailer.size() == 3 ? ParseInteger<uint64_t>(trailer[2]) : std::nullopt;
  if (trailer.size() != 3 || trailer[0] != "end" || !count || !sum) {
    return absl::DataLossError("truncated or not a protection table (no trailer)");
  }
  if (*sum != Checksum(body)) return absl::DataLossError("checksum mismatch (torn or edited)");
  std::vector<std::string_view> lines = SplitFields(body, '\n');
  lines.pop_back();  // what follows the body's final newline: nothing
  if (lines.empty() || lines.front() != kHeader) {
    return absl::DataLossError("unknown header '" +
                               Printable(lines.empty() ? std::string_view() : lines.front()) +
                               "'");
  }
  ProtectionMap out;
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::vector<std::string_view> f = SplitFields(lines[i], '\t');
    const auto incarnation = f.size() == 3 ? ParseInteger<uint64_t>(f[2]) : std::nullopt;
    if (f.size() != 3 || !ValidField(f[0]) || !ValidField(f[1]) || !incarnation) {
      return absl::DataLossError("malformed entry '" + Printable(lines[i]) + "'");
    }
    if (!out.emplace(std::string(f[0]), ProtectionEntry{std::string(f[1]), *incarnation})
             .second) {
      return absl::DataLossError("duplicate entry '" + Printable(f[0]) + "'");
    }
  }
  if (out.size() != *count) return absl::DataLossError("entry count mismatch");
  return out;
}

StatusOr<ProtectionMap> ProtectionTable::Load() const {
  ScopedFd fd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) return ProtectionMap{};
    return Errno("cannot open the protection table " + path_, errno);
  }
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("cannot read the protection table " + path_, errno);
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > (16u << 20)) {
      return absl::DataLossError("protection table " + path_ + " is implausibly large");
    }
  }
  auto decoded = Decode(text);
  if (!decoded.ok()) {
    return absl::DataLossError("protection table " + path_ + " is unreadable: " +
                               std::string(decoded.status().message()));
  }
  return decoded;
}

Status ProtectionTable::Save(const ProtectionMap& entries) const {
  for (const auto& [uuid, e] : entries) {
    if (!ValidField(uuid) || !ValidField(e.backup_host)) {
      return absl::InvalidArgumentError("protection table entry '" + uuid + "' -> '" +
                                        e.backup_host + "' has an empty or blank field");
    }
  }
  auto crash = [&](SaveStep step) { return hook_ && !hook_(step); };
  auto crashed = [] { return absl::AbortedError("simulated crash"); };
  const std::string dir = DirOf(path_);
  NOVA_DT_RETURN_IF_ERROR(MakeDirs(dir));
  const std::string tmp = path_ + ".tmp";
  const std::string text = Encode(entries);
  if (crash(SaveStep::kCreateTemp)) return crashed();
  {
    ScopedFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (fd.get() < 0) return Errno("cannot create " + tmp, errno);
    size_t len = text.size();
    if (crash(SaveStep::kWriteTemp)) len /= 2;
    for (size_t off = 0; off < len;) {
      const ssize_t n = ::write(fd.get(), text.data() + off, len - off);
      if (n < 0) {
        if (errno == EINTR) continue;
        return Errno("cannot write " + tmp, errno);
      }
      off += static_cast<size_t>(n);
    }
    if (len != text.size()) return crashed();
    if (crash(SaveStep::kSyncTemp)) return crashed();
    if (::fsync(fd.get()) != 0) return Errno("cannot fsync " + tmp, errno);
  }
  if (crash(SaveStep::kRename)) return crashed();
  if (::rename(tmp.c_str(), path_.c_str()) != 0) {
    return Errno("cannot rename " + tmp + " to " + path_, errno);
  }
  if (crash(SaveStep::kSyncDir)) return crashed();
  ScopedFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() < 0 || ::fsync(dfd.get()) != 0) return Errno("cannot fsync " + dir, errno);
  return absl::OkStatus();
}

Status ProtectionTable::QuarantineCorrupt() const {
  if (::rename(path_.c_str(), (path_ + ".corrupt").c_str()) != 0 && errno != ENOENT) {
    return Errno("cannot move " + path_ + " aside", errno);
  }
  return absl::OkStatus();
}

}  // namespace novadt::core
