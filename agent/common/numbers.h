// Number parsing for bytes that come from outside the process (files the agent reads back,
// messages from the bus or a peer, command lines): std::from_chars underneath, so nothing
// throws, nothing is read past the text, no locale applies and an overflow is an error, not a
// wrapped or clamped value. Use these instead of std::stoi/stoull/stod, atoi, strtoul or sscanf.
// Pure functions; thread-safe.
#pragma once

#include <charconv>
#include <cmath>
#include <optional>
#include <string_view>
#include <system_error>
#include <type_traits>

namespace novadt {

// The value of `text` when all of it is one integer of type T written in `base` (2..36):
// digits only, plus a leading '-' for a signed T. No '+', no spaces, no "0x" prefix. nullopt
// when the text is empty, holds anything else, or the value does not fit in T.
template <typename T>
std::optional<T> ParseInteger(std::string_view text, int base = 10) {
  static_assert(std::is_integral_v<T> && !std::is_same_v<T, bool>);
  if (text.empty()) return std::nullopt;
  T value{};
  const char* const end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value, base);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  return value;
}

// The value of `text` when all of it is one finite decimal number ("2", "-0.5", "1e3"), as
// std::from_chars reads it (no '+', no spaces, no hexadecimal). nullopt otherwise, also for
// "inf", "nan" and values beyond double's range.
inline std::optional<double> ParseFiniteDouble(std::string_view text) {
  if (text.empty()) return std::nullopt;
  double value = 0;
  const char* const end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value, std::chars_format::general);
  if (ec != std::errc() || ptr != end || !std::isfinite(value)) return std::nullopt;
  return value;
}

}  // namespace novadt
