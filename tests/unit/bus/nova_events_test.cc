// Tests of Nova notification parsing, the dt:* extra specs and the behaviour table
// (agent/bus/nova_events.h). The notifications are the ones Nova 26.2.2's own code emitted
// through oslo.messaging (samples/make_samples.py); the malformed ones are those real samples
// with one field changed.
#include "agent/bus/nova_events.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "tests/unit/bus/wire_samples.h"

namespace novadt::bus {
namespace {

using ::novadt::bus::testing::LoadSample;
using ::novadt::bus::testing::SampleBody;
using ::testing::HasSubstr;
using ::testing::Not;
using R = InstanceReaction;

// The sample decoded by DecodeOsloBody, as the consumer will see it.
Json Decoded(const std::string& name) {
  StatusOr<Json> decoded = DecodeOsloBody(SampleBody(name));
  EXPECT_TRUE(decoded.ok()) << name << ": " << decoded.status();
  return decoded.ok() ? *decoded : Json();
}

InstanceEvent ParseInstance(const Json& message) {
  StatusOr<NovaEvent> ev = ParseNovaNotification(message);
  EXPECT_TRUE(ev.ok()) << ev.status();
  if (!ev.ok()) return {};
  EXPECT_TRUE(std::holds_alternative<InstanceEvent>(*ev));
  return std::holds_alternative<InstanceEvent>(*ev) ? std::get<InstanceEvent>(*ev)
                                                    : InstanceEvent{};
}

// --- Instance events from the real samples ----------------------------------------------------

TEST(ParseNovaNotificationTest, InstanceCreateEnd) {
  const Json msg = Decoded("nova_instance_create_end");
  const Json& data = msg["payload"]["nova_object.data"];
  ASSERT_EQ(msg["payload"]["nova_object.name"], "InstanceCreatePayload");
  const InstanceEvent ev = ParseInstance(msg);
  EXPECT_EQ(ev.message_id, msg["message_id"]);
  EXPECT_EQ(ev.event_type, "instance.create.end");
  EXPECT_EQ(ev.action, "create");
  EXPECT_EQ(ev.phase, "end");
  EXPECT_EQ(ev.priority, "INFO");
  EXPECT_EQ(ev.publisher_id, "nova-compute:compute1");
  EXPECT_EQ(ev.uuid, data["uuid"]);
  EXPECT_EQ(ev.host, "compute1");
  EXPECT_EQ(ev.node, "compute1");
  EXPECT_EQ(ev.availability_zone, "az1");
  EXPECT_EQ(ev.state, "active");
  EXPECT_EQ(ev.power_state, "running");
  ASSERT_TRUE(data["task_state"].is_null());
  EXPECT_EQ(ev.task_state, "");
  const std::map<std::string, std::string> specs = {{"dt:enabled", "true"},
                                                    {"dt:epoch_ms", "50"},
                                                    {"dt:peer_az", "az2"},
                                                    {"hw:watchdog_action", "disabled"}};
  EXPECT_EQ(ev.extra_specs, specs);
  EXPECT_EQ(ReactionTo(ev), R::kRecord);

  StatusOr<DtSpecs> dt = ParseDtSpecs(ev.extra_specs);
  ASSERT_TRUE(dt.ok()) << dt.status();
  EXPECT_TRUE(dt->enabled);
  EXPECT_EQ(dt->epoch_ms, 50);
  EXPECT_EQ(dt->peer_az, "az2");
  EXPECT_FALSE(dt->max_failover_ms.has_value());
}

TEST(ParseNovaNotificationTest, InstanceDeleteStartAndEnd) {
  const InstanceEvent start = ParseInstance(Decoded("nova_instance_delete_start"));
  EXPECT_EQ(start.action, "delete");
  EXPECT_EQ(start.phase, "start");
  EXPECT_TRUE(start.extra_specs.empty());  // a flavor without extra specs: {}
  EXPECT_EQ(ReactionTo(start), R::kUnprotect);
  StatusOr<DtSpecs> dt = ParseDtSpecs(start.extra_specs);
  ASSERT_TRUE(dt.ok());
  EXPECT_FALSE(dt->enabled);

  const InstanceEvent end = ParseInstance(Decoded("nova_instance_delete_end"));
  EXPECT_EQ(end.uuid, start.uuid);
  EXPECT_EQ(end.phase, "end");
  EXPECT_EQ(end.state, "deleted");
  EXPECT_EQ(end.power_state, "pending");
  EXPECT_EQ(ReactionTo(end), R::kForget);
}

TEST(ParseNovaNotificationTest, InstancePowerOffStart) {
  const InstanceEvent ev = ParseInstance(Decoded("nova_instance_power_off_start"));
  EXPECT_EQ(ev.action, "power_off");
  EXPECT_EQ(ev.phase, "start");
  EXPECT_EQ(ReactionTo(ev), R::kSuspend);
}

TEST(ParseNovaNotificationTest, LiveMigrationPostDestEndHasTheNewHost) {
  const InstanceEvent ev = ParseInstance(Decoded("nova_instance_live_migration_post_dest_end"));
  EXPECT_EQ(ev.event_type, "instance.live_migration_post_dest.end");
  EXPECT_EQ(ev.action, "live_migration_post_dest");
  EXPECT_EQ(ev.phase, "end");
  EXPECT_EQ(ev.host, "compute2");
  EXPECT_EQ(ev.publisher_id, "nova-compute:compute2");
  EXPECT_EQ(ReactionTo(ev), R::kResume);
}

TEST(ParseNovaNotificationTest, RebootErrorIsAnErrorPriority) {
  const InstanceEvent ev = ParseInstance(Decoded("nova_instance_reboot_error"));
  EXPECT_EQ(ev.action, "reboot");
  EXPECT_EQ(ev.phase, "error");
  EXPECT_EQ(ev.priority, "ERROR");
  EXPECT_EQ(ReactionTo(ev), R::kResume);
}

TEST(ParseNovaNotificationTest, EvacuateHasNoPhaseAndComesFromTheApi) {
  const InstanceEvent ev = ParseInstance(Decoded("nova_instance_evacuate"));
  EXPECT_EQ(ev.event_type, "instance.evacuate");
  EXPECT_EQ(ev.action, "evacuate");
  EXPECT_EQ(ev.phase, "");
  EXPECT_EQ(ev.publisher_id, "nova-api:ctl1");
  EXPECT_EQ(ev.host, "compute2");  // the dead host the server is evacuated from
  EXPECT_EQ(ReactionTo(ev), R::kUnprotect);
}

TEST(ParseNovaNotificationTest, ServiceUpdate) {
  const Json msg = Decoded("nova_service_update");
  StatusOr<NovaEvent> parsed = ParseNovaNotification(msg);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_TRUE(std::holds_alternative<ServiceEvent>(*parsed));
  const ServiceEvent& ev = std::get<ServiceEvent>(*parsed);
  EXPECT_EQ(ev.message_id, msg["message_id"]);
  EXPECT_EQ(ev.event_type, "service.update");
  EXPECT_EQ(ev.host, "compute2");
  EXPECT_EQ(ev.binary, "nova-compute");
  EXPECT_TRUE(ev.disabled);
  EXPECT_EQ(ev.disabled_reason, "dt sample: host down");
  EXPECT_TRUE(ev.forced_down);
  EXPECT_EQ(ev.availability_zone, "az2");
}

TEST(ParseNovaNotificationTest, OtherEvents) {
  const Json msg = Decoded("nova_flavor_create");
  StatusOr<NovaEvent> parsed = ParseNovaNotification(msg);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_TRUE(std::holds_alternative<OtherEvent>(*parsed));
  EXPECT_EQ(std::get<OtherEvent>(*parsed).event_type, "flavor.create");
  EXPECT_EQ(std::get<OtherEvent>(*parsed).message_id, msg["message_id"]);

  // oslo's own notifier, and any payload at all.
  parsed = ParseNovaNotification(Decoded("oslo_notify_v1"));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(std::get<OtherEvent>(*parsed).event_type, "dt.pair.protected");
  for (const Json& payload : {Json(42), Json(nullptr), Json::array(), Json("x")}) {
    Json m = msg;
    m["payload"] = payload;
    m["event_type"] = "service.delete";
    parsed = ParseNovaNotification(m);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_TRUE(std::holds_alternative<OtherEvent>(*parsed));
  }
}

// --- Event type splitting ---------------------------------------------------------------------

TEST(ParseNovaNotificationTest, PhaseIsTheLastComponentOnlyWhenStartEndOrError) {
  const Json base = Decoded("nova_instance_power_off_start");
  struct Split {
    const char* event_type;
    const char* action;
    const char* phase;
  };
  for (const Split& s : std::vector<Split>{
           {"instance.create.start", "create", "start"},
           {"instance.create.error", "create", "error"},
           {"instance.evacuate", "evacuate", ""},
           {"instance.update", "update", ""},
           {"instance.rebuild_scheduled", "rebuild_scheduled", ""},
           {"instance.live_migration_rollback_dest.end", "live_migration_rollback_dest", "end"},
           {"instance.interface_attach.error", "interface_attach", "error"},
           {"instance.some.thing", "some.thing", ""},
       }) {
    Json m = base;
    m["event_type"] = s.event_type;
    const InstanceEvent ev = ParseInstance(m);
    EXPECT_EQ(ev.event_type, s.event_type);
    EXPECT_EQ(ev.action, s.action) << s.event_type;
    EXPECT_EQ(ev.phase, s.phase) << s.event_type;
  }
}

// --- Tolerated variations of the real payload -------------------------------------------------

Json CreateEnd() { return Decoded("nova_instance_create_end"); }
Json& Data(Json& msg) { return msg["payload"]["nova_object.data"]; }
Json& FlavorData(Json& msg) { return Data(msg)["flavor"]["nova_object.data"]; }

TEST(ParseNovaNotificationTest, NullsAndAbsentOptionalFieldsReadAsEmpty) {
  const std::vector<std::function<void(Json&)>> variations = {
      [](Json& m) { FlavorData(m)["extra_specs"] = nullptr; },
      [](Json& m) { FlavorData(m).erase("extra_specs"); },
      [](Json& m) { Data(m)["flavor"] = nullptr; },
      [](Json& m) { Data(m).erase("flavor"); },
  };
  for (const auto& vary : variations) {
    Json msg = CreateEnd();
    vary(msg);
    EXPECT_TRUE(ParseInstance(msg).extra_specs.empty());
  }
  Json msg = CreateEnd();
  Data(msg)["host"] = nullptr;
  Data(msg)["node"] = nullptr;
  Data(msg)["availability_zone"] = nullptr;
  Data(msg).erase("state");
  Data(msg)["task_state"] = "spawning";
  msg.erase("publisher_id");
  const InstanceEvent ev = ParseInstance(msg);
  EXPECT_EQ(ev.host, "");
  EXPECT_EQ(ev.node, "");
  EXPECT_EQ(ev.availability_zone, "");
  EXPECT_EQ(ev.state, "");
  EXPECT_EQ(ev.task_state, "spawning");
  EXPECT_EQ(ev.publisher_id, "");
}

// --- Malformed notifications ------------------------------------------------------------------

constexpr char kSecret[] = "s3cr3t-t0ken";

struct Bad {
  const char* sample;
  const char* what;
  std::function<void(Json&)> mutate;
  const char* reason;
};

void PrintTo(const Bad& bad, std::ostream* os) { *os << bad.sample << " " << bad.what; }

class MalformedTest : public ::testing::TestWithParam<Bad> {};

TEST_P(MalformedTest, RefusedNamingTheFieldAndTheType) {
  const Bad& c = GetParam();
  Json msg = Decoded(c.sample);
  msg["_context_auth_token"] = kSecret;
  c.mutate(msg);
  StatusOr<NovaEvent> ev = ParseNovaNotification(msg);
  ASSERT_FALSE(ev.ok());
  EXPECT_EQ(ev.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ev.status().message(), HasSubstr(c.reason));
  EXPECT_THAT(ev.status().message(), Not(HasSubstr(kSecret)));
}

constexpr char kCreate[] = "nova_instance_create_end";
constexpr char kService[] = "nova_service_update";
constexpr char kFlavor[] = "nova_flavor_create";

INSTANTIATE_TEST_SUITE_P(
    RealSamplesWithOneFieldBroken, MalformedTest,
    ::testing::ValuesIn(std::vector<Bad>{
        {kCreate, "NotAnObject", [](Json& m) { m = Json::array({kSecret}); },
         "notification is not a JSON object"},
        {kCreate, "NoEventType", [](Json& m) { m.erase("event_type"); }, "event_type is missing"},
        {kCreate, "EventTypeNumber", [](Json& m) { m["event_type"] = 1; },
         "event_type must be a string"},
        {kCreate, "EventTypeNull", [](Json& m) { m["event_type"] = nullptr; },
         "event_type must be a string"},
        {kCreate, "MessageIdNumber", [](Json& m) { m["message_id"] = 1; },
         "message_id must be a string or null"},
        {kCreate, "PublisherIdNumber", [](Json& m) { m["publisher_id"] = 1; },
         "publisher_id must be a string or null"},
        {kCreate, "PriorityNumber", [](Json& m) { m["priority"] = 1; },
         "priority must be a string or null"},
        {kFlavor, "OtherWithoutPayload", [](Json& m) { m.erase("payload"); }, "payload is missing"},
        {kCreate, "NoPayload", [](Json& m) { m.erase("payload"); }, "payload is missing"},
        {kCreate, "EmptyAction", [](Json& m) { m["event_type"] = "instance."; }, "empty action"},
        {kCreate, "EmptyActionWithPhase", [](Json& m) { m["event_type"] = "instance.end"; },
         "empty action"},
        {kCreate, "PayloadString", [](Json& m) { m["payload"] = kSecret; },
         "payload must be an object"},
        {kCreate, "NoData", [](Json& m) { m["payload"].erase("nova_object.data"); },
         "payload.nova_object.data is missing"},
        {kCreate, "DataArray", [](Json& m) { Data(m) = Json::array(); },
         "payload.nova_object.data must be an object"},
        {kCreate, "NoUuid", [](Json& m) { Data(m).erase("uuid"); },
         "payload.nova_object.data.uuid is missing"},
        {kCreate, "UuidNull", [](Json& m) { Data(m)["uuid"] = nullptr; },
         "payload.nova_object.data.uuid must be a string"},
        {kCreate, "UuidNumber", [](Json& m) { Data(m)["uuid"] = 42; },
         "payload.nova_object.data.uuid must be a string"},
        {kCreate, "UuidEmpty", [](Json& m) { Data(m)["uuid"] = ""; },
         "payload.nova_object.data.uuid must not be empty"},
        {kCreate, "NoHost", [](Json& m) { Data(m).erase("host"); },
         "payload.nova_object.data.host is missing"},
        {kCreate, "HostNumber", [](Json& m) { Data(m)["host"] = 1; },
         "payload.nova_object.data.host must be a string or null"},
        {kCreate, "NodeObject", [](Json& m) { Data(m)["node"] = Json::object(); },
         "payload.nova_object.data.node must be a string or null"},
        {kCreate, "AzBool", [](Json& m) { Data(m)["availability_zone"] = true; },
         "payload.nova_object.data.availability_zone must be a string or null"},
        {kCreate, "StateNumber", [](Json& m) { Data(m)["state"] = 1; },
         "payload.nova_object.data.state must be a string or null"},
        {kCreate, "PowerStateNumber", [](Json& m) { Data(m)["power_state"] = 1; },
         "payload.nova_object.data.power_state must be a string or null"},
        {kCreate, "TaskStateArray", [](Json& m) { Data(m)["task_state"] = Json::array(); },
         "payload.nova_object.data.task_state must be a string or null"},
        {kCreate, "FlavorString", [](Json& m) { Data(m)["flavor"] = kSecret; },
         "payload.nova_object.data.flavor must be an object or null"},
        {kCreate, "FlavorNoData", [](Json& m) { Data(m)["flavor"].erase("nova_object.data"); },
         "payload.nova_object.data.flavor.nova_object.data is missing"},
        {kCreate, "FlavorDataNull", [](Json& m) { FlavorData(m) = nullptr; },
         "payload.nova_object.data.flavor.nova_object.data must be an object"},
        {kCreate, "ExtraSpecsArray",
         [](Json& m) { FlavorData(m)["extra_specs"] = Json::array({kSecret}); },
         "payload.nova_object.data.flavor.nova_object.data.extra_specs must be an object or null"},
        {kCreate, "ExtraSpecValueNumber",
         [](Json& m) { FlavorData(m)["extra_specs"][kSecret] = 50; },
         "payload.nova_object.data.flavor.nova_object.data.extra_specs values must be strings"},
        {kService, "ServicePayloadNull", [](Json& m) { m["payload"] = nullptr; },
         "payload must be an object"},
        {kService, "ServiceNoData", [](Json& m) { m["payload"].erase("nova_object.data"); },
         "payload.nova_object.data is missing"},
        {kService, "ServiceNoHost", [](Json& m) { Data(m).erase("host"); },
         "payload.nova_object.data.host is missing"},
        {kService, "ServiceHostNull", [](Json& m) { Data(m)["host"] = nullptr; },
         "payload.nova_object.data.host must be a string"},
        {kService, "ServiceHostEmpty", [](Json& m) { Data(m)["host"] = ""; },
         "payload.nova_object.data.host must not be empty"},
        {kService, "ServiceBinaryNumber", [](Json& m) { Data(m)["binary"] = 1; },
         "payload.nova_object.data.binary must be a string or null"},
        {kService, "ServiceDisabledString", [](Json& m) { Data(m)["disabled"] = "true"; },
         "payload.nova_object.data.disabled must be a boolean"},
        {kService, "ServiceNoDisabled", [](Json& m) { Data(m).erase("disabled"); },
         "payload.nova_object.data.disabled is missing"},
        {kService, "ServiceForcedDownNull", [](Json& m) { Data(m)["forced_down"] = nullptr; },
         "payload.nova_object.data.forced_down must be a boolean"},
        {kService, "ServiceNoForcedDown", [](Json& m) { Data(m).erase("forced_down"); },
         "payload.nova_object.data.forced_down is missing"},
        {kService, "ServiceReasonNumber", [](Json& m) { Data(m)["disabled_reason"] = 1; },
         "payload.nova_object.data.disabled_reason must be a string or null"},
        {kService, "ServiceAzNumber", [](Json& m) { Data(m)["availability_zone"] = 1; },
         "payload.nova_object.data.availability_zone must be a string or null"},
    }),
    [](const auto& info) { return std::string(info.param.what); });

TEST(ParseNovaNotificationTest, ServiceNullableFieldsReadAsEmpty) {
  Json msg = Decoded("nova_service_update");
  Data(msg)["disabled_reason"] = nullptr;
  Data(msg)["availability_zone"] = nullptr;
  Data(msg)["binary"] = nullptr;
  Data(msg)["disabled"] = false;
  Data(msg)["forced_down"] = false;
  StatusOr<NovaEvent> parsed = ParseNovaNotification(msg);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const ServiceEvent& ev = std::get<ServiceEvent>(*parsed);
  EXPECT_EQ(ev.disabled_reason, "");
  EXPECT_EQ(ev.availability_zone, "");
  EXPECT_EQ(ev.binary, "");
  EXPECT_FALSE(ev.disabled);
  EXPECT_FALSE(ev.forced_down);
}

// --- dt:* extra specs -------------------------------------------------------------------------

TEST(ParseDtSpecsTest, AbsentKeysAreDefaults) {
  StatusOr<DtSpecs> dt = ParseDtSpecs({{"hw:watchdog_action", "disabled"}, {"dt:future", "x"}});
  ASSERT_TRUE(dt.ok()) << dt.status();
  EXPECT_FALSE(dt->enabled);
  EXPECT_FALSE(dt->epoch_ms.has_value());
  EXPECT_EQ(dt->peer_az, "");
  EXPECT_FALSE(dt->max_failover_ms.has_value());
}

TEST(ParseDtSpecsTest, AllValues) {
  StatusOr<DtSpecs> dt = ParseDtSpecs({{"dt:enabled", "Yes"},
                                       {"dt:epoch_ms", "10000"},
                                       {"dt:peer_az", "az-2"},
                                       {"dt:max_failover_ms", "600000"}});
  ASSERT_TRUE(dt.ok()) << dt.status();
  EXPECT_TRUE(dt->enabled);
  EXPECT_EQ(dt->epoch_ms, 10000);
  EXPECT_EQ(dt->peer_az, "az-2");
  EXPECT_EQ(dt->max_failover_ms, 600000);
}

TEST(ParseDtSpecsTest, OsloStrictBoolStrings) {
  // oslo_utils.strutils.TRUE_STRINGS / FALSE_STRINGS, matched after strip().lower().
  for (const char* s : {"1", "t", "true", "on", "y", "yes", "TRUE", "True", "On", "Y", "YES",
                        " true", "yes\n", "\ton "}) {
    StatusOr<DtSpecs> dt = ParseDtSpecs({{"dt:enabled", s}});
    ASSERT_TRUE(dt.ok()) << "'" << s << "': " << dt.status();
    EXPECT_TRUE(dt->enabled) << s;
  }
  for (const char* s : {"0", "f", "false", "off", "n", "no", "FALSE", "Off", "N", " no "}) {
    StatusOr<DtSpecs> dt = ParseDtSpecs({{"dt:enabled", s}});
    ASSERT_TRUE(dt.ok()) << "'" << s << "': " << dt.status();
    EXPECT_FALSE(dt->enabled) << s;
  }
  for (const char* s : {"", " ", "maybe", "2", "tru", "yess", "enabled", "nope", "ja", "1.0",
                        "t r u e", "s3cr3t-t0ken"}) {
    StatusOr<DtSpecs> dt = ParseDtSpecs({{"dt:enabled", s}});
    ASSERT_FALSE(dt.ok()) << "'" << s << "'";
    EXPECT_EQ(dt.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(dt.status().message(), HasSubstr("dt:enabled must be a boolean string"));
    EXPECT_THAT(dt.status().message(), Not(HasSubstr(kSecret)));
  }
}

TEST(ParseDtSpecsTest, IntegerBounds) {
  struct Case {
    const char* key;
    const char* value;
    std::optional<int> want;  // nullopt: refused
  };
  for (const Case& c : std::vector<Case>{
           {"dt:epoch_ms", "10", 10},
           {"dt:epoch_ms", "010", 10},
           {"dt:epoch_ms", "10000", 10000},
           {"dt:epoch_ms", "9", std::nullopt},
           {"dt:epoch_ms", "10001", std::nullopt},
           {"dt:epoch_ms", "0", std::nullopt},
           {"dt:epoch_ms", "+50", std::nullopt},
           {"dt:epoch_ms", "-50", std::nullopt},
           {"dt:epoch_ms", " 50", std::nullopt},
           {"dt:epoch_ms", "50 ", std::nullopt},
           {"dt:epoch_ms", "0x32", std::nullopt},
           {"dt:epoch_ms", "5e1", std::nullopt},
           {"dt:epoch_ms", "50.0", std::nullopt},
           {"dt:epoch_ms", "5_0", std::nullopt},
           {"dt:epoch_ms", "", std::nullopt},
           {"dt:epoch_ms", "99999999999999999999", std::nullopt},
           {"dt:epoch_ms", "s3cr3t-t0ken", std::nullopt},
           {"dt:max_failover_ms", "100", 100},
           {"dt:max_failover_ms", "600000", 600000},
           {"dt:max_failover_ms", "99", std::nullopt},
           {"dt:max_failover_ms", "600001", std::nullopt},
           {"dt:max_failover_ms", "1e5", std::nullopt},
       }) {
    SCOPED_TRACE(std::string(c.key) + "='" + c.value + "'");
    StatusOr<DtSpecs> dt = ParseDtSpecs({{c.key, c.value}, {"dt:enabled", "true"}});
    if (c.want.has_value()) {
      ASSERT_TRUE(dt.ok()) << dt.status();
      const std::optional<int>& got =
          std::string(c.key) == "dt:epoch_ms" ? dt->epoch_ms : dt->max_failover_ms;
      EXPECT_EQ(got, c.want);
    } else {
      ASSERT_FALSE(dt.ok());
      EXPECT_EQ(dt.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(dt.status().message(), HasSubstr(std::string(c.key) + " must be a decimal "));
      EXPECT_THAT(dt.status().message(), Not(HasSubstr(kSecret)));
    }
  }
}

// --- The behaviour table ----------------------------------------------------------------------

struct Row {
  const char* action;
  const char* phase;
  InstanceReaction want;
};

// The specification of docs/bus.md, row by row, written independently of the table in
// nova_events.cc.
const std::vector<Row>& TableRows() {
  static const auto* rows = new std::vector<Row>{
      {"create", "end", R::kRecord},
      {"delete", "start", R::kUnprotect},
      {"delete", "end", R::kForget},
      {"soft_delete", "start", R::kUnprotect},
      {"soft_delete", "end", R::kUnprotect},
      {"restore", "end", R::kResume},
      {"evacuate", "", R::kUnprotect},
      {"power_off", "start", R::kSuspend},
      {"pause", "start", R::kSuspend},
      {"suspend", "start", R::kSuspend},
      {"shelve", "start", R::kSuspend},
      {"shelve_offload", "start", R::kSuspend},
      {"live_migration_pre", "start", R::kSuspend},
      {"resize_prep", "start", R::kSuspend},
      {"rebuild", "start", R::kSuspend},
      {"rescue", "start", R::kSuspend},
      {"reboot", "start", R::kSuspend},
      {"power_on", "end", R::kResume},
      {"unpause", "end", R::kResume},
      {"resume", "end", R::kResume},
      {"unshelve", "end", R::kResume},
      {"live_migration_post_dest", "end", R::kResume},
      {"live_migration_rollback", "end", R::kResume},
      {"live_migration_abort", "end", R::kResume},
      {"resize_confirm", "end", R::kResume},
      {"resize_revert", "end", R::kResume},
      {"rebuild", "end", R::kResume},
      {"unrescue", "end", R::kResume},
      {"reboot", "end", R::kResume},
      // Error phases of every suspending action, and Nova's name for a failed resize_prep.
      {"power_off", "error", R::kResume},
      {"pause", "error", R::kResume},
      {"suspend", "error", R::kResume},
      {"shelve", "error", R::kResume},
      {"shelve_offload", "error", R::kResume},
      {"live_migration_pre", "error", R::kResume},
      {"resize_prep", "error", R::kResume},
      {"resize", "error", R::kResume},
      {"rebuild", "error", R::kResume},
      {"rescue", "error", R::kResume},
      {"reboot", "error", R::kResume},
      // Everything else is ignored; a sample of the neighbours of the rows above.
      {"create", "start", R::kIgnore},
      {"create", "error", R::kIgnore},
      {"delete", "error", R::kIgnore},
      {"shutdown", "start", R::kIgnore},
      {"shutdown", "end", R::kIgnore},
      {"soft_delete", "error", R::kIgnore},
      {"restore", "start", R::kIgnore},
      {"evacuate", "start", R::kIgnore},
      {"evacuate", "end", R::kIgnore},
      {"power_off", "end", R::kIgnore},
      {"power_on", "start", R::kIgnore},
      {"power_on", "error", R::kIgnore},
      {"pause", "end", R::kIgnore},
      {"suspend", "end", R::kIgnore},
      {"resume", "start", R::kIgnore},
      {"shelve", "end", R::kIgnore},
      {"shelve_offload", "end", R::kIgnore},
      {"unshelve", "start", R::kIgnore},
      {"rescue", "end", R::kIgnore},
      {"unrescue", "start", R::kIgnore},
      {"rebuild_scheduled", "", R::kIgnore},
      {"live_migration_pre", "end", R::kIgnore},
      {"live_migration_post", "start", R::kIgnore},
      {"live_migration_post", "end", R::kIgnore},
      {"live_migration_post_dest", "start", R::kIgnore},
      {"live_migration_rollback", "start", R::kIgnore},
      {"live_migration_rollback_dest", "end", R::kIgnore},
      {"live_migration_force_complete", "end", R::kIgnore},
      {"resize_prep", "end", R::kIgnore},
      {"resize", "start", R::kIgnore},
      {"resize", "end", R::kIgnore},
      {"resize_finish", "end", R::kIgnore},
      {"resize_confirm", "start", R::kIgnore},
      {"resize_revert", "start", R::kIgnore},
      {"update", "", R::kIgnore},
      {"exists", "", R::kIgnore},
      {"volume_attach", "end", R::kIgnore},
      {"interface_attach", "error", R::kIgnore},
      {"snapshot", "start", R::kIgnore},
      {"trigger_crash_dump", "start", R::kIgnore},
  };
  return *rows;
}

void PrintTo(const Row& row, std::ostream* os) {
  *os << "instance." << row.action << (*row.phase ? "." : "") << row.phase << " -> "
      << InstanceReactionName(row.want);
}

class ReactionTableTest : public ::testing::TestWithParam<Row> {};

TEST_P(ReactionTableTest, Row) {
  const Row& row = GetParam();
  InstanceEvent ev;
  ev.action = row.action;
  ev.phase = row.phase;
  ev.event_type = std::string("instance.") + row.action + (*row.phase ? "." : "") + row.phase;
  EXPECT_EQ(ReactionTo(ev), row.want)
      << ev.event_type << " -> " << InstanceReactionName(ReactionTo(ev)) << ", want "
      << InstanceReactionName(row.want);
}

INSTANTIATE_TEST_SUITE_P(Spec, ReactionTableTest, ::testing::ValuesIn(TableRows()),
                         [](const auto& info) {
                           std::string name = std::string(info.param.action) + "_" +
                                              (*info.param.phase ? info.param.phase : "nophase");
                           return name;
                         });

TEST(ReactionTest, EveryNovaActionAndPhaseNotInTheSpecIsIgnored) {
  // sorted(nova.objects.fields.NotificationAction.ALL), Nova 26.2.2.
  const std::vector<std::string> actions = {"add_host",
                                            "add_member",
                                            "build_instances",
                                            "cache_images",
                                            "connect",
                                            "create",
                                            "delete",
                                            "evacuate",
                                            "exception",
                                            "exists",
                                            "import",
                                            "interface_attach",
                                            "interface_detach",
                                            "live_migration_abort",
                                            "live_migration_force_complete",
                                            "live_migration_post",
                                            "live_migration_post_dest",
                                            "live_migration_pre",
                                            "live_migration_rollback",
                                            "live_migration_rollback_dest",
                                            "lock",
                                            "migrate_server",
                                            "pause",
                                            "power_off",
                                            "power_on",
                                            "reboot",
                                            "rebuild",
                                            "rebuild_scheduled",
                                            "rebuild_server",
                                            "remove_host",
                                            "rescue",
                                            "resize",
                                            "resize_confirm",
                                            "resize_finish",
                                            "resize_prep",
                                            "resize_revert",
                                            "restore",
                                            "resume",
                                            "select_destinations",
                                            "shelve",
                                            "shelve_offload",
                                            "shutdown",
                                            "snapshot",
                                            "soft_delete",
                                            "suspend",
                                            "trigger_crash_dump",
                                            "unlock",
                                            "unpause",
                                            "unrescue",
                                            "unshelve",
                                            "update",
                                            "update_metadata",
                                            "update_prop",
                                            "usage",
                                            "volume_attach",
                                            "volume_detach",
                                            "volume_swap"};
  int not_ignored = 0;
  for (const std::string& action : actions) {
    for (const char* phase : {"start", "end", "error", ""}) {
      InstanceEvent ev;
      ev.action = action;
      ev.phase = phase;
      InstanceReaction want = R::kIgnore;
      for (const Row& row : TableRows()) {
        if (action == row.action && std::string(phase) == row.phase) want = row.want;
      }
      EXPECT_EQ(ReactionTo(ev), want) << action << "." << phase;
      not_ignored += want != R::kIgnore;
    }
  }
  EXPECT_EQ(not_ignored, 40);  // every non-ignore row of the spec is a real Nova action
}

TEST(ReactionTest, DependsOnlyOnActionAndPhase) {
  InstanceEvent ev = ParseInstance(Decoded("nova_instance_power_off_start"));
  ev.host = "";
  ev.state = "error";
  ev.extra_specs.clear();
  EXPECT_EQ(ReactionTo(ev), R::kSuspend);
}

TEST(ReactionTest, Names) {
  EXPECT_STREQ(InstanceReactionName(R::kIgnore), "ignore");
  EXPECT_STREQ(InstanceReactionName(R::kRecord), "record");
  EXPECT_STREQ(InstanceReactionName(R::kUnprotect), "unprotect");
  EXPECT_STREQ(InstanceReactionName(R::kSuspend), "suspend");
  EXPECT_STREQ(InstanceReactionName(R::kResume), "resume");
  EXPECT_STREQ(InstanceReactionName(R::kForget), "forget");
}

}  // namespace
}  // namespace novadt::bus
