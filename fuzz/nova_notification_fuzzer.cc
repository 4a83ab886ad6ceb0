// Nova's versioned notifications as the agent's consumer takes them off its queue
// (agent/bus/notification_consumer.cc): the envelope, the notification, and for an instance
// event the flavor's dt:* extra specs and the reaction the agent would take.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <variant>

#include "agent/bus/nova_events.h"
#include "agent/bus/oslo_wire.h"
#include "fuzz/fuzz_check.h"

using namespace novadt::bus;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  const auto message = DecodeOsloBody(body);
  if (!message.ok()) return 0;
  const auto event = ParseNovaNotification(*message);
  if (!event.ok()) return 0;
  if (const auto* ev = std::get_if<InstanceEvent>(&*event)) {
    FUZZ_CHECK(!ev->uuid.empty() && !ev->action.empty(), "instance event without uuid or action");
    (void)InstanceReactionName(ReactionTo(*ev));
    if (const auto specs = ParseDtSpecs(ev->extra_specs); specs.ok()) {
      FUZZ_CHECK(!specs->epoch_ms || (*specs->epoch_ms >= 10 && *specs->epoch_ms <= 10000),
                 "dt:epoch_ms %d out of bounds", *specs->epoch_ms);
      FUZZ_CHECK(!specs->max_failover_ms ||
                     (*specs->max_failover_ms >= 100 && *specs->max_failover_ms <= 600000),
                 "dt:max_failover_ms %d out of bounds", *specs->max_failover_ms);
    }
  } else if (const auto* sv = std::get_if<ServiceEvent>(&*event)) {
    FUZZ_CHECK(!sv->host.empty(), "service event without host");
  }
  return 0;
}
