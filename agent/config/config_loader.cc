// LoadAgentConfig(): oslo.config-style INI files read with inih, then validated.
//
// Parsing. inih does the reading, through ini_parse_stream() with our own line reader and a
// handler. Debian's libinih 55 is built with inline ';' comments (" ;" ends a value), a
// 200-byte line buffer (the rest of a longer line comes back as a new line) and Python
// configparser's continuation rules; these are compile-time settings, so each line is checked
// against oslo.config's iniparser rules and oslo's reading wins (a fuzz comparison with the
// real oslo.config 9.0.0 found no difference beyond the ones listed here):
//   - the reader splits lines on \n, \r\n and \r like Python's readlines(), and cuts a line
//     to inih's buffer; values are always taken whole from the raw line, so "a ;b", "x # y"
//     and values longer than 200 bytes stay intact;
//   - comments are '#' or ';' at column 0 only; an indented line continues the value above it,
//     also "  # text" (inih drops it as a comment); after a blank or comment line, or right
//     after a section header, an indented line is an error (inih would join or read it);
//   - a section line must end with ']' and its whole inside is the name ("[a]b]" is "a]b");
//   - a line inih rejects but oslo reads ("a ;b = c": key "a ;b") is read as oslo does; a line
//     starting with '\f' or '\v', which inih and oslo read differently, is refused.
// Multi-line values are joined with '\n' as oslo does. A UTF-8 BOM is skipped (oslo would
// fail on it).
//
// Values. As in oslo.config: later files override earlier ones, and within a file the last
// assignment wins; group names are lower-cased except DEFAULT; keys are case-sensitive;
// matching surrounding quotes are stripped on the key's own line; integers follow Python's
// int() ("1_000" is fine). oslo expands "$opt" and "${group.opt}" (string.Template); nova-dt
// does not implement that substitution and refuses such a value with a clear error, while
// "$$" and "\$" give a literal '$' and a '$' that starts no placeholder stays as it is (as with
// safe_substitute()).
//
// Deviations from oslo: an empty integer is an error (oslo would set the option to None); an
// empty [DEFAULT] transport_url disables the bus (oslo would default to "rabbit://"); unknown
// sections and keys are accepted as oslo does, but logged as a warning; values are validated
// beyond oslo's types (addresses, paths, lists, TLS files, transport scheme).
#include "agent/config/config_loader.h"

#include "agent/common/identifiers.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ini.h>

#include "agent/config/python_text.h"
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace novadt::config {
namespace {

// Keeps an error message on one line: control characters are shown escaped.
std::string OneLine(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out.push_back(kHex[(c >> 4) & 0xF]);
      out.push_back(kHex[c & 0xF]);
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string NormalizeGroupName(std::string_view name) {
  std::string out(name);
  if (out == "DEFAULT") return out;
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// One config file read through inih and reconciled with oslo.config's iniparser.

struct Assignment {
  std::string section;  // normalized group name
  std::string key;
  std::string value;
  int line = 0;
};

class OsloIniFile {
 public:
  OsloIniFile(std::string path, std::string_view content) : path_(std::move(path)) {
    if (content.substr(0, 3) == "\xEF\xBB\xBF") content.remove_prefix(3);
    // Python's universal newlines: "\r\n", "\r" and "\n" all end a line.
    size_t start = 0;
    while (start < content.size()) {
      const size_t end = content.find_first_of("\r\n", start);
      if (end == std::string_view::npos) {
        lines_.emplace_back(content.substr(start));
        break;
      }
      lines_.emplace_back(content.substr(start, end - start));
      const bool crlf =
          content[end] == '\r' && end + 1 < content.size() && content[end + 1] == '\n';
      start = end + (crlf ? 2 : 1);
    }
  }

  // Parses the whole file. On success appends its assignments, in file order, to `out`.
  Status Parse(std::vector<Assignment>* out) {
    out_ = out;
    const int rc = ini_parse_stream(&OsloIniFile::Read, this, &OsloIniFile::Handle, this);
    if (rc == -2) return absl::ResourceExhaustedError(path_ + ": out of memory reading the file");
    // inih's own syntax errors (rc > 0) are not used: every line it rejected went through
    // oslo's rules below, which decide (e.g. oslo takes a line holding only U+00A0 as blank).
    ProcessLinesUpTo(lines_.size());
    Flush();
    return error_;
  }

 private:
  // What inih reported for a line it took as "name = value" or as a continuation.
  struct InihReport {
    std::string_view name;
  };

  // inih's ini_reader: hands over the next raw line, cut to fit inih's buffer of `num` bytes
  // (the raw line is used for the value anyway).
  static char* Read(char* str, int num, void* stream) {
    auto* self = static_cast<OsloIniFile*>(stream);
    if (self->next_read_ >= self->lines_.size() || num < 3) return nullptr;
    const std::string& line = self->lines_[self->next_read_++];
    const size_t n = std::min(line.size(), static_cast<size_t>(num) - 2);
    std::memcpy(str, line.data(), n);
    str[n] = '\n';
    str[n + 1] = '\0';
    return str;
  }

  // inih's handler. inih calls it while processing the line it has just read.
  static int Handle(void* user, const char* section, const char* name, const char* value) {
    auto* self = static_cast<OsloIniFile*>(user);
    const size_t index = self->next_read_ - 1;
    self->ProcessLinesUpTo(index);  // the lines inih did not report
    const InihReport report{name};
    self->ProcessLine(index, &report);
    self->next_unprocessed_ = index + 1;
    return 1;  // errors are kept in error_; inih need not stop
  }

  void ProcessLinesUpTo(size_t end) {
    for (; next_unprocessed_ < end; ++next_unprocessed_) ProcessLine(next_unprocessed_, nullptr);
  }

  // oslo.config's BaseParser.parse() step for one line. `report` is what inih made of it, or
  // null when inih skipped the line (comment, section header, blank, or a line it rejected).
  void ProcessLine(size_t index, const InihReport* report) {
    if (!error_.ok()) return;
    const std::string_view line = PyRStrip(lines_[index]);
    if (line.find('\0') != std::string_view::npos) {
      return SetLineError(index, "NUL byte in the line");  // oslo fails on it when opening
    }
    if (line.empty()) {
      Flush();  // a blank line ends a multi-line value
      return;
    }
    if (line.front() == ' ' || line.front() == '\t') {
      // A continuation line, also when it looks like a comment ("  # x", dropped by inih) or
      // follows a blank or comment line (which inih would still join to the value above).
      if (!open_) return SetLineError(index, kUnexpectedContinuation);
      pending_values_.emplace_back(PyLStrip(line));
      return;
    }
    Flush();
    if (line.front() == '[') {
      if (line.back() != ']') {
        return SetLineError(index, "invalid section header (must end with ']')");
      }
      if (line.size() <= 2) return SetLineError(index, "empty section name");
      section_ = std::string(line.substr(1, line.size() - 2));
      has_section_ = true;
      return;
    }
    if (line.front() == '#' || line.front() == ';') return;  // comments only at column 0
    // oslo's _split_key_value(): the first of ':' and '=' separates key and value.
    const size_t sep = line.find_first_of(":=");
    if (sep == std::string_view::npos) {
      return SetLineError(index, "expected 'key = value' (no ':' or '=' found)");
    }
    const std::string_view key = PyStrip(line.substr(0, sep));
    std::string_view value = PyStrip(line.substr(sep + 1));
    if (key.empty()) return SetLineError(index, "empty key");
    if (!has_section_) return SetLineError(index, "assignment before any [section] header");
    // Where inih read the line as an assignment it must agree on the key; it does not for a
    // line starting with '\f' or '\v' (a continuation for inih), which is refused rather than
    // read differently from oslo. The section is oslo's: inih keeps only 49 bytes of a section
    // name and cuts "[a]b]" at the first ']'. inih rejects "a ;b = c" outright; oslo's reading
    // (key "a ;b", an unknown option) is kept.
    if (report != nullptr && report->name != key) {
      return SetLineError(index,
                          "not supported by nova-dt's INI reader (inih reads this "
                          "line differently from oslo.config)");
    }
    if (!value.empty() && value.front() == value.back() &&
        (value.front() == '"' || value.front() == '\'')) {
      value = value.substr(1, value.size() - 2);
    }
    open_ = true;
    pending_ =
        Assignment{NormalizeGroupName(section_), std::string(key), "", static_cast<int>(index) + 1};
    pending_values_ = {std::string(value)};
  }

  // Ends the open value, if any: oslo joins its lines with '\n'.
  void Flush() {
    if (!open_) return;
    open_ = false;
    std::string joined;
    for (size_t i = 0; i < pending_values_.size(); ++i) {
      if (i > 0) joined.push_back('\n');
      joined += pending_values_[i];
    }
    pending_.value = std::move(joined);
    out_->push_back(std::move(pending_));
  }

  void SetLineError(size_t index, std::string_view what) {
    error_ = absl::InvalidArgumentError(path_ + ": line " + std::to_string(index + 1) + ": " +
                                        std::string(what));
  }

  static constexpr std::string_view kUnexpectedContinuation =
      "unexpected continuation line (an indented line continues the value above it; a blank "
      "or comment line ends that value)";

  const std::string path_;
  std::vector<std::string> lines_;
  size_t next_read_ = 0;         // next line handed to inih
  size_t next_unprocessed_ = 0;  // next line not yet seen by oslo's rules
  std::string section_;          // current section as written in the file
  bool has_section_ = false;
  bool open_ = false;  // pending_ may still get continuation lines
  Assignment pending_;
  std::vector<std::string> pending_values_;
  std::vector<Assignment>* out_ = nullptr;
  Status error_;
};

StatusOr<std::string> ReadWholeFile(const std::string& path, std::string_view what) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::InvalidArgumentError(path + ": cannot read " + std::string(what) + ": " +
                                      std::strerror(errno));
  }
  std::string content;
  std::array<char, 65536> buf;
  while (true) {
    const ssize_t n = read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      close(fd);
      return absl::InvalidArgumentError(path + ": cannot read " + std::string(what) + ": " +
                                        std::strerror(err));
    }
    if (n == 0) break;
    content.append(buf.data(), static_cast<size_t>(n));
  }
  close(fd);
  return content;
}

// ---------------------------------------------------------------------------------------------
// Merged values of all files, and error messages that name where a value came from.

struct Setting {
  std::string value;  // after "$$" handling
  std::string file;   // the file in which it was last set
};

class Options {
 public:
  explicit Options(std::string last_file) : last_file_(std::move(last_file)) {}

  void Set(const std::string& file, Assignment a) {
    entries_[{a.section, a.key}] = Entry{std::move(a.value), file};
  }

  // The value of [section] key, or nullopt when no file sets it. Fails when the value uses
  // "$opt" substitution. `secret` values appear redacted in errors.
  StatusOr<std::optional<Setting>> Get(std::string_view section, std::string_view key,
                                       bool secret = false) {
    const auto it = entries_.find({std::string(section), std::string(key)});
    if (it == entries_.end()) return std::optional<Setting>();
    it->second.known = true;
    const Entry& e = it->second;
    std::string expanded;
    if (std::optional<std::string> bad = ExpandDollars(e.raw, &expanded)) {
      // A secret's placeholder may be part of a password: it is not shown.
      const std::string placeholder = secret ? "a '$name'" : "'" + *bad + "'";
      return Invalid(e.file, section, key,
                     placeholder +
                         " substitution is not supported by nova-dt (write '$$' for "
                         "a literal '$')",
                     secret ? RedactedTransportUrl(e.raw) : e.raw);
    }
    return std::optional<Setting>(Setting{std::move(expanded), e.file});
  }

  // "<file>: [<section>] <key>: <what>, got '<value>'" naming `file`, or the last file of the
  // list when the value was not set anywhere (file empty).
  Status Invalid(std::string_view file, std::string_view section, std::string_view key,
                 std::string_view what, std::string_view value) const {
    const std::string shown_file =
        !file.empty() ? std::string(file)
                      : (last_file_.empty() ? std::string("(no config file)") : last_file_);
    return absl::InvalidArgumentError(shown_file + ": [" + std::string(section) + "] " +
                                      std::string(key) + ": " + OneLine(what) + ", got '" +
                                      OneLine(value) + "'");
  }

  // Logs every key that no Get() asked for.
  void WarnUnknown() const {
    for (const auto& [name, entry] : entries_) {
      if (!entry.known) {
        spdlog::warn("{}: [{}] {}: unknown option, ignored", entry.file, name.first, name.second);
      }
    }
  }

 private:
  struct Entry {
    std::string raw;
    std::string file;
    bool known = false;
  };

  // oslo's _substitute(): "\$" -> "$$", then string.Template with idpattern
  // [_a-z][._a-z0-9]* (case-insensitive). Writes the result with "$$" -> "$" and returns the
  // first placeholder ("$name" / "${name}") found, which nova-dt refuses.
  static std::optional<std::string> ExpandDollars(std::string_view raw, std::string* out) {
    std::string s;
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '\\' && i + 1 < raw.size() && raw[i + 1] == '$') {
        s += "$$";
        ++i;
      } else {
        s.push_back(raw[i]);
      }
    }
    auto id_start = [](char c) { return c == '_' || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'); };
    auto id_char = [&](char c) { return id_start(c) || c == '.' || IsAsciiDigit(c); };
    out->clear();
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] != '$') {
        out->push_back(s[i]);
        continue;
      }
      if (i + 1 < s.size() && s[i + 1] == '$') {
        out->push_back('$');
        ++i;
        continue;
      }
      size_t j = i + 1;
      if (j < s.size() && id_start(s[j])) {
        while (j < s.size() && id_char(s[j])) ++j;
        return std::string(s.substr(i, j - i));
      }
      if (j < s.size() && s[j] == '{' && j + 1 < s.size() && id_start(s[j + 1])) {
        size_t k = j + 1;
        while (k < s.size() && id_char(s[k])) ++k;
        if (k < s.size() && s[k] == '}') return std::string(s.substr(i, k + 1 - i));
      }
      out->push_back('$');  // safe_substitute() keeps an invalid placeholder as it is
    }
    return std::nullopt;
  }

  const std::string last_file_;
  std::map<std::pair<std::string, std::string>, Entry> entries_;
};

// ---------------------------------------------------------------------------------------------
// Typed readers.

// Sets *out (and *file, where it was set) when some file sets [section] key; leaves them
// alone otherwise.
Status ReadString(Options& opts, std::string_view section, std::string_view key, std::string* out,
                  std::string* file = nullptr) {
  StatusOr<std::optional<Setting>> s = opts.Get(section, key);
  if (!s.ok()) return s.status();
  if (*s) {
    *out = std::move((*s)->value);
    if (file) *file = (*s)->file;
  }
  return absl::OkStatus();
}

// Sets *out when some file sets [section] key to a Python int() in min..max; fails otherwise.
template <typename T>
Status ReadInt(Options& opts, std::string_view section, std::string_view key, int64_t min,
               int64_t max, T* out) {
  StatusOr<std::optional<Setting>> s = opts.Get(section, key);
  if (!s.ok()) return s.status();
  if (!*s) return absl::OkStatus();
  const std::optional<int64_t> v = PythonInt((*s)->value);
  if (!v || *v < min || *v > max) {
    return opts.Invalid(
        (*s)->file, section, key,
        "expected an integer in " + std::to_string(min) + ".." + std::to_string(max), (*s)->value);
  }
  *out = static_cast<T>(*v);
  return absl::OkStatus();
}

// Sets *out when some file sets [section] key to one of oslo.config's Boolean strings (true/
// false, 1/0, yes/no, on/off; any case); fails otherwise.
Status ReadBool(Options& opts, std::string_view section, std::string_view key, bool* out) {
  StatusOr<std::optional<Setting>> s = opts.Get(section, key);
  if (!s.ok()) return s.status();
  if (!*s) return absl::OkStatus();
  std::string v(PyStrip((*s)->value));
  std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return std::tolower(c); });
  if (v == "true" || v == "1" || v == "yes" || v == "on") {
    *out = true;
  } else if (v == "false" || v == "0" || v == "no" || v == "off") {
    *out = false;
  } else {
    return opts.Invalid((*s)->file, section, key,
                        "expected a boolean (true/false, yes/no, on/off, 1/0)", (*s)->value);
  }
  return absl::OkStatus();
}

// Comma-separated list, items stripped. Empty text: empty list; an empty item: error text.
std::optional<std::string> SplitList(std::string_view text, std::vector<std::string>* items) {
  items->clear();
  if (PyStrip(text).empty()) return std::nullopt;
  size_t start = 0;
  while (true) {
    const size_t comma = text.find(',', start);
    const std::string_view item = PyStrip(text.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    if (item.empty()) return "empty item in the comma-separated list";
    items->emplace_back(item);
    if (comma == std::string_view::npos) return std::nullopt;
    start = comma + 1;
  }
}

// Sets *out when some file sets [section] key to a comma-separated list. An empty value is an
// empty list unless `non_empty`.
Status ReadList(Options& opts, std::string_view section, std::string_view key,
                std::vector<std::string>* out, bool non_empty) {
  std::string text, file;
  bool set = false;
  {
    StatusOr<std::optional<Setting>> s = opts.Get(section, key);
    if (!s.ok()) return s.status();
    if (!*s) return absl::OkStatus();
    text = (*s)->value;
    file = (*s)->file;
    set = true;
  }
  std::vector<std::string> items;
  if (std::optional<std::string> bad = SplitList(text, &items)) {
    return opts.Invalid(file, section, key, *bad, text);
  }
  if (set && non_empty && items.empty()) {
    return opts.Invalid(file, section, key, "expected at least one item", text);
  }
  *out = std::move(items);
  return absl::OkStatus();
}

// An AMQP exchange/queue/topic name: 1..255 bytes without control characters or spaces.
Status ReadAmqpName(Options& opts, std::string_view section, std::string_view key,
                    std::string* out, bool may_be_empty) {
  std::string file;
  NOVA_DT_RETURN_IF_ERROR(ReadString(opts, section, key, out, &file));
  if (out->empty() && may_be_empty) return absl::OkStatus();
  if (out->empty() || out->size() > 255) {
    return opts.Invalid(file, section, key, "expected an AMQP name of 1..255 bytes", *out);
  }
  for (unsigned char c : *out) {
    if (c <= ' ' || c == 0x7f) {
      return opts.Invalid(file, section, key,
                          "an AMQP name may not hold spaces or control characters", *out);
    }
  }
  return absl::OkStatus();
}

bool IsHostChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || IsAsciiDigit(c) || c == '-' ||
         c == '.' || c == '_';
}

enum class AddressUse { kListen, kDial };

// Checks "unix:/abs/path" (when allowed), "host:port" or "[ipv6]:port". Returns what is wrong.
std::optional<std::string> CheckAddress(std::string_view a, AddressUse use, bool allow_unix) {
  if (a.substr(0, 5) == "unix:") {
    if (!allow_unix) return "a unix socket is not allowed here";
    const std::string_view path = a.substr(5);
    if (path.size() < 2 || path[0] != '/') {
      return "a unix socket needs an absolute path, as in 'unix:/run/nova-dt/agent.sock'";
    }
    return std::nullopt;
  }
  std::string_view port;
  if (!a.empty() && a[0] == '[') {
    const size_t close = a.find(']');
    if (close == std::string_view::npos) return "missing ']' after the IPv6 address";
    const std::string v6(a.substr(1, close - 1));
    in6_addr addr;
    if (inet_pton(AF_INET6, v6.c_str(), &addr) != 1) return "not an IPv6 address in brackets";
    if (close + 1 >= a.size() || a[close + 1] != ':') return "expected '[ipv6]:port'";
    port = a.substr(close + 2);
  } else {
    const size_t colon = a.rfind(':');
    if (colon == std::string_view::npos) {
      return allow_unix ? "expected 'host:port', '[ipv6]:port' or 'unix:/path'"
                        : "expected 'host:port' or '[ipv6]:port'";
    }
    const std::string_view host = a.substr(0, colon);
    if (host.find(':') != std::string_view::npos) return "an IPv6 address must be in brackets";
    if (host.empty()) return "empty host";
    for (char c : host) {
      if (!IsHostChar(c)) return "the host may only hold letters, digits, '-', '.' and '_'";
    }
    port = a.substr(colon + 1);
  }
  const int min_port = use == AddressUse::kListen ? 0 : 1;
  int value = -1;
  if (!port.empty() && port.size() <= 5) {
    value = 0;
    for (char c : port) value = IsAsciiDigit(c) && value >= 0 ? value * 10 + (c - '0') : -1;
  }
  if (value < min_port || value > 65535) {
    return "the port must be an integer in " + std::to_string(min_port) + "..65535";
  }
  return std::nullopt;
}

// A listening address option ([peer] listen_address, [DEFAULT] control_address).
Status ReadAddress(Options& opts, std::string_view section, std::string_view key,
                   std::string* out) {
  std::string file;
  NOVA_DT_RETURN_IF_ERROR(ReadString(opts, section, key, out, &file));
  if (std::optional<std::string> bad = CheckAddress(*out, AddressUse::kListen, true)) {
    return opts.Invalid(file, section, key, *bad, *out);
  }
  return absl::OkStatus();
}

// A file the agent will read later (TLS material): it must exist, be readable and regular.
std::optional<std::string> CheckReadableFile(const std::string& path) {
  // O_NONBLOCK: a FIFO (or a device) named by mistake must not hang the agent's start.
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return std::string("cannot read the file: ") + std::strerror(errno);
  struct stat st;
  const bool regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  close(fd);
  if (!regular) return "not a regular file";
  return std::nullopt;
}

struct FileOption {
  std::string_view key;
  std::string* value;
  std::string file;  // where set; empty when not set
};

// Reads TLS file options; each one set must be a readable regular file.
Status ReadTlsFiles(Options& opts, std::string_view section, std::vector<FileOption>* files) {
  for (FileOption& f : *files) {
    NOVA_DT_RETURN_IF_ERROR(ReadString(opts, section, f.key, f.value, &f.file));
  }
  for (const FileOption& f : *files) {
    if (f.value->empty()) continue;
    if (std::optional<std::string> bad = CheckReadableFile(*f.value)) {
      return opts.Invalid(f.file, section, f.key, *bad, *f.value);
    }
  }
  return absl::OkStatus();
}

// [DEFAULT] / [oslo_messaging_notifications] transport_url.
Status ReadTransportUrl(Options& opts, std::string_view section, std::string* url,
                        TransportUrl* parsed) {
  StatusOr<std::optional<Setting>> s = opts.Get(section, "transport_url", /*secret=*/true);
  if (!s.ok()) return s.status();
  if (!*s || (*s)->value.empty()) {
    url->clear();
    return absl::OkStatus();
  }
  *url = (*s)->value;
  const std::string shown = RedactedTransportUrl(*url);
  StatusOr<TransportUrl> t = ParseTransportUrl(*url);
  if (!t.ok()) {
    return opts.Invalid((*s)->file, section, "transport_url", std::string(t.status().message()),
                        shown);
  }
  if (t->scheme != "rabbit" && t->scheme != "kombu") {
    return opts.Invalid((*s)->file, section, "transport_url",
                        "unsupported transport '" + t->scheme +
                            "' (nova-dt speaks only to RabbitMQ: use rabbit:// or kombu://)",
                        shown);
  }
  size_t with_credentials = 0;
  for (size_t i = 0; i < t->hosts.size(); ++i) {
    if (t->hosts[i].hostname.empty()) {
      // oslo's rabbit driver would fail with a TypeError on such a host.
      return opts.Invalid((*s)->file, section, "transport_url",
                          "host #" + std::to_string(i + 1) + " has no hostname", shown);
    }
    if (!t->hosts[i].username.empty() && !t->hosts[i].password.empty()) ++with_credentials;
  }
  if (with_credentials != 0 && with_credentials != t->hosts.size()) {
    // As TransportURL.parse() warns: credentials are never copied from one host to another.
    spdlog::warn(
        "{}: [{}] transport_url: all hosts must be set with username/password or "
        "not at the same time, got '{}'",
        (*s)->file, section, shown);
  }
  *parsed = *std::move(t);
  return absl::OkStatus();
}

std::string HostName() {
  std::array<char, 256> buf{};
  if (gethostname(buf.data(), buf.size() - 1) != 0) return "";
  return std::string(buf.data());
}

Status ReadAbsolutePath(Options& opts, std::string_view section, std::string_view key,
                        std::string* out) {
  std::string file;
  NOVA_DT_RETURN_IF_ERROR(ReadString(opts, section, key, out, &file));
  if (out->empty() || (*out)[0] != '/') {
    return opts.Invalid(file, section, key, "expected an absolute path", *out);
  }
  return absl::OkStatus();
}

// What ValidateHostName() accepts, for messages that show the value themselves.
constexpr char kHostNameRule[] =
    "host name must be 1-255 characters of [A-Za-z0-9._-] starting with a letter or digit";

Status LoadDefault(Options& opts, DefaultSection* d) {
  constexpr std::string_view kSection = "DEFAULT";
  std::string file;
  d->host = HostName();
  NOVA_DT_RETURN_IF_ERROR(ReadString(opts, kSection, "host", &d->host, &file));
  if (d->host.empty()) {
    return opts.Invalid(file, kSection, "host",
                        "must not be empty (it defaults to this machine's hostname)", d->host);
  }
  if (!ValidateHostName(d->host).ok()) {
    return opts.Invalid(file, kSection, "host", kHostNameRule, d->host);
  }
  NOVA_DT_RETURN_IF_ERROR(ReadTransportUrl(opts, kSection, &d->transport_url, &d->transport));
  NOVA_DT_RETURN_IF_ERROR(ReadAbsolutePath(opts, kSection, "state_path", &d->state_path));
  file.clear();
  NOVA_DT_RETURN_IF_ERROR(ReadString(opts, kSection, "log_level", &d->log_level, &file));
  if (d->log_level != "debug" && d->log_level != "info" && d->log_level != "warning" &&
      d->log_level != "error") {
    return opts.Invalid(file, kSection, "log_level", "expected one of debug, info, warning, error",
                        d->log_level);
  }
  NOVA_DT_RETURN_IF_ERROR(
      ReadAmqpName(opts, kSection, "control_exchange", &d->control_exchange, false));
  return ReadAddress(opts, kSection, "control_address", &d->control_address);
}

Status LoadRabbit(Options& opts, RabbitSection* r) {
  constexpr std::string_view kSection = "oslo_messaging_rabbit";
  NOVA_DT_RETURN_IF_ERROR(
      ReadBool(opts, kSection, "amqp_durable_queues", &r->amqp_durable_queues));
  NOVA_DT_RETURN_IF_ERROR(
      ReadBool(opts, kSection, "rabbit_quorum_queue", &r->rabbit_quorum_queue));
  NOVA_DT_RETURN_IF_ERROR(ReadBool(opts, kSection, "rabbit_ha_queues", &r->rabbit_ha_queues));
  if (r->rabbit_quorum_queue && r->rabbit_ha_queues) {
    // oslo.messaging raises a RuntimeError for this combination too.
    StatusOr<std::optional<Setting>> s = opts.Get(kSection, "rabbit_ha_queues");
    return opts.Invalid(s.ok() && *s ? (*s)->file : "", kSection, "rabbit_ha_queues",
                        "rabbit_quorum_queue and rabbit_ha_queues are mutually exclusive", "true");
  }
  NOVA_DT_RETURN_IF_ERROR(ReadInt(opts, kSection, "heartbeat_timeout_threshold", 0, 3600,
                                  &r->heartbeat_timeout_threshold));
  NOVA_DT_RETURN_IF_ERROR(
      ReadInt(opts, kSection, "rabbit_retry_interval", 1, 3600, &r->rabbit_retry_interval));
  NOVA_DT_RETURN_IF_ERROR(
      ReadInt(opts, kSection, "rabbit_retry_backoff", 0, 3600, &r->rabbit_retry_backoff));
  NOVA_DT_RETURN_IF_ERROR(
      ReadInt(opts, kSection, "rabbit_interval_max", 1, 3600, &r->rabbit_interval_max));
  NOVA_DT_RETURN_IF_ERROR(ReadInt(opts, kSection, "rabbit_qos_prefetch_count", 0, 65535,
                                  &r->rabbit_qos_prefetch_count));
  NOVA_DT_RETURN_IF_ERROR(ReadInt(opts, kSection, "rabbit_transient_queues_ttl", 1, 86400 * 30,
                                  &r->rabbit_transient_queues_ttl));
  NOVA_DT_RETURN_IF_ERROR(ReadBool(opts, kSection, "ssl", &r->ssl));
  std::vector<FileOption> tls = {{"ssl_ca_file", &r->ssl_ca_file, ""},
                                 {"ssl_cert_file", &r->ssl_cert_file, ""},
                                 {"ssl_key_file", &r->ssl_key_file, ""}};
  NOVA_DT_RETURN_IF_ERROR(ReadTlsFiles(opts, kSection, &tls));
  if (r->ssl_cert_file.empty() != r->ssl_key_file.empty()) {
    const FileOption& missing = r->ssl_cert_file.empty() ? tls[1] : tls[2];
    return opts.Invalid(missing.file, kSection, missing.key,
                        "ssl_cert_file and ssl_key_file go together: set both or neither",
                        *missing.value);
  }
  return absl::OkStatus();
}

Status LoadNotifications(Options& opts, const DefaultSection& d, NotificationsSection* n) {
  constexpr std::string_view kSection = "oslo_messaging_notifications";
  NOVA_DT_RETURN_IF_ERROR(ReadTransportUrl(opts, kSection, &n->transport_url, &n->transport));
  if (n->transport_url.empty()) n->transport = d.transport;
  NOVA_DT_RETURN_IF_ERROR(ReadList(opts, kSection, "driver", &n->driver, false));
  for (const std::string& driver : n->driver) {
    if (driver != "messagingv2" && driver != "messaging" && driver != "noop") {
      StatusOr<std::optional<Setting>> s = opts.Get(kSection, "driver");
      return opts.Invalid(s.ok() && *s ? (*s)->file : "", kSection, "driver",
                          "the agent supports the drivers messagingv2, messaging and noop",
                          driver);
    }
  }
  NOVA_DT_RETURN_IF_ERROR(ReadList(opts, kSection, "topics", &n->topics, true));
  NOVA_DT_RETURN_IF_ERROR(ReadAmqpName(opts, kSection, "exchange", &n->exchange, false));
  return ReadInt(opts, kSection, "max_queued", 1, 10000000, &n->max_queued);
}

Status LoadNovaNotifications(Options& opts, const DefaultSection& d,
                             NovaNotificationsSection* n) {
  constexpr std::string_view kSection = "nova_notifications";
  NOVA_DT_RETURN_IF_ERROR(ReadBool(opts, kSection, "enabled", &n->enabled));
  NOVA_DT_RETURN_IF_ERROR(ReadAmqpName(opts, kSection, "exchange", &n->exchange, false));
  NOVA_DT_RETURN_IF_ERROR(ReadList(opts, kSection, "topics", &n->topics, true));
  NOVA_DT_RETURN_IF_ERROR(ReadAmqpName(opts, kSection, "queue", &n->queue, true));
  if (n->queue.empty()) n->queue = "nova_dt_agent.versioned_notifications." + d.host;
  NOVA_DT_RETURN_IF_ERROR(
      ReadInt(opts, kSection, "prefetch_count", 1, 65535, &n->prefetch_count));
  NOVA_DT_RETURN_IF_ERROR(
      ReadInt(opts, kSection, "max_message_bytes", 1024, 64 << 20, &n->max_message_bytes));
  return ReadAmqpName(opts, kSection, "dead_letter_exchange", &n->dead_letter_exchange, true);
}

// A directory of the restore allow-list ([libvirt] instances_path, restore_file_dirs): an absolute
// path without empty, '.' or '..' components or a trailing '/', and not "/" (which would allow any
// host file). Paths in a peer's domain XML are compared with it as text.
std::optional<std::string> CheckRestoreDir(std::string_view dir) {
  if (dir.size() < 2 || dir[0] != '/' || dir.back() == '/') {
    return "expected an absolute path other than / without a trailing '/'";
  }
  for (size_t start = 1; start <= dir.size();) {
    const size_t end = std::min(dir.find('/', start), dir.size());
    const std::string_view part = dir.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") {
      return "expected a path without empty, '.' or '..' components";
    }
    start = end + 1;
  }
  return std::nullopt;
}

Status LoadLibvirt(Options& opts, LibvirtSection* l) {
  constexpr std::string_view kSection = "libvirt";
  std::string file;
  NOVA_DT_RETURN_IF_ERROR(ReadString(opts, kSection, "connection_uri", &l->connection_uri, &file));
  if (l->connection_uri.find(':') == std::string::npos) {
    return opts.Invalid(file, kSection, "connection_uri",
                        "expected a libvirt URI such as 'qemu:///system'", l->connection_uri);
  }
  file.clear();
  NOVA_DT_RETURN_IF_ERROR(ReadString(opts, kSection, "instances_path", &l->instances_path, &file));
  if (std::optional<std::string> bad = CheckRestoreDir(l->instances_path)) {
    return opts.Invalid(file, kSection, "instances_path", *bad, l->instances_path);
  }
  NOVA_DT_RETURN_IF_ERROR(
      ReadList(opts, kSection, "restore_file_dirs", &l->restore_file_dirs, false));
  for (const std::string& dir : l->restore_file_dirs) {
    if (std::optional<std::string> bad = CheckRestoreDir(dir)) {
      StatusOr<std::optional<Setting>> s = opts.Get(kSection, "restore_file_dirs");
      return opts.Invalid(s.ok() && *s ? (*s)->file : "", kSection, "restore_file_dirs", *bad, dir);
    }
  }
  NOVA_DT_RETURN_IF_ERROR(
      ReadInt(opts, kSection, "keepalive_interval_s", 1, 600, &l->keepalive_interval_s));
  NOVA_DT_RETURN_IF_ERROR(ReadInt(opts, kSection, "keepalive_count", 1, 100, &l->keepalive_count));
  NOVA_DT_RETURN_IF_ERROR(ReadInt(opts, kSection, "reconnect_max_backoff_ms", 100, 600000,
                                  &l->reconnect_max_backoff_ms));
  // Spelt as qemu.conf spells them; looked up when the agent starts (daemon/main.cc).
  for (auto [key, out] : {std::pair{"qemu_user", &l->qemu_user},
                          std::pair{"qemu_group", &l->qemu_group}}) {
    NOVA_DT_RETURN_IF_ERROR(ReadString(opts, kSection, key, out, &file));
    const bool numeric = out->size() > 1 && (*out)[0] == '+' &&
                         out->find_first_not_of("0123456789", 1) == std::string::npos;
    const bool name = !out->empty() && (*out)[0] != '-' && (*out)[0] != '+' &&
                      out->find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                             "0123456789._-$") == std::string::npos;
    if (!numeric && !name) {
      return opts.Invalid(file, kSection, key, "expected a user or group name, or +N", *out);
    }
  }
  return absl::OkStatus();
}

Status LoadPeer(Options& opts, PeerSection* p) {
  constexpr std::string_view kSection = "peer";
  NOVA_DT_RETURN_IF_ERROR(ReadAddress(opts, kSection, "listen_address", &p->listen_address));
  std::vector<FileOption> tls = {{"tls_cert_file", &p->tls_cert_file, ""},
                                 {"tls_key_file", &p->tls_key_file, ""},
                                 {"tls_ca_file", &p->tls_ca_file, ""}};
  NOVA_DT_RETURN_IF_ERROR(ReadTlsFiles(opts, kSection, &tls));
  NOVA_DT_RETURN_IF_ERROR(ReadBool(opts, kSection, "allow_insecure", &p->allow_insecure));
  const bool any = std::any_of(tls.begin(), tls.end(), [](auto& f) { return !f.value->empty(); });
  for (const FileOption& f : tls) {
    if (any && f.value->empty()) {
      return opts.Invalid(f.file, kSection, f.key,
                          "the peer TLS files go together: set tls_cert_file, tls_key_file and "
                          "tls_ca_file, or none of them",
                          *f.value);
    }
  }

  std::string peers, file;
  NOVA_DT_RETURN_IF_ERROR(ReadString(opts, kSection, "peers", &peers, &file));
  std::vector<std::string> items;
  if (std::optional<std::string> bad = SplitList(peers, &items)) {
    return opts.Invalid(file, kSection, "peers", *bad, peers);
  }
  p->peers.clear();
  std::set<std::string> names, addresses;
  for (const std::string& item : items) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos) {
      return opts.Invalid(file, kSection, "peers",
                          "expected 'host=address' items, as in 'compute-2=10.0.0.2:7070'", item);
    }
    PeerEndpoint peer{std::string(PyStrip(std::string_view(item).substr(0, eq))),
                      std::string(PyStrip(std::string_view(item).substr(eq + 1)))};
    if (peer.host.empty()) {
      return opts.Invalid(file, kSection, "peers", "empty host before '='", item);
    }
    if (!ValidateHostName(peer.host).ok()) {
      return opts.Invalid(file, kSection, "peers", std::string("the peer's ") + kHostNameRule,
                          item);
    }
    if (std::optional<std::string> bad = CheckAddress(peer.address, AddressUse::kDial, true)) {
      return opts.Invalid(file, kSection, "peers", *bad, item);
    }
    if (!names.insert(peer.host).second) {
      return opts.Invalid(file, kSection, "peers", "duplicate peer host '" + peer.host + "'", item);
    }
    if (!addresses.insert(peer.address).second) {
      return opts.Invalid(file, kSection, "peers", "duplicate peer address '" + peer.address + "'",
                          item);
    }
    p->peers.push_back(std::move(peer));
  }
  NOVA_DT_RETURN_IF_ERROR(
      ReadInt(opts, kSection, "hello_interval_ms", 50, 60000, &p->hello_interval_ms));
  NOVA_DT_RETURN_IF_ERROR(
      ReadInt(opts, kSection, "link_stats_interval_s", 0, 3600, &p->link_stats_interval_s));
  return ReadInt(opts, kSection, "link_capacity_mbit", 1, 10000000, &p->link_capacity_mbit);
}

Status LoadWitness(Options& opts, WitnessSection* w) {
  constexpr std::string_view kSection = "witness";
  std::string endpoints, file;
  NOVA_DT_RETURN_IF_ERROR(ReadString(opts, kSection, "etcd_endpoints", &endpoints, &file));
  std::vector<std::string> items;
  if (std::optional<std::string> bad = SplitList(endpoints, &items)) {
    return opts.Invalid(file, kSection, "etcd_endpoints", *bad, endpoints);
  }
  std::set<std::string> seen;
  std::string_view first_scheme;
  for (const std::string& item : items) {
    std::string_view rest = item;
    std::string_view scheme;
    if (rest.substr(0, 7) == "http://") {
      scheme = "http";
      rest.remove_prefix(7);
    } else if (rest.substr(0, 8) == "https://") {
      scheme = "https";
      rest.remove_prefix(8);
    } else {
      return opts.Invalid(file, kSection, "etcd_endpoints",
                          "expected 'http://host:port' or 'https://host:port' items", item);
    }
    if (std::optional<std::string> bad = CheckAddress(rest, AddressUse::kDial, false)) {
      return opts.Invalid(file, kSection, "etcd_endpoints", *bad, item);
    }
    if (!seen.insert(item).second) {
      return opts.Invalid(file, kSection, "etcd_endpoints", "duplicate endpoint", item);
    }
    // One set of TLS options serves every endpoint.
    if (first_scheme.empty()) first_scheme = scheme;
    if (scheme != first_scheme) {
      return opts.Invalid(file, kSection, "etcd_endpoints",
                          "mixes http:// and https:// endpoints: use one scheme for all", item);
    }
  }
  w->etcd_endpoints = std::move(items);
  NOVA_DT_RETURN_IF_ERROR(ReadBool(opts, kSection, "allow_none", &w->allow_none));

  std::vector<FileOption> tls = {{"tls_ca_file", &w->tls_ca_file, ""},
                                 {"tls_cert_file", &w->tls_cert_file, ""},
                                 {"tls_key_file", &w->tls_key_file, ""}};
  NOVA_DT_RETURN_IF_ERROR(ReadTlsFiles(opts, kSection, &tls));
  // A client certificate needs its key and the other way round; the CA file stands alone.
  if (w->tls_cert_file.empty() != w->tls_key_file.empty()) {
    const FileOption& missing = w->tls_cert_file.empty() ? tls[1] : tls[2];
    return opts.Invalid(missing.file, kSection, missing.key,
                        "tls_cert_file and tls_key_file go together: set both or neither",
                        *missing.value);
  }
  if (first_scheme == "http") {
    for (const FileOption& f : tls) {
      if (!f.value->empty()) {
        return opts.Invalid(f.file, kSection, f.key,
                            "TLS files need https:// etcd_endpoints (they are http://)", *f.value);
      }
    }
  }

  file.clear();
  NOVA_DT_RETURN_IF_ERROR(ReadString(opts, kSection, "key_prefix", &w->key_prefix, &file));
  const std::string& prefix = w->key_prefix;
  if (prefix.size() < 2 || prefix[0] != '/' || prefix.back() == '/' ||
      std::any_of(prefix.begin(), prefix.end(),
                  [](unsigned char c) { return c <= ' ' || c == 0x7f; })) {
    return opts.Invalid(file, kSection, "key_prefix",
                        "expected an etcd key prefix such as '/nova-dt': starting with '/', not "
                        "ending with '/', without spaces or control characters",
                        prefix);
  }

  // lease_ttl_s was replaced by lease_ttl_ms; refuse it rather than ignore a safety setting.
  StatusOr<std::optional<Setting>> old_ttl = opts.Get(kSection, "lease_ttl_s");
  if (!old_ttl.ok()) return old_ttl.status();
  if (*old_ttl) {
    return opts.Invalid((*old_ttl)->file, kSection, "lease_ttl_s",
                        "replaced by lease_ttl_ms (milliseconds, whole seconds)",
                        (*old_ttl)->value);
  }
  NOVA_DT_RETURN_IF_ERROR(ReadInt(opts, kSection, "lease_ttl_ms", 1000, 600000, &w->lease_ttl_ms));
  NOVA_DT_RETURN_IF_ERROR(
      ReadInt(opts, kSection, "fence_margin_ms", 100, 300000, &w->fence_margin_ms));
  NOVA_DT_RETURN_IF_ERROR(
      ReadInt(opts, kSection, "request_timeout_ms", 50, 60000, &w->request_timeout_ms));
  // A cross-check blames the option the files set: the smaller one when both are set.
  auto file_of = [&](std::string_view key) -> std::optional<std::string> {
    StatusOr<std::optional<Setting>> s = opts.Get(kSection, key);
    if (s.ok() && *s) return (*s)->file;
    return std::nullopt;
  };
  const std::optional<std::string> ttl_file = file_of("lease_ttl_ms");
  if (w->lease_ttl_ms % 1000 != 0) {
    return opts.Invalid(ttl_file.value_or(""), kSection, "lease_ttl_ms",
                        "must be whole seconds (etcd lease TTLs count seconds)",
                        std::to_string(w->lease_ttl_ms));
  }
  constexpr std::string_view kWhyMargin =
      ": the owner renews every lease_ttl_ms/3 and its fence deadline (last renewal + TTL - "
      "margin) must stay ahead of the next renewal";
  if (2 * w->fence_margin_ms > w->lease_ttl_ms) {
    if (const std::optional<std::string> f = file_of("fence_margin_ms"); f || !ttl_file) {
      return opts.Invalid(f.value_or(""), kSection, "fence_margin_ms",
                          "must be at most half of lease_ttl_ms (" +
                              std::to_string(w->lease_ttl_ms) + ")" + std::string(kWhyMargin),
                          std::to_string(w->fence_margin_ms));
    }
    return opts.Invalid(*ttl_file, kSection, "lease_ttl_ms",
                        "must be at least twice fence_margin_ms (" +
                            std::to_string(w->fence_margin_ms) + ")" + std::string(kWhyMargin),
                        std::to_string(w->lease_ttl_ms));
  }
  constexpr std::string_view kWhyTimeout =
      ": a keep-alive must time out before the next one is due";
  if (3 * w->request_timeout_ms > w->lease_ttl_ms) {
    if (const std::optional<std::string> f = file_of("request_timeout_ms"); f || !ttl_file) {
      return opts.Invalid(f.value_or(""), kSection, "request_timeout_ms",
                          "must be at most lease_ttl_ms/3 (" +
                              std::to_string(w->lease_ttl_ms / 3) + ")" + std::string(kWhyTimeout),
                          std::to_string(w->request_timeout_ms));
    }
    return opts.Invalid(*ttl_file, kSection, "lease_ttl_ms",
                        "must be at least 3 times request_timeout_ms (" +
                            std::to_string(w->request_timeout_ms) + ")" +
                            std::string(kWhyTimeout),
                        std::to_string(w->lease_ttl_ms));
  }
  return absl::OkStatus();
}

Status LoadReplication(Options& opts, const DefaultSection& d, const PeerSection& peers,
                       ReplicationSection* r) {
  constexpr std::string_view kSection = "replication";
  NOVA_DT_RETURN_IF_ERROR(ReadInt(opts, kSection, "epoch_ms", 10, 10000, &r->epoch_ms));
  NOVA_DT_RETURN_IF_ERROR(
      ReadInt(opts, kSection, "degrade_after_ms", 100, 600000, &r->degrade_after_ms));
  NOVA_DT_RETURN_IF_ERROR(
      ReadInt(opts, kSection, "heartbeat_interval_ms", 10, 10000, &r->heartbeat_interval_ms));
  NOVA_DT_RETURN_IF_ERROR(
      ReadInt(opts, kSection, "heartbeat_timeout_ms", 50, 60000, &r->heartbeat_timeout_ms));
  NOVA_DT_RETURN_IF_ERROR(
      ReadInt(opts, kSection, "failure_phi_threshold", 1, 50, &r->failure_phi_threshold));
  NOVA_DT_RETURN_IF_ERROR(ReadInt(opts, kSection, "max_epoch_bytes", int64_t{1} << 20,
                                  int64_t{64} << 30, &r->max_epoch_bytes));
  NOVA_DT_RETURN_IF_ERROR(ReadInt(opts, kSection, "max_device_state_bytes", int64_t{1} << 20,
                                  int64_t{16} << 30, &r->max_device_state_bytes));
  NOVA_DT_RETURN_IF_ERROR(ReadInt(opts, kSection, "max_guest_ram_bytes", int64_t{1} << 20,
                                  int64_t{1} << 50, &r->max_guest_ram_bytes));
  NOVA_DT_RETURN_IF_ERROR(ReadInt(opts, kSection, "max_disks", 1, 1024, &r->max_disks));
  NOVA_DT_RETURN_IF_ERROR(ReadInt(opts, kSection, "max_disk_bytes", int64_t{1} << 20,
                                  int64_t{1} << 56, &r->max_disk_bytes));
  NOVA_DT_RETURN_IF_ERROR(
      ReadInt(opts, kSection, "max_streams_per_peer", 1, 100000, &r->max_streams_per_peer));
  NOVA_DT_RETURN_IF_ERROR(ReadInt(opts, kSection, "max_boot_file_bytes", int64_t{1} << 20,
                                  int64_t{16} << 30, &r->max_boot_file_bytes));
  NOVA_DT_RETURN_IF_ERROR(ReadAbsolutePath(opts, kSection, "replica_path", &r->replica_path));
  std::string file;
  NOVA_DT_RETURN_IF_ERROR(
      ReadString(opts, kSection, "default_backup_host", &r->default_backup_host, &file));
  if (!r->default_backup_host.empty() && !ValidateHostName(r->default_backup_host).ok()) {
    return opts.Invalid(file, kSection, "default_backup_host", kHostNameRule,
                        r->default_backup_host);
  }
  if (r->default_backup_host == d.host) {
    return opts.Invalid(file, kSection, "default_backup_host",
                        "the backup must be another host than this one", r->default_backup_host);
  }
  NOVA_DT_RETURN_IF_ERROR(ReadList(opts, kSection, "reprotect_hosts", &r->reprotect_hosts, false));
  for (const std::string& host : r->reprotect_hosts) {
    const bool peer = std::any_of(peers.peers.begin(), peers.peers.end(),
                                  [&](const PeerEndpoint& p) { return p.host == host; });
    if (host != d.host && peer) continue;
    auto setting = opts.Get(kSection, "reprotect_hosts");
    const Setting set = setting.ok() && *setting ? **setting : Setting{};
    return opts.Invalid(set.file, kSection, "reprotect_hosts",
                        "'" + host + (host == d.host ? "' is this host" : "' is not one of [peer] peers"),
                        set.value);
  }
  return absl::OkStatus();
}

}  // namespace

StatusOr<AgentConfig> LoadAgentConfig(const std::vector<std::string>& files) {
  Options opts(files.empty() ? std::string() : files.back());
  for (const std::string& path : files) {
    StatusOr<std::string> content = ReadWholeFile(path, "config file");
    if (!content.ok()) return content.status();
    std::vector<Assignment> assignments;
    NOVA_DT_RETURN_IF_ERROR(OsloIniFile(path, *content).Parse(&assignments));
    for (Assignment& a : assignments) opts.Set(path, std::move(a));
  }

  AgentConfig config;
  NOVA_DT_RETURN_IF_ERROR(LoadDefault(opts, &config.defaults));
  NOVA_DT_RETURN_IF_ERROR(LoadRabbit(opts, &config.rabbit));
  NOVA_DT_RETURN_IF_ERROR(LoadNotifications(opts, config.defaults, &config.notifications));
  NOVA_DT_RETURN_IF_ERROR(
      LoadNovaNotifications(opts, config.defaults, &config.nova_notifications));
  NOVA_DT_RETURN_IF_ERROR(LoadLibvirt(opts, &config.libvirt));
  NOVA_DT_RETURN_IF_ERROR(LoadPeer(opts, &config.peer));
  NOVA_DT_RETURN_IF_ERROR(LoadWitness(opts, &config.witness));
  NOVA_DT_RETURN_IF_ERROR(
      LoadReplication(opts, config.defaults, config.peer, &config.replication));
  opts.WarnUnknown();
  return config;
}

}  // namespace novadt::config
