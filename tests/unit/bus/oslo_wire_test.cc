// Tests of the oslo.messaging wire codecs (agent/bus/oslo_wire.h) against the samples that the
// real oslo.messaging 14.0.3 rabbit driver published (samples/make_samples.py), and against
// hand-made malformed bodies.
#include "agent/bus/oslo_wire.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/unit/bus/wire_samples.h"

namespace novadt::bus {
namespace {

using ::novadt::bus::testing::AllSampleNames;
using ::novadt::bus::testing::LoadSample;
using ::novadt::bus::testing::SampleBody;
using ::testing::HasSubstr;
using ::testing::Not;

std::set<std::string> Keys(const Json& object) {
  std::set<std::string> keys;
  for (const auto& [key, value] : object.items()) keys.insert(key);
  return keys;
}

// A body whose error message must not leak: every malformed body below carries this marker.
constexpr char kSecret[] = "s3cr3t-t0ken";

// Expects DecodeOsloBody(body) to fail with InvalidArgument whose message contains `reason` and
// none of the body's secret.
void ExpectRefused(const std::string& body, const std::string& reason,
                   size_t max_bytes = kDefaultMaxBodyBytes) {
  SCOPED_TRACE(body.size() < 200 ? body : body.substr(0, 200) + "...");
  StatusOr<Json> decoded = DecodeOsloBody(body, max_bytes);
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(decoded.status().message(), HasSubstr(reason));
  EXPECT_THAT(decoded.status().message(), Not(HasSubstr(kSecret)));
}

std::string Envelope(const std::string& version_json, const std::string& message_json) {
  return "{\"oslo.version\": " + version_json + ", \"oslo.message\": " + message_json + "}";
}

std::string Quoted(const std::string& s) { return Json(s).dump(); }

// --- DecodeOsloBody on the real samples -------------------------------------------------------

class SampleDecodeTest : public ::testing::TestWithParam<std::string> {};

TEST_P(SampleDecodeTest, EqualsOslosOwnDeserializeMsg) {
  const Json sample = LoadSample(GetParam());
  ASSERT_FALSE(sample.is_null());
  StatusOr<Json> decoded = DecodeOsloBody(sample["body"].get<std::string>());
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, sample["oslo_deserialize_msg"]);
}

INSTANTIATE_TEST_SUITE_P(AllSamples, SampleDecodeTest, ::testing::ValuesIn(AllSampleNames()),
                         [](const auto& info) { return info.param; });

TEST(DecodeOsloBodyTest, SamplesUseTheEnvelopeExceptFormat1) {
  for (const std::string& name : AllSampleNames()) {
    SCOPED_TRACE(name);
    const Json outer = Json::parse(SampleBody(name));
    EXPECT_EQ(outer.contains("oslo.version"), name != "oslo_notify_v1");
  }
}

// --- DecodeOsloBody on hand-made bodies -------------------------------------------------------

TEST(DecodeOsloBodyTest, BareObjectIsReturnedAsIs) {
  StatusOr<Json> decoded = DecodeOsloBody(R"({"method": "protect", "args": {}})");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, Json::parse(R"({"method": "protect", "args": {}})"));
}

TEST(DecodeOsloBodyTest, OnlyOneEnvelopeKeyIsNoEnvelope) {
  // deserialize_msg needs both keys; with one, the dict is a format 1.0 message.
  for (const std::string body :
       {R"({"oslo.version": "9.9", "x": 1})", R"({"oslo.message": 42, "x": 1})"}) {
    StatusOr<Json> decoded = DecodeOsloBody(body);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, Json::parse(body));
  }
}

TEST(DecodeOsloBodyTest, EnvelopeWithCompatibleVersions) {
  const std::string inner = Quoted(R"({"a": [1, {"b": null}]})");
  for (const std::string version : {"2.0", "2.0.0"}) {
    StatusOr<Json> decoded = DecodeOsloBody(Envelope(Quoted(version), inner));
    ASSERT_TRUE(decoded.ok()) << version << ": " << decoded.status();
    EXPECT_EQ(*decoded, Json::parse(R"({"a": [1, {"b": null}]})"));
  }
}

TEST(DecodeOsloBodyTest, RefusesIncompatibleEnvelopeVersions) {
  // oslo's version_is_compatible('2.0', v) is False for all of these (or raises).
  const std::string inner = Quoted(std::string(R"({"k": ")") + kSecret + "\"}");
  for (const std::string version :
       {"3.0", "1.0", "2.1", "2.0.1", "2", "", "two", "2.x", "2.0.0.0", "-2.0", "+2.0", "2.0 "}) {
    ExpectRefused(Envelope(Quoted(version), inner), "\"oslo.version\" is not compatible");
  }
}

TEST(DecodeOsloBodyTest, RefusesNonStringVersion) {
  const std::string inner = Quoted(std::string(R"({"k": ")") + kSecret + "\"}");
  for (const std::string version : {"2.0", "2", "null", "[2, 0]"}) {
    ExpectRefused(Envelope(version, inner), "\"oslo.version\" must be a string");
  }
}

TEST(DecodeOsloBodyTest, RefusesMessageThatIsNotAString) {
  for (const std::string& message : {std::string(R"({"k": ")") + kSecret + "\"}", std::string("42"),
                                     std::string("null"), std::string("[\"") + kSecret + "\"]"}) {
    ExpectRefused(Envelope(Quoted("2.0"), message), "\"oslo.message\" must be a string");
  }
}

TEST(DecodeOsloBodyTest, RefusesMessageThatIsNotJsonOrNotAnObject) {
  ExpectRefused(Envelope(Quoted("2.0"), Quoted(std::string("{\"k\": \"") + kSecret)),
                "\"oslo.message\" is not valid JSON");
  ExpectRefused(Envelope(Quoted("2.0"), Quoted(std::string("[\"") + kSecret + "\"]")),
                "\"oslo.message\" is not a JSON object");
  ExpectRefused(Envelope(Quoted("2.0"), Quoted(Quoted(kSecret))),
                "\"oslo.message\" is not a JSON object");
}

TEST(DecodeOsloBodyTest, RefusesBodyThatIsNotJson) {
  ExpectRefused(std::string("{\"k\": ") + kSecret + "}", "AMQP body is not valid JSON");
  ExpectRefused(std::string(kSecret), "AMQP body is not valid JSON");
  ExpectRefused("", "AMQP body is not valid JSON");
  ExpectRefused(std::string("{\"k\": \"") + kSecret + "\"} trailing", "not valid JSON");
  // Invalid UTF-8 inside a string.
  ExpectRefused(std::string("{\"k\": \"") + kSecret + "\xff\xfe\"}", "not valid JSON");
}

TEST(DecodeOsloBodyTest, RefusesEveryTruncationOfARealBody) {
  const std::string body = SampleBody("rpc_call");
  ASSERT_FALSE(body.empty());
  for (size_t len = 0; len < body.size(); len += 7) {
    StatusOr<Json> decoded = DecodeOsloBody(body.substr(0, len));
    ASSERT_FALSE(decoded.ok()) << len;
    EXPECT_THAT(decoded.status().message(), HasSubstr("not valid JSON")) << len;
  }
}

TEST(DecodeOsloBodyTest, RefusesBodyThatIsNotAnObject) {
  for (const std::string& body : {std::string("[\"") + kSecret + "\"]", Quoted(kSecret),
                                  std::string("42"), std::string("null"), std::string("true")}) {
    ExpectRefused(body, "AMQP body is not a JSON object");
  }
}

TEST(DecodeOsloBodyTest, RefusesBodyBiggerThanTheLimit) {
  const std::string body = SampleBody("rpc_cast");
  ASSERT_FALSE(body.empty());
  EXPECT_TRUE(DecodeOsloBody(body, body.size()).ok());
  ExpectRefused(body, "larger than the limit", body.size() - 1);
  const std::string huge =
      std::string("{\"k\": \"") + kSecret + std::string(kDefaultMaxBodyBytes, 'x') + "\"}";
  ExpectRefused(huge, "larger than the limit of 1048576 bytes");
}

TEST(DecodeOsloBodyTest, RefusesDeepNestingWithoutRecursing) {
  // 100k '[' would overflow the stack of nlohmann's recursive parser.
  ExpectRefused(std::string(100000, '['), "deeper than 64 levels");
  ExpectRefused(std::string("{\"k\": \"") + kSecret + "\", \"d\": " + std::string(100000, '{'),
                "AMQP body nests JSON arrays/objects deeper than 64 levels");
  // Inside "oslo.message" too.
  ExpectRefused(Envelope(Quoted("2.0"), Quoted("{\"d\": " + std::string(100000, '['))),
                "\"oslo.message\" nests JSON arrays/objects deeper than 64");
}

TEST(DecodeOsloBodyTest, DepthLimitIsExactlySixtyFour) {
  auto nested = [](int depth) {  // depth levels: one object holding depth-1 arrays
    return "{\"d\": " + std::string(depth - 1, '[') + std::string(depth - 1, ']') + "}";
  };
  EXPECT_TRUE(DecodeOsloBody(nested(64)).ok());
  EXPECT_FALSE(DecodeOsloBody(nested(65)).ok());
  EXPECT_TRUE(DecodeOsloBody(Envelope(Quoted("2.0"), Quoted(nested(64)))).ok());
  EXPECT_FALSE(DecodeOsloBody(Envelope(Quoted("2.0"), Quoted(nested(65)))).ok());
}

TEST(DecodeOsloBodyTest, DepthLimitHoldsForBodiesOfEverySize) {
  // The parser's buffers grow with the body; its depth limit must not change with them.
  for (const size_t padding : {size_t{0}, size_t{100} << 10, size_t{900} << 10, size_t{0}}) {
    SCOPED_TRACE(padding);
    auto nested = [&](int depth) {
      return "{\"p\": \"" + std::string(padding, 'x') +
             "\", \"d\": " + std::string(depth - 1, '[') + std::string(depth - 1, ']') + "}";
    };
    EXPECT_TRUE(DecodeOsloBody(nested(64)).ok());
    ExpectRefused(nested(65), "AMQP body nests JSON arrays/objects deeper than 64 levels");
  }
}

TEST(DecodeOsloBodyTest, BracketsInsideStringsDoNotCount) {
  const std::string brackets = "[{[{\\\"[" + std::string(200, '[') + std::string(200, '{');
  StatusOr<Json> decoded = DecodeOsloBody("{\"s\": \"" + brackets + "\"}");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ((*decoded)["s"].get<std::string>().size(), 406u);
}

// --- DecodeOsloBody reads JSON exactly as nlohmann does ----------------------------------------
//
// DecodeOsloBody parses with simdjson and converts its DOM to nlohmann's value; it lets nlohmann
// parse what simdjson refuses but nlohmann may accept (integers beyond 64 bits) and what simdjson
// cannot type as nlohmann would (the integer -0). Whatever the path, an object must come out
// exactly as nlohmann parses it (same value types too), and what nlohmann refuses must be
// refused -- in the body and in "oslo.message" alike.

// Equal values of equal JSON types (nlohmann's == treats 5u and 5 as equal).
bool SameJson(const Json& a, const Json& b) {
  if (a.type() != b.type()) return false;
  if (a.is_array()) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      if (!SameJson(a[i], b[i])) return false;
    }
    return true;
  }
  if (a.is_object()) {
    if (Keys(a) != Keys(b)) return false;
    for (const auto& [key, value] : a.items()) {
      if (!SameJson(value, b[key])) return false;
    }
    return true;
  }
  return a == b;
}

// Expects DecodeOsloBody to agree with nlohmann on `text`, both as a body without the envelope
// and, when `text` is valid UTF-8 (so that it can be quoted), as "oslo.message" in an envelope.
void ExpectReadLikeNlohmann(const std::string& text) {
  const Json reference = Json::parse(text, nullptr, false);
  const bool accepted = !reference.is_discarded() && reference.is_object();
  if (accepted) {
    ASSERT_FALSE(reference.contains("oslo.version") && reference.contains("oslo.message"));
  }
  std::vector<std::string> bodies = {text};
  try {
    bodies.push_back(Envelope(Quoted("2.0"), Quoted(text)));
  } catch (const Json::type_error&) {  // invalid UTF-8: Quoted cannot write it
  }
  for (const std::string& body : bodies) {
    StatusOr<Json> decoded = DecodeOsloBody(body);
    if (!accepted) {
      EXPECT_FALSE(decoded.ok()) << body;
      continue;
    }
    ASSERT_TRUE(decoded.ok()) << decoded.status() << ": " << body;
    EXPECT_TRUE(SameJson(*decoded, reference)) << body << "\n"
                                               << decoded->dump() << "\n"
                                               << reference.dump();
  }
}

TEST(DecodeOsloBodyTest, ReadsValuesLikeNlohmann) {
  for (const std::string value : {
           // Strings: escapes, \u escapes with and without surrogates, raw UTF-8 (valid or not).
           R"("plain")",
           R"("")",
           R"("\" \\ \/ \b \f \n \r \t")",
           R"("\u00e9\u00E9")",
           R"("\u0000")",
           R"("\ud83d\ude00")",
           R"("\uD83D\uDE00")",
           R"("\ud800")",
           R"("\udc00")",
           R"("\ud800\u0041")",
           R"("\ud800x")",
           R"("\u12")",
           R"("\u12g4")",
           R"("\x")",
           "\"caf\xc3\xa9\"",
           "\"\xc3\"",
           "\"\xed\xa0\x80\"",
           "\"\xf4\x90\x80\x80\"",
           "\"tab\there\"",
           "\"nl\nhere\"",
           R"("unterminated)",
           R"("looks like a number: -0, -0]")",
           R"("2026-01-05 -0a1b")",
           // Numbers.
           "0",
           "-0",
           "1",
           "-1",
           "42",
           "123456789012345678",
           "-123456789012345678",
           "1234567890123456789",
           "9223372036854775807",
           "9223372036854775808",
           "18446744073709551615",
           "18446744073709551616",
           "99999999999999999999999999999999",
           "-9223372036854775807",
           "-9223372036854775808",
           "-9223372036854775809",
           "-99999999999999999999999999999999",
           "1.0",
           "-0.0",
           "-0e0",
           "-0E+2",
           "0e400",
           "-1e-400",
           "1.7976931348623157e308",
           "1.7976931348623159e308",
           "2.2250738585072011e-308",
           "123456789012345678901234567890.5",
           "0.10000000000000000555111512312578270211815834045410156250001",
           "1e99999999999999999999",
           "0.1",
           "1e3",
           "1E+3",
           "1e-3",
           "2.5e-308",
           "1e308",
           "1e309",
           "-1e400",
           "4.9e-324",
           "1e-400",
           "0.30000000000000004",
           "01",
           "1.",
           ".5",
           "+1",
           "-",
           "1e",
           "1e+",
           "- 1",
           "0x10",
           "NaN",
           "Infinity",
           "-Infinity",
           // Literals and containers.
           "true",
           "false",
           "null",
           "tru",
           "nul",
           "True",
           "[]",
           "{}",
           "[1, [2, [3]]]",
           R"({"a": {"b": []}})",
           "[1,]",
           "[,1]",
           R"({"a":1,})",
           R"({"a" 1})",
           R"({1: 2})",
           R"({"a":1,"a":2})",
           " [ 1 , 2 ] ",
           "[\n\t1\r]",
           "[1 2]",
       }) {
    ExpectReadLikeNlohmann("{\"v\": " + value + "}");
    ExpectReadLikeNlohmann("{\"v\": [" + value + ", " + value + "]}");
  }
  ExpectReadLikeNlohmann("  {\"k\": 1}  ");
  ExpectReadLikeNlohmann("{\"k\": 1} x");
  ExpectReadLikeNlohmann("{\"\\u00e9\": 1, \"k\\n\": 2}");
  // -0 next to every delimiter, and compact.
  ExpectReadLikeNlohmann("{\"a\":-0,\"b\":[-0],\"c\":\t-0\n,\"d\":{\"e\":-0}}");
  ExpectReadLikeNlohmann("{\"a\": 0, \"s\": \"x: -0, y\"}");  // a -0 only inside a string
}

TEST(DecodeOsloBodyTest, ReadsEveryMutationOfARealMessageLikeNlohmann) {
  // The inner message of a real notification, with one byte replaced at a time, and with
  // numbers and escapes that take the less common paths inserted.
  std::string text = LoadSample("nova_instance_create_end")["oslo_deserialize_msg"].dump();
  ExpectReadLikeNlohmann(text);
  const std::string replacements = "\"\\{}[],:0-.eE+ \x01\x7f\x80\xc3unt";
  const std::vector<std::string> insertions = {"-0", "99999999999999999999", "1e400", "\\ud800"};
  for (size_t i = 0; i < text.size(); i += 5) {
    const char original = text[i];
    for (char r : replacements) {
      text[i] = r;
      ExpectReadLikeNlohmann(text);
    }
    text[i] = original;
    for (const std::string& insertion : insertions) {
      ExpectReadLikeNlohmann(text.substr(0, i) + insertion + text.substr(i));
    }
    if (::testing::Test::HasFailure()) return;  // one failure says enough
  }
}

TEST(DecodeOsloBodyTest, DecodesOnManyThreadsAtOnce) {
  // Each thread has its own parser; bodies of different sizes and outcomes interleave.
  const std::vector<std::string> names = AllSampleNames();
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 50; ++round) {
        for (const std::string& name : names) {
          const Json sample = LoadSample(name);
          StatusOr<Json> decoded = DecodeOsloBody(sample["body"].get<std::string>());
          if (!decoded.ok() || *decoded != sample["oslo_deserialize_msg"]) ++failures[t];
          if (DecodeOsloBody("{\"d\": " + std::string(100, '[')).ok()) ++failures[t];
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures, std::vector<int>(4, 0));
}

// --- EncodeOsloBody ---------------------------------------------------------------------------

TEST(EncodeOsloBodyTest, RoundTripsAndKeepsOslosKeyOrder) {
  const Json message = Json::parse(R"({"result": {"ok": true, "s": "\u00e9\"x"}, "ending": true})");
  const std::string body = EncodeOsloBody(message);
  EXPECT_EQ(body.rfind("{\"oslo.version\": \"2.0\", \"oslo.message\": \"", 0), 0u) << body;
  for (char c : body) ASSERT_LT(static_cast<unsigned char>(c), 0x80) << body;  // like json.dumps
  StatusOr<Json> decoded = DecodeOsloBody(body);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, message);
  const Json outer = Json::parse(body);
  EXPECT_EQ(Keys(outer), Keys(Json::parse(SampleBody("rpc_reply_result"))));
  EXPECT_TRUE(outer["oslo.message"].is_string());
}

TEST(EncodeOsloBodyTest, InvalidUtf8IsReplacedNotThrown) {
  const Json message = {{"error", std::string("bad \xff byte")}};
  std::string body;
  ASSERT_NO_THROW(body = EncodeOsloBody(message));
  StatusOr<Json> decoded = DecodeOsloBody(body);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ((*decoded)["error"], "bad \xef\xbf\xbd byte");
}

// --- ParseRpcRequest --------------------------------------------------------------------------

StatusOr<RpcRequest> ParseSampleRequest(const std::string& name) {
  StatusOr<Json> decoded = DecodeOsloBody(SampleBody(name));
  if (!decoded.ok()) return decoded.status();
  return ParseRpcRequest(*decoded);
}

TEST(ParseRpcRequestTest, RealCast) {
  const Json inner = LoadSample("rpc_cast")["oslo_deserialize_msg"];
  StatusOr<RpcRequest> req = ParseSampleRequest("rpc_cast");
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_EQ(req->method, "protect");
  EXPECT_EQ(req->args, Json::parse(R"({"instance_uuid": "u-1", "peer_host": "compute-2"})"));
  EXPECT_EQ(req->version, "1.0");
  EXPECT_EQ(req->namespace_, "");
  EXPECT_EQ(req->unique_id, inner["_unique_id"]);
  EXPECT_EQ(req->context, Json::parse(R"({"project_id": "fake-project",
      "request_id": "req-dt-sample", "is_admin": false})"));
  EXPECT_FALSE(req->is_call());
  EXPECT_FALSE(req->msg_id.has_value());
  EXPECT_FALSE(req->reply_q.has_value());
  EXPECT_FALSE(req->call_monitor_timeout.has_value());
}

TEST(ParseRpcRequestTest, RealCallWithNullTimeout) {
  const Json inner = LoadSample("rpc_call")["oslo_deserialize_msg"];
  ASSERT_TRUE(inner["_timeout"].is_null());
  StatusOr<RpcRequest> req = ParseSampleRequest("rpc_call");
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_TRUE(req->is_call());
  EXPECT_EQ(req->method, "protect");
  EXPECT_EQ(*req->msg_id, inner["_msg_id"]);
  EXPECT_EQ(*req->reply_q, inner["_reply_q"]);
  EXPECT_THAT(*req->reply_q, ::testing::StartsWith("reply_"));
  EXPECT_FALSE(req->call_monitor_timeout.has_value());
  EXPECT_EQ(req->context["request_id"], "req-dt-sample");
}

TEST(ParseRpcRequestTest, RealCallWithCallMonitorTimeout) {
  StatusOr<RpcRequest> req = ParseSampleRequest("rpc_call_monitored");
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_TRUE(req->is_call());
  EXPECT_EQ(req->method, "status");
  EXPECT_EQ(req->args, Json::object());
  ASSERT_TRUE(req->call_monitor_timeout.has_value());
  EXPECT_EQ(*req->call_monitor_timeout, 2.0);
}

Json RealCall() { return LoadSample("rpc_call")["oslo_deserialize_msg"]; }

TEST(ParseRpcRequestTest, TimeoutsOsloWouldIgnoreAreEmpty) {
  for (const Json& timeout : {Json(1), Json(1.99), Json(0), Json(-5)}) {
    Json msg = RealCall();
    msg["_timeout"] = timeout;
    StatusOr<RpcRequest> req = ParseRpcRequest(msg);
    ASSERT_TRUE(req.ok()) << req.status();
    EXPECT_FALSE(req->call_monitor_timeout.has_value()) << timeout;
  }
  Json msg = RealCall();
  msg["_timeout"] = 30.5;
  StatusOr<RpcRequest> req = ParseRpcRequest(msg);
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_EQ(req->call_monitor_timeout, 30.5);
}

TEST(ParseRpcRequestTest, OptionalFields) {
  Json msg = RealCall();
  msg.erase("args");
  msg.erase("version");
  msg.erase("_unique_id");
  msg["namespace"] = "dt";
  StatusOr<RpcRequest> req = ParseRpcRequest(msg);
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_EQ(req->args, Json::object());
  EXPECT_EQ(req->version, "1.0");
  EXPECT_EQ(req->unique_id, "");
  EXPECT_EQ(req->namespace_, "dt");
  msg["namespace"] = nullptr;
  req = ParseRpcRequest(msg);
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_EQ(req->namespace_, "");
}

TEST(ParseRpcRequestTest, NullMsgIdAndReplyQueueMeanCast) {
  Json msg = RealCall();
  msg["_msg_id"] = nullptr;
  msg["_reply_q"] = nullptr;
  StatusOr<RpcRequest> req = ParseRpcRequest(msg);
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_FALSE(req->is_call());
}

struct BadRequest {
  const char* what;
  std::function<void(Json&)> mutate;
  const char* reason;
};

TEST(ParseRpcRequestTest, RefusesMistypedFieldsNamingThem) {
  const std::vector<BadRequest> cases = {
      {"no method", [](Json& m) { m.erase("method"); }, "has no \"method\""},
      {"method number", [](Json& m) { m["method"] = 7; }, "\"method\" must be a non-empty string"},
      {"method empty", [](Json& m) { m["method"] = ""; }, "\"method\" must be a non-empty string"},
      {"args array", [](Json& m) { m["args"] = Json::array({kSecret}); },
       "\"args\" must be an object"},
      {"args null", [](Json& m) { m["args"] = nullptr; }, "\"args\" must be an object"},
      {"version number", [](Json& m) { m["version"] = 1.0; }, "\"version\" must be a string"},
      {"namespace number", [](Json& m) { m["namespace"] = 1; },
       "\"namespace\" must be a string or null"},
      {"unique id number", [](Json& m) { m["_unique_id"] = 1; }, "\"_unique_id\" must be a string"},
      {"msg id number", [](Json& m) { m["_msg_id"] = 1; }, "\"_msg_id\" must be a string or null"},
      {"reply q object", [](Json& m) { m["_reply_q"] = Json::object(); },
       "\"_reply_q\" must be a string or null"},
      {"timeout string", [](Json& m) { m["_timeout"] = "10"; },
       "\"_timeout\" must be a number or null"},
      {"timeout bool", [](Json& m) { m["_timeout"] = true; },
       "\"_timeout\" must be a number or null"},
      {"msg id alone", [](Json& m) { m.erase("_reply_q"); },
       "only one of \"_msg_id\" and \"_reply_q\""},
      {"reply q alone", [](Json& m) { m["_msg_id"] = nullptr; },
       "only one of \"_msg_id\" and \"_reply_q\""},
  };
  for (const BadRequest& c : cases) {
    SCOPED_TRACE(c.what);
    Json msg = RealCall();
    msg["args"]["secret"] = kSecret;
    c.mutate(msg);
    StatusOr<RpcRequest> req = ParseRpcRequest(msg);
    ASSERT_FALSE(req.ok());
    EXPECT_EQ(req.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(req.status().message(), HasSubstr(c.reason));
    EXPECT_THAT(req.status().message(), Not(HasSubstr(kSecret)));
  }
  EXPECT_FALSE(ParseRpcRequest(Json::array()).ok());
  EXPECT_FALSE(ParseRpcRequest(Json("protect")).ok());
}

// --- Replies ----------------------------------------------------------------------------------

TEST(RpcReplyTest, ResultHasTheShapeOfARealReply) {
  const Json real = LoadSample("rpc_reply_result")["oslo_deserialize_msg"];
  const Json result = Json::parse(R"({"ok": true, "instance_uuid": "u-2"})");
  const Json reply = RpcReply("e9cd1fbd20d44008a371a492f9337f05", result, std::nullopt, true);
  EXPECT_EQ(Keys(reply), Keys(real));
  EXPECT_EQ(reply["result"], real["result"]);
  EXPECT_TRUE(reply["failure"].is_null());
  EXPECT_EQ(reply["ending"], true);
  EXPECT_EQ(reply["_msg_id"], "e9cd1fbd20d44008a371a492f9337f05");
  EXPECT_TRUE(std::regex_match(reply["_unique_id"].get<std::string>(), std::regex("[0-9a-f]{32}")));
  EXPECT_NE(reply["_unique_id"], RpcReply("m", result, std::nullopt, true)["_unique_id"]);
}

TEST(RpcReplyTest, FailureIsAJsonStringShapedLikeSerializeRemoteException) {
  const Json real = LoadSample("rpc_reply_failure");
  const Json real_reply = real["oslo_deserialize_msg"];
  ASSERT_TRUE(real_reply["failure"].is_string());
  const Json real_failure = Json::parse(real_reply["failure"].get<std::string>());
  // What the Python client raised for the real reply: the builtin ValueError itself.
  EXPECT_EQ(real["client_raised"]["type"], "ValueError");
  EXPECT_THAT(real["client_raised"]["str"].get<std::string>(),
              ::testing::StartsWith("no such instance\n"));

  const Json reply = RpcReply(
      "m1", Json::parse(R"({"ignored": 1})"),
      RpcFailure{"ValueError", "builtins", "no such instance", Json::array({"no such instance"})},
      true);
  EXPECT_EQ(Keys(reply), Keys(real_reply));
  EXPECT_TRUE(reply["result"].is_null());
  ASSERT_TRUE(reply["failure"].is_string());
  const Json failure = Json::parse(reply["failure"].get<std::string>());
  EXPECT_EQ(Keys(failure), Keys(real_failure));
  for (const char* key : {"class", "module", "message", "args", "kwargs"}) {
    EXPECT_EQ(failure[key], real_failure[key]) << key;
  }
  EXPECT_EQ(failure["tb"], Json::array());
  EXPECT_TRUE(real_failure["tb"].is_array());
}

TEST(RpcReplyTest, FailureArgsThatAreNotAListAreWrapped) {
  RpcFailure f{"ServerNotFound", "nova_dt.exception", "gone", Json("u-1")};
  const Json failure = Json::parse(RpcReply("m", nullptr, f, true)["failure"].get<std::string>());
  EXPECT_EQ(failure["args"], Json::array({"u-1"}));
  EXPECT_EQ(failure["kwargs"], Json::object());
}

TEST(RpcReplyTest, KeepAliveEqualsTheRealHeartbeatButIds) {
  Json real = LoadSample("rpc_reply_keepalive")["oslo_deserialize_msg"];
  Json mine = RpcKeepAlive(real["_msg_id"].get<std::string>());
  EXPECT_EQ(Keys(mine), Keys(real));
  real.erase("_unique_id");
  mine.erase("_unique_id");
  EXPECT_EQ(mine, real);
}

// --- Notifications ----------------------------------------------------------------------------

TEST(NotificationMessageTest, HasTheShapeOfOslosNotifier) {
  const Json real = LoadSample("oslo_notify_v2")["oslo_deserialize_msg"];
  const Json context = Json::parse(R"({"project_id": "fake-project",
      "request_id": "req-dt-sample", "is_admin": false})");
  const Json msg = NotificationMessage("nova-dt-agent:compute1", "dt.pair.protected", "info",
                                       real["payload"], context);
  EXPECT_EQ(Keys(msg), Keys(real));
  for (const char* key : {"publisher_id", "event_type", "priority", "payload",
                          "_context_project_id", "_context_request_id", "_context_is_admin"}) {
    EXPECT_EQ(msg[key], real[key]) << key;
  }
  const std::regex uuid("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}");
  EXPECT_TRUE(std::regex_match(real["message_id"].get<std::string>(), uuid));
  EXPECT_TRUE(std::regex_match(msg["message_id"].get<std::string>(), uuid));
  const std::regex timestamp(R"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?)");
  EXPECT_TRUE(std::regex_match(real["timestamp"].get<std::string>(), timestamp));
  EXPECT_TRUE(std::regex_match(msg["timestamp"].get<std::string>(), timestamp));
  // A consumer reads it back like a real one.
  StatusOr<Json> decoded = DecodeOsloBody(EncodeOsloBody(msg));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, msg);
}

// --- Identifiers and time ---------------------------------------------------------------------

TEST(IdentifierTest, UniqueIdIsUuid4Hex) {
  const std::regex hex("[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}");
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const std::string id = NewUniqueId();
    ASSERT_TRUE(std::regex_match(id, hex)) << id;
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(IdentifierTest, UuidIsCanonicalUuid4) {
  const std::regex uuid("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}");
  for (int i = 0; i < 100; ++i) {
    const std::string id = NewUuid();
    ASSERT_TRUE(std::regex_match(id, uuid)) << id;
  }
}

TEST(IdentifierTest, ThreadsDrawDifferentIds) {
  std::mutex mu;
  std::set<std::string> seen;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      std::vector<std::string> mine;
      for (int i = 0; i < 500; ++i) mine.push_back(NewUniqueId());
      std::lock_guard<std::mutex> lock(mu);
      seen.insert(mine.begin(), mine.end());
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(seen.size(), 2000u);
}

TEST(OsloTimestampTest, FormatsLikePythonStrOfUtcnow) {
  using std::chrono::microseconds;
  using std::chrono::seconds;
  using std::chrono::system_clock;
  // 2026-11-24 19:04:19 UTC.
  const system_clock::time_point t{seconds(1795547059)};
  EXPECT_EQ(OsloTimestamp(t + microseconds(31911)), "2026-11-24 19:04:19.031911");
  // str(datetime) drops the fraction when microsecond == 0.
  EXPECT_EQ(OsloTimestamp(t), "2026-11-24 19:04:19");
  EXPECT_EQ(OsloTimestamp(t + microseconds(1)), "2026-11-24 19:04:19.000001");
  EXPECT_EQ(OsloTimestamp(system_clock::time_point{}), "1970-01-01 00:00:00");
  EXPECT_TRUE(
      std::regex_match(OsloTimestamp(), std::regex(R"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?)")));
}

// The RPC server's reading of a request's "version" (it was sscanf("%d.%d"), whose overflow is
// undefined behaviour and which also took " 1.0", "+1.0" and "1.-0").
TEST(ParseRpcVersionTest, PlainMajorDotMinorOnly) {
  EXPECT_EQ(ParseRpcVersion("1.0"), std::make_pair(1, 0));
  EXPECT_EQ(ParseRpcVersion("1.13"), std::make_pair(1, 13));
  EXPECT_EQ(ParseRpcVersion("01.2147483647"), std::make_pair(1, 2147483647));
  for (const char* bad : {"", "1", "1.", ".1", "1.0.0", " 1.0", "1.0 ", "+1.0", "1.+0", "1.-0",
                          "-1.0", "1. 0", "1,0", "x.y", "1.99999999999999999999",
                          "2147483648.0", "1.2147483648"}) {
    EXPECT_FALSE(ParseRpcVersion(bad).has_value()) << "'" << bad << "'";
  }
}

}  // namespace
}  // namespace novadt::bus
