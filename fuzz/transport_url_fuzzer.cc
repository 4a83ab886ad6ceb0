// oslo.messaging transport URLs (agent/config/transport_url.h) as the agent reads them from its
// configuration: parse, the host list the rabbit driver would dial, and the redacted form that
// logs and status show. A URL that parses with a password must never be shown with it.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "agent/config/transport_url.h"
#include "fuzz/fuzz_check.h"

using novadt::config::EffectiveRabbitHosts;
using novadt::config::ParseTransportUrl;
using novadt::config::RedactedTransportUrl;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view url(reinterpret_cast<const char*>(data), size);
  const std::string redacted = RedactedTransportUrl(url);
  const auto parsed = ParseTransportUrl(url);
  if (!parsed.ok()) return 0;
  const auto hosts = EffectiveRabbitHosts(*parsed);
  FUZZ_CHECK(!hosts.empty(), "no host to dial");
  for (const auto& h : hosts) FUZZ_CHECK(h.port != 0, "host '%s' without a port", h.hostname.c_str());
  for (const auto& h : parsed->hosts) {
    if (h.password.empty()) continue;
    FUZZ_CHECK(redacted.find("***") != std::string::npos, "a password shown in '%s'",
               redacted.c_str());
  }
  return 0;
}
