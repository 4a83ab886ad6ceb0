#include "agent/dirty/soft_dirty_tracker.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "agent/common/numbers.h"

namespace novadt::dirty {
namespace {

constexpr std::string_view kDeletedSuffix = " (deleted)";

// Consumes a token up to the next space (or the end) from `rest`.
std::string_view NextToken(std::string_view& rest) {
  const size_t n = std::min(rest.find(' '), rest.size());
  std::string_view token = rest.substr(0, n);
  rest.remove_prefix(n);
  return token;
}

void SkipSpaces(std::string_view& rest) {
  while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
}

bool ParseNumber(std::string_view s, int base, uint64_t* out) {
  const std::optional<uint64_t> v = ParseInteger<uint64_t>(s, base);
  if (v) *out = *v;
  return v.has_value();
}

Status OpenError(const std::string& path) {
  const int err = errno;
  const std::string msg = absl::StrCat("cannot open ", path, ": ", std::strerror(err));
  return err == ENOENT ? absl::NotFoundError(msg) : absl::UnavailableError(msg);
}

}  // namespace

StatusOr<MapsEntry> ParseMapsLine(std::string_view line) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  auto bad = [&](std::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat("maps line has a bad ", std::string(what), ": '", std::string(line), "'"));
  };
  MapsEntry e;
  std::string_view rest = line;
  const std::string_view range = NextToken(rest);
  const size_t dash = range.find('-');
  if (dash == std::string_view::npos || !ParseNumber(range.substr(0, dash), 16, &e.start) ||
      !ParseNumber(range.substr(dash + 1), 16, &e.end) || e.end < e.start) {
    return bad("address range");
  }
  SkipSpaces(rest);
  e.perms = std::string(NextToken(rest));
  if (e.perms.size() != 4) return bad("permission field");
  SkipSpaces(rest);
  if (!ParseNumber(NextToken(rest), 16, &e.offset)) return bad("offset");
  SkipSpaces(rest);
  e.dev = std::string(NextToken(rest));
  if (e.dev.find(':') == std::string::npos) return bad("device");
  SkipSpaces(rest);
  if (!ParseNumber(NextToken(rest), 10, &e.inode)) return bad("inode");
  SkipSpaces(rest);  // the kernel pads to a column before the path
  if (rest.ends_with(kDeletedSuffix)) {
    e.deleted = true;
    rest.remove_suffix(kDeletedSuffix.size());
  }
  e.path = std::string(rest);
  return e;
}

StatusOr<AddressRange> FindRamMapping(std::string_view maps_text, std::string_view ram_path) {
  std::vector<MapsEntry> matches;
  while (!maps_text.empty()) {
    const size_t nl = std::min(maps_text.find('\n'), maps_text.size());
    const std::string_view line = maps_text.substr(0, nl);
    maps_text.remove_prefix(std::min(nl + 1, maps_text.size()));
    if (line.empty()) continue;
    StatusOr<MapsEntry> e = ParseMapsLine(line);
    if (!e.ok()) return e.status();
    if (e->path == ram_path) matches.push_back(*std::move(e));
  }
  std::sort(matches.begin(), matches.end(),
            [](const MapsEntry& a, const MapsEntry& b) { return a.start < b.start; });
  std::optional<AddressRange> best;
  for (size_t i = 0; i < matches.size();) {
    AddressRange run{matches[i].start, matches[i].end};
    const uint64_t run_offset = matches[i].offset;
    size_t j = i + 1;
    while (j < matches.size() && matches[j].start == run.end &&
           matches[j].offset == run_offset + run.size()) {
      run.end = matches[j].end;
      ++j;
    }
    if (run_offset == 0 && (!best || run.size() > best->size())) best = run;
    i = j;
  }
  if (!best) {
    return absl::NotFoundError(
        absl::StrCat("no mapping of ", std::string(ram_path), " at file offset 0 in the maps"));
  }
  return *best;
}

DirtyPages PagemapToDirtyPages(std::span<const uint64_t> entries) {
  std::vector<uint64_t> words(DirtyPages::WordsFor(entries.size()), 0);
  for (size_t i = 0; i < entries.size(); ++i) {
    if (entries[i] & kPagemapSoftDirty) words[i / 64] |= uint64_t{1} << (i % 64);
  }
  return DirtyPages::FromWords(entries.size(), std::move(words));
}

StatusOr<std::unique_ptr<SoftDirtyTracker>> SoftDirtyTracker::Create(const std::string& proc_root,
                                                                     pid_t pid,
                                                                     AddressRange range) {
  if (range.end <= range.start || range.start % kPageSize != 0 || range.end % kPageSize != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad RAM address range ", absl::Hex(range.start), "-", absl::Hex(range.end)));
  }
  const std::string dir = absl::StrCat(proc_root, "/", pid, "/");
  ScopedFd pagemap(::open((dir + "pagemap").c_str(), O_RDONLY | O_CLOEXEC));
  if (!pagemap.valid()) return OpenError(dir + "pagemap");
  ScopedFd clear_refs(::open((dir + "clear_refs").c_str(), O_WRONLY | O_CLOEXEC));
  if (!clear_refs.valid()) return OpenError(dir + "clear_refs");
  return std::unique_ptr<SoftDirtyTracker>(
      new SoftDirtyTracker(std::move(pagemap), std::move(clear_refs), range));
}

Status SoftDirtyTracker::ClearSoftDirty() {
  // The kernel ignores the file position of clear_refs; a fake file collects one "4" per clear.
  if (::write(clear_refs_.get(), "4", 1) != 1) {
    armed_ = false;
    return absl::UnavailableError(absl::StrCat("writing 4 to clear_refs: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

Status SoftDirtyTracker::Reset() {
  NOVA_DT_RETURN_IF_ERROR(ClearSoftDirty());
  armed_ = true;
  return absl::OkStatus();
}

StatusOr<DirtyPages> SoftDirtyTracker::Collect() {
  if (!armed_) return absl::FailedPreconditionError("soft-dirty: Collect() before Reset()");
  const uint64_t pages = page_count();
  buffer_.resize(pages);
  const size_t bytes = pages * sizeof(uint64_t);
  auto* dst = reinterpret_cast<char*>(buffer_.data());
  size_t done = 0;
  while (done < bytes) {
    const off_t off = static_cast<off_t>(range_.start / kPageSize * sizeof(uint64_t) + done);
    const ssize_t n = ::pread(pagemap_.get(), dst + done, bytes - done, off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      armed_ = false;
      return absl::UnavailableError(
          absl::StrCat("reading pagemap: ", n == 0 ? "short read" : std::strerror(errno), " after ",
                       done, " of ", bytes, " bytes"));
    }
    done += static_cast<size_t>(n);
  }
  DirtyPages dirty = PagemapToDirtyPages(buffer_);
  NOVA_DT_RETURN_IF_ERROR(ClearSoftDirty());
  return dirty;
}

}  // namespace novadt::dirty
