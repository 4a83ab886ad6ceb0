#include "agent/common/identifiers.h"

namespace novadt {
namespace {

bool IsAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool IsNameChar(char c) { return IsAlnum(c) || c == '.' || c == '_' || c == '-'; }

bool IsNameOf(std::string_view s, size_t max_len) {
  if (s.empty() || s.size() > max_len) return false;
  for (char c : s) {
    if (!IsNameChar(c)) return false;
  }
  return true;
}

}  // namespace

std::string Printable(std::string_view text, size_t max) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (out.size() >= max) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      out += "\\x";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  return out;
}

Status ValidateInstanceUuid(std::string_view uuid) {
  bool ok = uuid.size() == 36;
  for (size_t i = 0; ok && i < uuid.size(); ++i) {
    const char c = uuid[i];
    ok = (i == 8 || i == 13 || i == 18 || i == 23) ? c == '-'
                                                   : (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  }
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError("instance UUID '" + Printable(uuid) +
                                    "' is not in canonical form (lowercase 8-4-4-4-12 hex)");
}

Status ValidateHostName(std::string_view host) {
  if (IsNameOf(host, 255) && IsAlnum(host[0])) return absl::OkStatus();
  return absl::InvalidArgumentError("host name '" + Printable(host) +
                                    "' is not 1-255 characters of [A-Za-z0-9._-] starting with a "
                                    "letter or digit");
}

Status ValidateDiskName(std::string_view disk) {
  if (IsNameOf(disk, 64) && disk[0] != '.') return absl::OkStatus();
  return absl::InvalidArgumentError("disk name '" + Printable(disk) +
                                    "' is not 1-64 characters of [A-Za-z0-9._-] not starting "
                                    "with '.'");
}

}  // namespace novadt
