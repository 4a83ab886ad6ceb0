// Transport URL parsing, a port of oslo.messaging 14.0.3 TransportURL.parse() together with the
// parts of Python 3.11's urllib.parse (as patched in Debian 12, 3.11.2-6+deb12u6) and
// ipaddress that it relies on. Every rule below names the Python code it mirrors, so a
// difference can be checked against the original.
//
// Known deviations (the first two are documented in transport_url.h):
//  - a port must fit 0..65535 (oslo's int() accepts -1 or 99999 and fails only when dialing);
//  - an empty URL is an error (oslo substitutes its own default "rabbit://");
//  - urlsplit's NFKC check of non-ASCII netlocs and int()'s non-ASCII digits are not ported;
//  - a user or password given as empty ("u:@h") and one not given ("u@h") both read as empty.
#include "agent/config/transport_url.h"

#include "agent/config/python_text.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace novadt::config {
namespace {

constexpr uint16_t kRabbitDefaultPort = 5672;

bool IsAsciiAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsHexDigit(char c) {
  return IsAsciiDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
int HexValue(char c) {
  if (IsAsciiDigit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return c - 'A' + 10;
}

// urllib.parse.scheme_chars.
bool IsSchemeChar(char c) {
  return IsAsciiAlpha(c) || IsAsciiDigit(c) || c == '+' || c == '-' || c == '.';
}

char AsciiLower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// Python str.split(sep) for a one-character separator: always at least one (maybe empty) item.
std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    const size_t pos = s.find(sep, start);
    if (pos == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, pos - start));
    start = pos + 1;
  }
}

// Appends `bytes` to `out` the way bytes.decode('utf-8', errors='replace') would: each maximal
// subpart of an ill-formed sequence becomes one U+FFFD (Unicode 3.9, table 3-7).
void AppendUtf8Replacing(std::string_view bytes, std::string* out) {
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  size_t i = 0;
  while (i < bytes.size()) {
    const auto b0 = static_cast<unsigned char>(bytes[i]);
    if (b0 < 0x80) {
      out->push_back(static_cast<char>(b0));
      ++i;
      continue;
    }
    int need = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      need = 1;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      need = 2;
      if (b0 == 0xE0) lo = 0xA0;
      if (b0 == 0xED) hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      need = 3;
      if (b0 == 0xF0) lo = 0x90;
      if (b0 == 0xF4) hi = 0x8F;
    } else {
      out->append(kReplacement);
      ++i;
      continue;
    }
    size_t j = i + 1;
    bool ok = true;
    for (int k = 0; k < need; ++k, ++j) {
      if (j >= bytes.size()) {
        ok = false;
        break;
      }
      const auto b = static_cast<unsigned char>(bytes[j]);
      const unsigned char min = k == 0 ? lo : 0x80;
      const unsigned char max = k == 0 ? hi : 0xBF;
      if (b < min || b > max) {
        ok = false;
        break;
      }
    }
    if (ok) {
      out->append(bytes.substr(i, j - i));
    } else {
      out->append(kReplacement);
    }
    i = j;
  }
}

// urllib.parse.unquote(): "%XX" escapes in ASCII runs are decoded to bytes and those bytes
// decoded as UTF-8 with errors='replace'; malformed escapes and non-ASCII text pass unchanged.
std::string Unquote(std::string_view s) {
  if (s.find('%') == std::string_view::npos) return std::string(s);
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) >= 0x80) {
      const size_t start = i;
      while (i < s.size() && static_cast<unsigned char>(s[i]) >= 0x80) ++i;
      out.append(s.substr(start, i - start));
      continue;
    }
    std::string bytes;
    while (i < s.size() && static_cast<unsigned char>(s[i]) < 0x80) {
      if (s[i] == '%' && i + 2 < s.size() && IsHexDigit(s[i + 1]) && IsHexDigit(s[i + 2])) {
        bytes.push_back(static_cast<char>(HexValue(s[i + 1]) * 16 + HexValue(s[i + 2])));
        i += 3;
      } else {
        bytes.push_back(s[i]);
        ++i;
      }
    }
    AppendUtf8Replacing(bytes, &out);
  }
  return out;
}

// urllib.parse.parse_qs(qs) with its defaults (keep_blank_values=False, separator='&'),
// followed by oslo's ','.join() of repeated keys.
std::map<std::string, std::string> ParseQuery(std::string_view qs) {
  std::map<std::string, std::string> out;
  for (std::string_view item : Split(qs, '&')) {
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos) continue;  // no '=': dropped (keep_blank_values=False)
    std::string name(item.substr(0, eq));
    std::string value(item.substr(eq + 1));
    if (value.empty()) continue;  // blank value: dropped
    for (char& c : name) c = (c == '+') ? ' ' : c;
    for (char& c : value) c = (c == '+') ? ' ' : c;
    std::string key = Unquote(name);
    std::string decoded = Unquote(value);
    auto [it, inserted] = out.try_emplace(std::move(key), decoded);
    if (!inserted) it->second += "," + decoded;
  }
  return out;
}

// ipaddress.IPv4Address parsing (Python 3.11): four decimal octets, 1-3 digits, no leading
// zeros, each <= 255.
bool IsPythonIPv4(std::string_view s) {
  const std::vector<std::string_view> octets = Split(s, '.');
  if (octets.size() != 4) return false;
  for (std::string_view o : octets) {
    if (o.empty() || o.size() > 3) return false;
    for (char c : o) {
      if (!IsAsciiDigit(c)) return false;
    }
    if (o.size() > 1 && o[0] == '0') return false;
    int v = 0;
    for (char c : o) v = v * 10 + (c - '0');
    if (v > 255) return false;
  }
  return true;
}

// ipaddress.IPv6Address parsing (Python 3.11, with "%scope" suffix), a line-by-line port of
// _BaseV6._ip_int_from_string.
bool IsPythonIPv6(std::string_view s) {
  if (s.find('/') != std::string_view::npos) return false;
  const size_t percent = s.find('%');
  if (percent != std::string_view::npos) {
    const std::string_view scope = s.substr(percent + 1);
    if (scope.empty() || scope.find('%') != std::string_view::npos) return false;
    s = s.substr(0, percent);
  }
  if (s.empty()) return false;
  std::vector<std::string_view> parts = Split(s, ':');
  if (parts.size() < 3) return false;
  if (parts.back().find('.') != std::string_view::npos) {
    if (!IsPythonIPv4(parts.back())) return false;
    parts.pop_back();
    // Python appends the two hextets of the IPv4 value; only their count matters here.
    parts.push_back("0");
    parts.push_back("0");
  }
  constexpr size_t kHextets = 8;
  if (parts.size() > kHextets + 1) return false;
  std::optional<size_t> skip_index;
  for (size_t i = 1; i + 1 < parts.size(); ++i) {
    if (parts[i].empty()) {
      if (skip_index) return false;
      skip_index = i;
    }
  }
  size_t parts_hi = 0, parts_lo = 0;
  if (skip_index) {
    parts_hi = *skip_index;
    parts_lo = parts.size() - *skip_index - 1;
    if (parts.front().empty()) {
      if (--parts_hi != 0) return false;
    }
    if (parts.back().empty()) {
      if (--parts_lo != 0) return false;
    }
    if (static_cast<int>(kHextets) - static_cast<int>(parts_hi + parts_lo) < 1) return false;
  } else {
    if (parts.size() != kHextets) return false;
    if (parts.front().empty() || parts.back().empty()) return false;
    parts_hi = parts.size();
    parts_lo = 0;
  }
  auto valid_hextet = [](std::string_view h) {
    if (h.empty() || h.size() > 4) return false;
    for (char c : h) {
      if (!IsHexDigit(c)) return false;
    }
    return true;
  };
  for (size_t i = 0; i < parts_hi; ++i) {
    if (!valid_hextet(parts[i])) return false;
  }
  for (size_t i = parts.size() - parts_lo; i < parts.size(); ++i) {
    if (!valid_hextet(parts[i])) return false;
  }
  return true;
}

// urllib.parse._check_bracketed_host.
Status CheckBracketedHost(std::string_view hostname) {
  if (!hostname.empty() && hostname[0] == 'v') {
    // re.match(r"\Av[a-fA-F0-9]+\..+\Z")
    size_t i = 1;
    while (i < hostname.size() && IsHexDigit(hostname[i])) ++i;
    if (i == 1 || i >= hostname.size() || hostname[i] != '.' || i + 1 >= hostname.size() ||
        hostname.substr(i + 1).find('\n') != std::string_view::npos) {
      return absl::InvalidArgumentError("invalid IPvFuture address in brackets");
    }
    return absl::OkStatus();
  }
  if (IsPythonIPv4(hostname)) {
    return absl::InvalidArgumentError("an IPv4 address cannot be in brackets");
  }
  if (!IsPythonIPv6(hostname)) {
    return absl::InvalidArgumentError(
        "invalid IPv6 URL: the host after the last '@' is not an IP address (Python's urlsplit "
        "checks it whenever the URL contains brackets)");
  }
  return absl::OkStatus();
}

// urllib.parse._check_bracketed_netloc (Debian 12's backport of the CVE-2024-11168 fix). It
// looks at the whole netloc, so with several hosts only the text after the last '@' is
// checked, and it must then be a bracketed IPv6 host or an IP address.
Status CheckBracketedNetloc(std::string_view netloc) {
  const size_t at = netloc.rfind('@');
  const std::string_view host_and_port =
      at == std::string_view::npos ? netloc : netloc.substr(at + 1);
  const size_t open = host_and_port.find('[');
  std::string_view hostname;
  if (open != std::string_view::npos) {
    if (open != 0) {
      return absl::InvalidArgumentError(
          "invalid IPv6 URL: text before '[' (Python's urlsplit rejects a bracketed host "
          "that is not the first entry, unless credentials precede it)");
    }
    const std::string_view bracketed = host_and_port.substr(open + 1);
    const size_t close = bracketed.find(']');
    hostname = bracketed.substr(0, close);
    if (close != std::string_view::npos) {
      const std::string_view port = bracketed.substr(close + 1);
      if (!port.empty() && port[0] != ':') {
        return absl::InvalidArgumentError("invalid IPv6 URL: text between ']' and ':'");
      }
    }
  } else {
    hostname = host_and_port.substr(0, host_and_port.find(':'));
  }
  return CheckBracketedHost(hostname);
}

// The pieces of urllib.parse.urlsplit(), before any validation.
struct SplitUrl {
  std::string scheme;  // lower-cased, empty when none
  std::string netloc;
  std::string path;
  std::string query;
  bool has_netloc = false;
};

SplitUrl UrlSplit(std::string_view input) {
  // url.lstrip(_WHATWG_C0_CONTROL_OR_SPACE), then remove '\t', '\r', '\n' everywhere.
  size_t first = 0;
  while (first < input.size() && static_cast<unsigned char>(input[first]) <= 0x20) ++first;
  std::string url;
  for (char c : input.substr(first)) {
    if (c != '\t' && c != '\r' && c != '\n') url.push_back(c);
  }
  SplitUrl out;
  std::string_view rest = url;
  const size_t colon = rest.find(':');
  if (colon != std::string_view::npos && colon > 0 && IsAsciiAlpha(rest[0])) {
    bool all_scheme_chars = true;
    for (char c : rest.substr(0, colon)) all_scheme_chars = all_scheme_chars && IsSchemeChar(c);
    if (all_scheme_chars) {
      for (char c : rest.substr(0, colon)) out.scheme.push_back(AsciiLower(c));
      rest.remove_prefix(colon + 1);
    }
  }
  if (rest.substr(0, 2) == "//") {
    const size_t end = rest.find_first_of("/?#", 2);
    out.netloc = std::string(rest.substr(2, end == std::string_view::npos ? end : end - 2));
    out.has_netloc = true;
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end);
  }
  const size_t hash = rest.find('#');
  if (hash != std::string_view::npos) rest = rest.substr(0, hash);
  const size_t question = rest.find('?');
  if (question != std::string_view::npos) {
    out.query = std::string(rest.substr(question + 1));
    rest = rest.substr(0, question);
  }
  out.path = std::string(rest);
  return out;
}

// urllib.parse.urlparse() strips ";params" from the last path segment for these schemes only.
bool SchemeUsesParams(std::string_view scheme) {
  static constexpr std::array<std::string_view, 15> kUsesParams = {
      "",     "ftp",   "hdl", "prospero", "http", "imap", "https", "shttp",
      "rtsp", "rtspu", "sip", "sips",     "mms",  "sftp", "tel"};
  for (std::string_view s : kUsesParams) {
    if (s == scheme) return true;
  }
  return false;
}

std::string_view StripParams(std::string_view path) {
  const size_t slash = path.rfind('/');
  const size_t semicolon = path.find(';', slash == std::string_view::npos ? 0 : slash);
  return semicolon == std::string_view::npos ? path : path.substr(0, semicolon);
}

std::string HostLabel(size_t index) { return "host #" + std::to_string(index + 1); }

}  // namespace

StatusOr<TransportUrl> ParseTransportUrl(std::string_view url) {
  if (url.empty()) {
    return absl::InvalidArgumentError("empty transport URL");
  }
  const SplitUrl split = UrlSplit(url);
  if (split.has_netloc) {
    const bool has_open = split.netloc.find('[') != std::string::npos;
    const bool has_close = split.netloc.find(']') != std::string::npos;
    if (has_open != has_close) {
      return absl::InvalidArgumentError("invalid IPv6 URL: unbalanced '[' or ']'");
    }
    if (has_open) NOVA_DT_RETURN_IF_ERROR(CheckBracketedNetloc(split.netloc));
  }
  if (split.scheme.empty()) {
    return absl::InvalidArgumentError("no scheme specified (expected e.g. 'rabbit://host:5672/')");
  }

  TransportUrl out;
  out.scheme = split.scheme;
  out.query = ParseQuery(split.query);
  const std::string_view path =
      SchemeUsesParams(split.scheme) ? StripParams(split.path) : std::string_view(split.path);
  if (!path.empty() && path[0] == '/') {
    out.has_virtual_host = true;
    out.virtual_host = Unquote(path.substr(1));
  }

  size_t index = 0;
  for (std::string_view item : Split(split.netloc, ',')) {
    if (item.empty()) continue;
    TransportHost host;
    std::string_view hostname = item;
    const size_t at = item.rfind('@');
    if (at != std::string_view::npos) {
      std::string_view userinfo = item.substr(0, at);
      hostname = item.substr(at + 1);
      const size_t colon = userinfo.find(':');
      if (colon != std::string_view::npos) {
        host.password = Unquote(userinfo.substr(colon + 1));
        userinfo = userinfo.substr(0, colon);
      }
      host.username = Unquote(userinfo);
    }
    std::optional<std::string_view> port;
    if (!hostname.empty() && hostname[0] == '[') {
      const size_t end = hostname.find(']');
      if (end == std::string_view::npos) {
        return absl::InvalidArgumentError(HostLabel(index) + ": invalid IPv6 URL, no ']'");
      }
      // oslo takes whatever follows the first ':' after ']' as the port.
      const std::string_view port_text = hostname.substr(end);
      const size_t colon = port_text.find(':');
      if (colon != std::string_view::npos) port = port_text.substr(colon + 1);
      hostname = hostname.substr(1, end - 1);
    } else if (const size_t colon = hostname.find(':'); colon != std::string_view::npos) {
      port = hostname.substr(colon + 1);
      hostname = hostname.substr(0, colon);
    }
    if (port && !port->empty()) {
      const std::optional<int64_t> value = PythonInt(*port);
      if (!value) {
        return absl::InvalidArgumentError(HostLabel(index) + ": the port is not an integer");
      }
      if (*value < 0 || *value > 65535) {
        return absl::InvalidArgumentError(HostLabel(index) + ": the port is not in 0..65535");
      }
      host.port = static_cast<uint16_t>(*value);
    }
    host.hostname = std::string(hostname);
    out.hosts.push_back(std::move(host));
    ++index;
  }
  return out;
}

std::vector<TransportHost> EffectiveRabbitHosts(const TransportUrl& url) {
  // impl_rabbit.Connection.__init__ / _transform_transport_url.
  if (url.hosts.empty()) {
    return {TransportHost{.hostname = "localhost",
                          .port = kRabbitDefaultPort,
                          .username = "guest",
                          .password = "guest"}};
  }
  std::vector<TransportHost> hosts = url.hosts;
  for (TransportHost& host : hosts) {
    if (host.port == 0) host.port = kRabbitDefaultPort;
  }
  return hosts;
}

std::string RedactedTransportUrl(std::string_view url) {
  static constexpr std::string_view kHidden = "***";
  const size_t last_at = url.rfind('@');
  if (last_at == std::string_view::npos) return std::string(url);  // no credentials at all

  // The exact case: a plain "scheme://netloc..." URL that oslo can parse, with every '@'
  // inside the netloc. Each host's password (after the first ':' of its userinfo) is hidden.
  const bool plain = std::none_of(url.begin(), url.end(),
                                  [](char c) { return static_cast<unsigned char>(c) <= 0x20; });
  const SplitUrl split = UrlSplit(url);
  const size_t netloc_begin = split.scheme.size() + 3;
  if (plain && split.has_netloc && !split.scheme.empty() &&
      url.substr(split.scheme.size(), 3) == "://" && ParseTransportUrl(url).ok()) {
    const size_t netloc_end = netloc_begin + split.netloc.size();
    if (last_at < netloc_end) {
      std::string out(url.substr(0, netloc_begin));
      bool first = true;
      for (std::string_view item : Split(split.netloc, ',')) {
        if (!first) out.push_back(',');
        first = false;
        const size_t at = item.rfind('@');
        const size_t colon = item.find(':');
        if (at != std::string_view::npos && colon != std::string_view::npos && colon < at) {
          out.append(item.substr(0, colon + 1)).append(kHidden).append(item.substr(at));
        } else {
          out.append(item);
        }
      }
      out.append(url.substr(netloc_end));
      return out;
    }
  }
  // Anything else (a password with an unencoded '/', '?', '#' or ',', or a URL oslo rejects):
  // hide everything between "scheme://" and the last '@'.
  const size_t scheme_end = url.find("://");
  const size_t hide_from =
      scheme_end != std::string_view::npos && scheme_end < last_at ? scheme_end + 3 : 0;
  return std::string(url.substr(0, hide_from)) + std::string(kHidden) +
         std::string(url.substr(last_at));
}

}  // namespace novadt::config
