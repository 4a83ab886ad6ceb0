#include "agent/bus/nova_events.h"

#include <initializer_list>
#include <string_view>
#include <utility>

#include "agent/common/numbers.h"

namespace novadt::bus {
namespace {

// Debian's abseil has its own string_view, which std::string_view does not convert to: errors
// are built as std::string.
std::string Cat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view p : parts) out.append(p);
  return out;
}

Status Invalid(const std::string& what) { return absl::InvalidArgumentError(what); }

// How a field may appear. Nova's payload fields are mostly nullable; a null reads as empty.
enum class Need { kRequired, kRequiredNullable, kOptionalNullable };

// `obj[key]` (nullptr when absent). REQUIRES: obj is an object.
const Json* Find(const Json& obj, std::string_view key) {
  const auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

Status MissingError(std::string_view path) { return Invalid(Cat({path, " is missing"})); }

Status TypeError(std::string_view path, std::string_view expected, Need need) {
  return Invalid(Cat({path, " must be ", expected, need == Need::kRequired ? "" : " or null"}));
}

// Reads the string `obj[key]` (named `path` in errors) into `out`; absent or null read as "".
Status ReadString(const Json& obj, std::string_view key, std::string_view path, Need need,
                  std::string* out) {
  const Json* v = Find(obj, key);
  if (v == nullptr) return need == Need::kOptionalNullable ? Status() : MissingError(path);
  if (v->is_string()) {
    *out = v->get<std::string>();
    return Status();
  }
  if (v->is_null() && need != Need::kRequired) {
    out->clear();
    return Status();
  }
  return TypeError(path, "a string", need);
}

Status ReadBool(const Json& obj, std::string_view key, std::string_view path, bool* out) {
  const Json* v = Find(obj, key);
  if (v == nullptr) return MissingError(path);
  if (!v->is_boolean()) return TypeError(path, "a boolean", Need::kRequired);
  *out = v->get<bool>();
  return Status();
}

// payload["nova_object.data"], which must be an object.
StatusOr<const Json*> VersionedObjectData(const Json& payload) {
  if (!payload.is_object()) return Invalid("payload must be an object");
  const Json* data = Find(payload, "nova_object.data");
  if (data == nullptr) return MissingError("payload.nova_object.data");
  if (!data->is_object()) {
    return TypeError("payload.nova_object.data", "an object", Need::kRequired);
  }
  return data;
}

// data.flavor["nova_object.data"].extra_specs: absent or null flavor/extra_specs read as empty.
Status ReadExtraSpecs(const Json& data, std::map<std::string, std::string>* out) {
  static constexpr std::string_view kFlavor = "payload.nova_object.data.flavor";
  static constexpr std::string_view kFlavorData =
      "payload.nova_object.data.flavor.nova_object.data";
  static constexpr std::string_view kSpecs =
      "payload.nova_object.data.flavor.nova_object.data.extra_specs";
  const Json* flavor = Find(data, "flavor");
  if (flavor == nullptr || flavor->is_null()) return Status();
  if (!flavor->is_object()) return TypeError(kFlavor, "an object", Need::kOptionalNullable);
  const Json* flavor_data = Find(*flavor, "nova_object.data");
  if (flavor_data == nullptr) return MissingError(kFlavorData);
  if (!flavor_data->is_object()) return TypeError(kFlavorData, "an object", Need::kRequired);
  const Json* specs = Find(*flavor_data, "extra_specs");
  if (specs == nullptr || specs->is_null()) return Status();
  if (!specs->is_object()) return TypeError(kSpecs, "an object", Need::kOptionalNullable);
  for (const auto& [key, value] : specs->items()) {
    if (!value.is_string()) return Invalid(Cat({kSpecs, " values must be strings"}));
    out->emplace(key, value.get<std::string>());
  }
  return Status();
}

constexpr std::string_view kInstancePrefix = "instance.";

bool IsPhase(std::string_view s) { return s == "start" || s == "end" || s == "error"; }

StatusOr<InstanceEvent> ParseInstanceEvent(const Json& payload, std::string event_type) {
  InstanceEvent ev;
  std::string_view rest = std::string_view(event_type).substr(kInstancePrefix.size());
  const size_t dot = rest.rfind('.');
  const std::string_view last = dot == std::string_view::npos ? rest : rest.substr(dot + 1);
  if (IsPhase(last)) {  // "instance.end" is a phase without an action
    ev.phase = std::string(last);
    rest = dot == std::string_view::npos ? std::string_view() : rest.substr(0, dot);
  }
  if (rest.empty()) return Invalid("event_type instance.<action> has an empty action");
  ev.action = std::string(rest);
  ev.event_type = std::move(event_type);

  StatusOr<const Json*> data_or = VersionedObjectData(payload);
  if (!data_or.ok()) return data_or.status();
  const Json& data = **data_or;
  struct Field {
    std::string_view key, path;
    Need need;
    std::string InstanceEvent::*member;
  };
  static constexpr Field kFields[] = {
      {"uuid", "payload.nova_object.data.uuid", Need::kRequired, &InstanceEvent::uuid},
      {"host", "payload.nova_object.data.host", Need::kRequiredNullable, &InstanceEvent::host},
      {"node", "payload.nova_object.data.node", Need::kOptionalNullable, &InstanceEvent::node},
      {"availability_zone", "payload.nova_object.data.availability_zone", Need::kOptionalNullable,
       &InstanceEvent::availability_zone},
      {"state", "payload.nova_object.data.state", Need::kOptionalNullable, &InstanceEvent::state},
      {"power_state", "payload.nova_object.data.power_state", Need::kOptionalNullable,
       &InstanceEvent::power_state},
      {"task_state", "payload.nova_object.data.task_state", Need::kOptionalNullable,
       &InstanceEvent::task_state},
  };
  for (const Field& f : kFields) {
    NOVA_DT_RETURN_IF_ERROR(ReadString(data, f.key, f.path, f.need, &(ev.*f.member)));
  }
  if (ev.uuid.empty()) return Invalid("payload.nova_object.data.uuid must not be empty");
  NOVA_DT_RETURN_IF_ERROR(ReadExtraSpecs(data, &ev.extra_specs));
  return ev;
}

StatusOr<ServiceEvent> ParseServiceEvent(const Json& payload, std::string event_type) {
  ServiceEvent ev;
  ev.event_type = std::move(event_type);
  StatusOr<const Json*> data_or = VersionedObjectData(payload);
  if (!data_or.ok()) return data_or.status();
  const Json& data = **data_or;
  NOVA_DT_RETURN_IF_ERROR(
      ReadString(data, "host", "payload.nova_object.data.host", Need::kRequired, &ev.host));
  if (ev.host.empty()) return Invalid("payload.nova_object.data.host must not be empty");
  NOVA_DT_RETURN_IF_ERROR(ReadString(data, "binary", "payload.nova_object.data.binary",
                                     Need::kOptionalNullable, &ev.binary));
  NOVA_DT_RETURN_IF_ERROR(
      ReadBool(data, "disabled", "payload.nova_object.data.disabled", &ev.disabled));
  NOVA_DT_RETURN_IF_ERROR(ReadString(data, "disabled_reason",
                                     "payload.nova_object.data.disabled_reason",
                                     Need::kOptionalNullable, &ev.disabled_reason));
  NOVA_DT_RETURN_IF_ERROR(
      ReadBool(data, "forced_down", "payload.nova_object.data.forced_down", &ev.forced_down));
  NOVA_DT_RETURN_IF_ERROR(ReadString(data, "availability_zone",
                                     "payload.nova_object.data.availability_zone",
                                     Need::kOptionalNullable, &ev.availability_zone));
  return ev;
}

// oslo_utils.strutils.bool_from_string(value, strict=True): surrounding whitespace stripped,
// case-insensitive.
std::optional<bool> OsloBool(std::string_view s) {
  constexpr std::string_view kSpace = " \t\n\v\f\r";
  const size_t first = s.find_first_not_of(kSpace);
  if (first == std::string_view::npos) return std::nullopt;
  s = s.substr(first, s.find_last_not_of(kSpace) - first + 1);
  if (s.size() > 5) return std::nullopt;
  std::string lower(s);
  for (char& c : lower) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  for (std::string_view t : {"1", "t", "true", "on", "y", "yes"}) {
    if (lower == t) return true;
  }
  for (std::string_view f : {"0", "f", "false", "off", "n", "no"}) {
    if (lower == f) return false;
  }
  return std::nullopt;
}

// A plain decimal integer (digits only: no sign, space or prefix) in [min, max].
std::optional<int> BoundedInt(std::string_view s, int min, int max) {
  const std::optional<uint32_t> v = s.size() <= 9 ? ParseInteger<uint32_t>(s) : std::nullopt;
  if (!v || *v < static_cast<uint32_t>(min) || *v > static_cast<uint32_t>(max)) {
    return std::nullopt;
  }
  return static_cast<int>(*v);
}

Status ReadBoundedInt(const std::map<std::string, std::string>& specs, const std::string& key,
                      int min, int max, std::optional<int>* out) {
  const auto it = specs.find(key);
  if (it == specs.end()) return Status();
  *out = BoundedInt(it->second, min, max);
  if (!out->has_value()) {
    return Invalid(Cat({"flavor extra spec ", key, " must be a decimal integer from ",
                        std::to_string(min), " to ", std::to_string(max)}));
  }
  return Status();
}

// The behaviour table (docs/bus.md explains every row). Anything not listed: kIgnore.
struct Row {
  std::string_view action;
  std::string_view phase;
  InstanceReaction reaction;
};
using R = InstanceReaction;
constexpr Row kReactions[] = {
    // Life cycle.
    {"create", "end", R::kRecord},
    {"delete", "start", R::kUnprotect},
    {"delete", "end", R::kForget},
    {"soft_delete", "start", R::kUnprotect},
    {"soft_delete", "end", R::kUnprotect},
    {"restore", "end", R::kResume},
    {"evacuate", "", R::kUnprotect},
    // Actions that change or replace the guest: suspend before, resume after or on failure.
    {"power_off", "start", R::kSuspend},
    {"power_off", "error", R::kResume},
    {"power_on", "end", R::kResume},
    {"pause", "start", R::kSuspend},
    {"pause", "error", R::kResume},
    {"unpause", "end", R::kResume},
    {"suspend", "start", R::kSuspend},
    {"suspend", "error", R::kResume},
    {"resume", "end", R::kResume},
    {"shelve", "start", R::kSuspend},
    {"shelve", "error", R::kResume},
    {"shelve_offload", "start", R::kSuspend},
    {"shelve_offload", "error", R::kResume},
    {"unshelve", "end", R::kResume},
    {"reboot", "start", R::kSuspend},
    {"reboot", "error", R::kResume},
    {"reboot", "end", R::kResume},
    {"rescue", "start", R::kSuspend},
    {"rescue", "error", R::kResume},
    {"unrescue", "end", R::kResume},
    {"rebuild", "start", R::kSuspend},
    {"rebuild", "error", R::kResume},
    {"rebuild", "end", R::kResume},
    {"live_migration_pre", "start", R::kSuspend},
    {"live_migration_pre", "error", R::kResume},
    {"live_migration_post_dest", "end", R::kResume},
    {"live_migration_rollback", "end", R::kResume},
    {"live_migration_abort", "end", R::kResume},
    {"resize_prep", "start", R::kSuspend},
    {"resize_prep", "error", R::kResume},
    {"resize", "error", R::kResume},
    {"resize_confirm", "end", R::kResume},
    {"resize_revert", "end", R::kResume},
};

}  // namespace

StatusOr<DtSpecs> ParseDtSpecs(const std::map<std::string, std::string>& extra_specs) {
  DtSpecs specs;
  if (const auto it = extra_specs.find("dt:enabled"); it != extra_specs.end()) {
    const std::optional<bool> enabled = OsloBool(it->second);
    if (!enabled.has_value()) {
      return Invalid(
          "flavor extra spec dt:enabled must be a boolean string "
          "(1/t/true/on/y/yes or 0/f/false/off/n/no)");
    }
    specs.enabled = *enabled;
  }
  NOVA_DT_RETURN_IF_ERROR(ReadBoundedInt(extra_specs, "dt:epoch_ms", 10, 10000, &specs.epoch_ms));
  NOVA_DT_RETURN_IF_ERROR(
      ReadBoundedInt(extra_specs, "dt:max_failover_ms", 100, 600000, &specs.max_failover_ms));
  if (const auto it = extra_specs.find("dt:peer_az"); it != extra_specs.end()) {
    specs.peer_az = it->second;
  }
  return specs;
}

StatusOr<NovaEvent> ParseNovaNotification(const Json& message) {
  if (!message.is_object()) return Invalid("notification is not a JSON object");
  std::string event_type, message_id, publisher_id, priority;
  NOVA_DT_RETURN_IF_ERROR(
      ReadString(message, "event_type", "event_type", Need::kRequired, &event_type));
  NOVA_DT_RETURN_IF_ERROR(
      ReadString(message, "message_id", "message_id", Need::kOptionalNullable, &message_id));
  const Json* payload = Find(message, "payload");
  if (payload == nullptr) return MissingError("payload");

  if (event_type.rfind(kInstancePrefix, 0) == 0) {
    NOVA_DT_RETURN_IF_ERROR(ReadString(message, "publisher_id", "publisher_id",
                                       Need::kOptionalNullable, &publisher_id));
    NOVA_DT_RETURN_IF_ERROR(
        ReadString(message, "priority", "priority", Need::kOptionalNullable, &priority));
    StatusOr<InstanceEvent> ev = ParseInstanceEvent(*payload, std::move(event_type));
    if (!ev.ok()) return ev.status();
    ev->message_id = std::move(message_id);
    ev->publisher_id = std::move(publisher_id);
    ev->priority = std::move(priority);
    return NovaEvent(*std::move(ev));
  }
  if (event_type == "service.update") {
    StatusOr<ServiceEvent> ev = ParseServiceEvent(*payload, std::move(event_type));
    if (!ev.ok()) return ev.status();
    ev->message_id = std::move(message_id);
    return NovaEvent(*std::move(ev));
  }
  return NovaEvent(OtherEvent{std::move(message_id), std::move(event_type)});
}

const char* InstanceReactionName(InstanceReaction r) {
  switch (r) {
    case InstanceReaction::kIgnore:
      return "ignore";
    case InstanceReaction::kRecord:
      return "record";
    case InstanceReaction::kUnprotect:
      return "unprotect";
    case InstanceReaction::kSuspend:
      return "suspend";
    case InstanceReaction::kResume:
      return "resume";
    case InstanceReaction::kForget:
      return "forget";
  }
  return "unknown";
}

InstanceReaction ReactionTo(const InstanceEvent& event) {
  for (const Row& row : kReactions) {
    if (row.action == event.action && row.phase == event.phase) return row.reaction;
  }
  return InstanceReaction::kIgnore;
}

}  // namespace novadt::bus
