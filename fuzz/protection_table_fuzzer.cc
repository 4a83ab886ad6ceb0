// The protection table file (agent/core/protection_table.h), which the agent reads at every
// start. Each input is decoded twice: as it is (any bytes on disk), and resealed (its trailer
// line replaced by the right one) so that mutations of the entries reach the entry parser
// instead of stopping at the checksum. A table that decodes must encode back to the same map.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "agent/core/protection_table.h"
#include "fuzz/fuzz_check.h"

namespace {

using novadt::core::ProtectionMap;
using novadt::core::ProtectionTable;

void CheckRoundTrip(const ProtectionMap& map) {
  const auto again = ProtectionTable::Decode(ProtectionTable::Encode(map));
  FUZZ_CHECK(again.ok(), "Encode() of a decoded table does not decode: %s",
             again.status().ToString().c_str());
  FUZZ_CHECK(again->size() == map.size(), "round trip changed the entry count");
  for (const auto& [uuid, e] : map) {
    const auto it = again->find(uuid);
    FUZZ_CHECK(it != again->end() && it->second.backup_host == e.backup_host &&
                   it->second.incarnation == e.incarnation,
               "round trip changed entry '%s'", uuid.c_str());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto t = ProtectionTable::Decode(text); t.ok()) CheckRoundTrip(*t);

  // Resealed: drop a last line that looks like a trailer, count the entry lines, seal.
  std::string body(text);
  if (!body.empty() && body.back() != '\n') body.push_back('\n');
  const size_t last = body.rfind('\n', body.size() >= 2 ? body.size() - 2 : 0);
  const size_t last_start = last == std::string::npos ? 0 : last + 1;
  if (body.compare(last_start, 4, "end ") == 0) body.resize(last_start);
  size_t lines = 0;
  for (char c : body) lines += c == '\n';
  const auto t = ProtectionTable::Decode(body + ProtectionTable::Trailer(body, lines ? lines - 1 : 0));
  if (t.ok()) CheckRoundTrip(*t);
  return 0;
}
