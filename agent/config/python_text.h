// Python's reading of text, for the few places where nova-dt must parse exactly as oslo
// (Python) does: str.strip() whitespace on UTF-8 text and int().
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace novadt::config {

// Python's str.isspace() for one code point.
bool IsPySpace(char32_t c);
// str.lstrip() / str.rstrip() / str.strip() without arguments, on UTF-8 text (an invalid byte
// counts as itself, never as whitespace).
std::string_view PyLStrip(std::string_view s);
std::string_view PyRStrip(std::string_view s);
std::string_view PyStrip(std::string_view s);
// int(text) for decimal text: surrounding whitespace, an optional sign, ASCII digits with single
// '_' between digits. nullopt when int() would raise or the value does not fit in int64.
std::optional<int64_t> PythonInt(std::string_view text);
bool IsAsciiDigit(char c);

}  // namespace novadt::config
