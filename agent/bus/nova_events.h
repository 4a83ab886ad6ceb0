// Nova's versioned notifications, read into plain structs, and what the agent does about each
// (the behaviour table of docs/bus.md). Pure: no broker, no I/O; thread-safe.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <variant>

#include "agent/bus/oslo_wire.h"
#include "agent/common/status.h"

namespace novadt::bus {

// The dt:* flavor extra specs (nova-integration/nova_dt/extra_specs.py validates them at flavor
// creation; here they are read defensively: a bad value is an error, never a guess). Other keys,
// dt:* ones included, are ignored.
struct DtSpecs {
  bool enabled = false;                // dt:enabled: oslo's strict bool strings (strutils.
                                       // bool_from_string: 1/t/true/on/y/yes, 0/f/false/off/n/no,
                                       // any case, surrounding whitespace ignored)
  std::optional<int> epoch_ms;         // dt:epoch_ms, 10..10000
  std::string peer_az;                 // dt:peer_az, empty when absent
  std::optional<int> max_failover_ms;  // dt:max_failover_ms, 100..600000
};
// InvalidArgument naming the key for a value that does not parse or is out of bounds. Integers
// are plain decimal digits (no sign, space, '_' or prefix, unlike Python's int()).
StatusOr<DtSpecs> ParseDtSpecs(const std::map<std::string, std::string>& extra_specs);

// instance.<action>[.<phase>] from an Instance*Payload.
struct InstanceEvent {
  std::string message_id;
  std::string event_type;    // as sent, e.g. "instance.live_migration_post_dest.end"
  std::string action;        // "live_migration_post_dest"
  std::string phase;         // "start" | "end" | "error" | "" (e.g. instance.evacuate)
  std::string priority;      // "INFO" | "ERROR" | ...
  std::string publisher_id;  // "nova-compute:compute1"
  std::string uuid;
  std::string host;  // may be empty (e.g. before scheduling)
  std::string node;
  std::string availability_zone;
  std::string state;  // vm_state, e.g. "active"
  std::string power_state;
  std::string task_state;                          // empty when null
  std::map<std::string, std::string> extra_specs;  // flavor's; empty when absent or null
};

// service.update (ServiceStatusPayload): a compute service disabled or forced down.
struct ServiceEvent {
  std::string message_id;
  std::string event_type;
  std::string host;
  std::string binary;  // "nova-compute"
  bool disabled = false;
  std::string disabled_reason;
  bool forced_down = false;
  std::string availability_zone;
};

// Any other event_type (scheduler.*, aggregate.*, ...): valid, and of no interest.
struct OtherEvent {
  std::string message_id;
  std::string event_type;
};

using NovaEvent = std::variant<InstanceEvent, ServiceEvent, OtherEvent>;

// Reads one decoded notification (DecodeOsloBody's result). InvalidArgument, naming the field
// and the expected JSON type, when "event_type" or "payload" is missing or mistyped, or an
// instance.* / service.update payload lacks nova_object.data or its uuid/host (uuid must be a
// non-empty string, host a string or null; service.update's host non-empty and disabled/
// forced_down booleans), or carries a field read here with the wrong JSON type. Fields not read
// here are not checked. The phase is the last component only when it is start/end/error.
StatusOr<NovaEvent> ParseNovaNotification(const Json& message);

// What the agent does about an instance event of a DT server (docs/bus.md has the table).
enum class InstanceReaction {
  kIgnore,     // nothing to do (start phases of most actions, unrelated actions)
  kRecord,     // instance.create.end: remember the server; auto-protect if configured
  kUnprotect,  // the server is going away from this host: stop protecting, free the replica
  kSuspend,    // protection cannot go on through this action (power off, pause, suspend,
               // shelve, live migration, resize, rebuild): unprotect, remember to resume
  kResume,     // the action finished with the server running here: protect again
  kForget,     // instance.delete.end: drop every record of the server
};
const char* InstanceReactionName(InstanceReaction r);

// The table itself: the reaction to `event` for a DT server, from its action and phase only (the
// caller checks that the server is one of its own: event.host is this host). Error phases of the
// suspending actions resume protection (a failed action leaves the server where it was), see
// docs/bus.md. Thread-safe (a constant table).
InstanceReaction ReactionTo(const InstanceEvent& event);

}  // namespace novadt::bus
