#include "agent/config/python_text.h"

#include <utility>

namespace novadt::config {
namespace {

// Decodes the code point starting at s[i]; an invalid byte decodes as itself with length 1.
std::pair<char32_t, size_t> DecodeAt(std::string_view s, size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  size_t len = b0 < 0x80           ? 1
               : (b0 >> 5) == 0x6  ? 2
               : (b0 >> 4) == 0xE  ? 3
               : (b0 >> 3) == 0x1E ? 4
                                   : 1;
  if (i + len > s.size()) return {b0, 1};
  char32_t cp = len == 1 ? b0 : len == 2 ? (b0 & 0x1F) : len == 3 ? (b0 & 0x0F) : (b0 & 0x07);
  for (size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return {b0, 1};
    cp = (cp << 6) | (b & 0x3F);
  }
  return {cp, len};
}

}  // namespace

// str.isspace() of CPython.
bool IsPySpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

std::string_view PyLStrip(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto [cp, len] = DecodeAt(s, i);
    if (!IsPySpace(cp)) break;
    i += len;
  }
  return s.substr(i);
}

std::string_view PyRStrip(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && end - start < 4 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) {
      --start;
    }
    auto [cp, len] = DecodeAt(s, start);
    if (start + len != end) {  // not one well-formed code point: look at the last byte alone
      start = end - 1;
      cp = static_cast<unsigned char>(s[start]);
    }
    if (!IsPySpace(cp)) break;
    end = start;
  }
  return s.substr(0, end);
}

std::string_view PyStrip(std::string_view s) { return PyLStrip(PyRStrip(s)); }

bool IsAsciiDigit(char c) { return c >= '0' && c <= '9'; }

std::optional<int64_t> PythonInt(std::string_view text) {
  text = PyStrip(text);
  bool negative = false;
  if (!text.empty() && (text[0] == '+' || text[0] == '-')) {
    negative = text[0] == '-';
    text.remove_prefix(1);
  }
  if (text.empty() || !IsAsciiDigit(text.front()) || !IsAsciiDigit(text.back())) {
    return std::nullopt;
  }
  int64_t value = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '_') {
      if (!IsAsciiDigit(text[i + 1])) return std::nullopt;
      continue;
    }
    if (!IsAsciiDigit(text[i]) || value > (INT64_MAX - 9) / 10) return std::nullopt;
    value = value * 10 + (text[i] - '0');
  }
  return negative ? -value : value;
}


}  // namespace novadt::config
