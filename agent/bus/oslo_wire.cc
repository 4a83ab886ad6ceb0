#include "agent/bus/oslo_wire.h"

#include <simdjson.h>
#include <time.h>

#include <cctype>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <optional>
#include <random>
#include <utility>

#include "agent/common/numbers.h"

namespace novadt::bus {
namespace {

constexpr std::string_view kVersionKey = "oslo.version";
constexpr std::string_view kMessageKey = "oslo.message";
constexpr std::string_view kContextPrefix = "_context_";

// Debian's abseil has its own string_view, which std::string_view does not convert to: errors
// are built as std::string.
std::string Cat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view p : parts) out.append(p);
  return out;
}

Status Invalid(const std::string& what) { return absl::InvalidArgumentError(what); }

// True when `text` nests arrays/objects no deeper than kMaxJsonDepth. Brackets inside strings
// do not count; an unbalanced text is left for the parser to refuse. Run when simdjson refuses a
// text, so that a text both too deep and malformed is reported as too deep, and before nlohmann
// parses one.
bool DepthWithinLimit(std::string_view text) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character cannot end the string
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

// A non-negative decimal integer as Python's int() reads a version part (plain digits only).
bool ParseVersionPart(std::string_view s, long* out) {
  const std::optional<uint32_t> v = s.size() <= 9 ? ParseInteger<uint32_t>(s) : std::nullopt;
  if (!v) return false;
  *out = *v;
  return true;
}

// oslo_messaging._utils.version_is_compatible('2.0', version): same major, minor <= 0 and, for
// minor 0, revision <= 0. A version oslo would crash on ("2", "x.y") is incompatible here.
bool EnvelopeVersionCompatible(std::string_view version) {
  long parts[3] = {0, 0, 0};
  int n = 0;
  while (true) {
    const size_t dot = version.find('.');
    if (n == 3 || !ParseVersionPart(version.substr(0, dot), &parts[n])) return false;
    ++n;
    if (dot == std::string_view::npos) break;
    version.remove_prefix(dot + 1);
  }
  if (n < 2) return false;
  return parts[0] == 2 && parts[1] == 0 && parts[2] == 0;
}

std::mt19937_64& ThreadRng() {
  thread_local std::mt19937_64 rng = [] {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd(), rd(), rd(), rd(), rd()};
    return std::mt19937_64(seq);
  }();
  return rng;
}

// 16 random bytes with the uuid4 version and variant bits set.
void RandomUuidBytes(uint8_t out[16]) {
  auto& rng = ThreadRng();
  const uint64_t hi = rng();
  const uint64_t lo = rng();
  for (int i = 0; i < 8; ++i) {
    out[i] = static_cast<uint8_t>(hi >> (56 - 8 * i));
    out[8 + i] = static_cast<uint8_t>(lo >> (56 - 8 * i));
  }
  out[6] = static_cast<uint8_t>((out[6] & 0x0f) | 0x40);
  out[8] = static_cast<uint8_t>((out[8] & 0x3f) | 0x80);
}

std::string UuidText(bool dashes) {
  static constexpr char kHex[] = "0123456789abcdef";
  uint8_t bytes[16];
  RandomUuidBytes(bytes);
  std::string out;
  out.reserve(36);
  for (int i = 0; i < 16; ++i) {
    if (dashes && (i == 4 || i == 6 || i == 8 || i == 10)) out.push_back('-');
    out.push_back(kHex[bytes[i] >> 4]);
    out.push_back(kHex[bytes[i] & 0x0f]);
  }
  return out;
}

// True when `text` holds the integer token -0 (a '-', a '0', then a delimiter): simdjson reads it
// as int64 0 and keeps no sign, but nlohmann types it number_integer rather than number_unsigned.
// A match inside a string (": -0,") only costs a fallback to nlohmann.
bool HasNegativeZeroInteger(std::string_view text) {
  auto delimiter = [](char c) {
    return c == ',' || c == ']' || c == '}' || c == ' ' || c == '\n' || c == '\r' || c == '\t';
  };
  for (size_t i = text.find("-0"); i != std::string_view::npos; i = text.find("-0", i + 1)) {
    const bool value_start =
        i == 0 || delimiter(text[i - 1]) || text[i - 1] == ':' || text[i - 1] == '[';
    if (value_start && (i + 2 == text.size() || delimiter(text[i + 2]))) return true;
  }
  return false;
}

// Copies a simdjson DOM value into nlohmann with the value types nlohmann's own parser gives:
// integers number_integer when negative and number_unsigned otherwise, numbers with a fraction or
// an exponent number_float, a repeated key's last value. Returns false when it cannot tell the
// type (an integer 0 that was written -0); the caller then lets nlohmann parse the text. Recurses
// once per level, at most kMaxJsonDepth deep (the parser's limit).
class DomToJson {
 public:
  explicit DomToJson(std::string_view text) : text_(text) {}

  bool Convert(simdjson::dom::element element, Json* out) {
    using Type = simdjson::dom::element_type;
    switch (element.type()) {
      case Type::OBJECT: {
        *out = Json::value_t::object;
        auto& object = out->get_ref<Json::object_t&>();
        const simdjson::dom::object fields = element.get_object().value_unsafe();
        for (const simdjson::dom::key_value_pair field : fields) {
          // A repeated key's value is overwritten.
          Json& value = object.try_emplace(std::string(field.key)).first->second;
          if (!Convert(field.value, &value)) return false;
        }
        return true;
      }
      case Type::ARRAY: {
        *out = Json::value_t::array;
        auto& array = out->get_ref<Json::array_t&>();
        const simdjson::dom::array items = element.get_array().value_unsafe();
        for (const simdjson::dom::element item : items) {
          array.emplace_back();
          if (!Convert(item, &array.back())) return false;
        }
        return true;
      }
      case Type::STRING:
        *out = std::string(element.get_string().value_unsafe());
        return true;
      case Type::INT64: {
        const int64_t v = element.get_int64().value_unsafe();
        if (v < 0) {
          *out = v;
        } else {
          if (v == 0 && MaybeNegativeZero()) return false;
          *out = static_cast<uint64_t>(v);
        }
        return true;
      }
      case Type::UINT64:
        *out = element.get_uint64().value_unsafe();
        return true;
      case Type::DOUBLE:
        *out = element.get_double().value_unsafe();
        return true;
      case Type::BOOL:
        *out = element.get_bool().value_unsafe();
        return true;
      case Type::NULL_VALUE:
        *out = nullptr;
        return true;
    }
    return false;
  }

 private:
  bool MaybeNegativeZero() {
    if (!negative_zero_.has_value()) negative_zero_ = HasNegativeZeroInteger(text_);
    return *negative_zero_;
  }

  const std::string_view text_;
  std::optional<bool> negative_zero_;  // computed on the first integer 0
};

// simdjson errors that nlohmann's parser refuses as well: the text is not JSON. Any other error
// (NUMBER_ERROR: an integer beyond 64 bits, which nlohmann reads as a double) is left to nlohmann.
bool IsSyntaxError(simdjson::error_code error) {
  switch (error) {
    case simdjson::TAPE_ERROR:
    case simdjson::STRING_ERROR:
    case simdjson::T_ATOM_ERROR:
    case simdjson::F_ATOM_ERROR:
    case simdjson::N_ATOM_ERROR:
    case simdjson::UTF8_ERROR:
    case simdjson::EMPTY:
    case simdjson::UNESCAPED_CHARS:
    case simdjson::UNCLOSED_STRING:
    case simdjson::INCOMPLETE_ARRAY_OR_OBJECT:
    case simdjson::TRAILING_CONTENT:
      return true;
    default:
      return false;
  }
}

// One simdjson parser per thread, so its buffers are reused from one body to the next. They grow
// to fit the largest text the thread has parsed and stay: about 15 bytes per byte of it. The
// depth limit is kMaxJsonDepth and survives the growth. Each text is copied into the parser's own
// padded buffer (realloc_if_needed), since a body comes without simdjson's padding; measured, the
// copy costs as little as parsing an already padded text.
simdjson::dom::parser& ThreadParser() {
  thread_local simdjson::dom::parser parser = [] {
    simdjson::dom::parser p;
    if (p.allocate(/*capacity=*/64 << 10, kMaxJsonDepth) != simdjson::SUCCESS) {
      std::fprintf(stderr, "oslo_wire: cannot allocate the JSON parser\n");
      std::abort();
    }
    return p;
  }();
  return parser;
}

// Parses `text` (named `what` in errors) into an object with simdjson, or with nlohmann (the
// authority on what is valid JSON and how it is typed) where simdjson refuses a number or
// cannot tell its type.
StatusOr<Json> ParseObject(std::string_view text, std::string_view what) {
  const simdjson::simdjson_result<simdjson::dom::element> root =
      ThreadParser().parse(text.data(), text.size(), /*realloc_if_needed=*/true);
  if (root.error() == simdjson::SUCCESS) {
    if (!root.value_unsafe().is_object()) return Invalid(Cat({what, " is not a JSON object"}));
    Json parsed;
    if (DomToJson(text).Convert(root.value_unsafe(), &parsed)) return parsed;
  } else if (!DepthWithinLimit(text)) {  // also when the text is not JSON at all
    return Invalid(Cat({what, " nests JSON arrays/objects deeper than ",
                        std::to_string(kMaxJsonDepth), " levels"}));
  } else if (IsSyntaxError(root.error())) {
    return Invalid(Cat({what, " is not valid JSON"}));
  }
  Json parsed = Json::parse(text.data(), text.data() + text.size(), nullptr,
                            /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return Invalid(Cat({what, " is not valid JSON"}));
  if (!parsed.is_object()) return Invalid(Cat({what, " is not a JSON object"}));
  return parsed;
}

// The checks and the second decoding of an envelope (both keys present).
StatusOr<Json> Unwrap(const Json& version, const Json& message) {
  if (!version.is_string()) return Invalid("\"oslo.version\" must be a string");
  if (!EnvelopeVersionCompatible(version.get_ref<const std::string&>())) {
    return Invalid("\"oslo.version\" is not compatible with envelope version 2.0");
  }
  if (!message.is_string()) {
    return Invalid("\"oslo.message\" must be a string holding a JSON object");
  }
  return ParseObject(message.get_ref<const std::string&>(), "\"oslo.message\"");
}

// Compact JSON, non-ASCII as \uXXXX like Python's json.dumps; bad UTF-8 becomes U+FFFD.
std::string Dump(const Json& j) {
  return j.dump(-1, ' ', /*ensure_ascii=*/true, Json::error_handler_t::replace);
}

}  // namespace

StatusOr<Json> DecodeOsloBody(std::string_view body, size_t max_bytes) {
  if (body.size() > max_bytes) {
    return Invalid(
        Cat({"AMQP body of ", std::to_string(body.size()), " bytes is larger than the limit of ",
             std::to_string(max_bytes), " bytes"}));
  }
  StatusOr<Json> outer = ParseObject(body, "AMQP body");
  if (!outer.ok()) return outer.status();
  const auto version = outer->find(kVersionKey);
  const auto message = outer->find(kMessageKey);
  if (version == outer->end() || message == outer->end()) return outer;  // no envelope (1.0)
  return Unwrap(*version, *message);
}

std::string EncodeOsloBody(const Json& message) {
  // serialize_msg's order: version first. Dump() of a string quotes and escapes it.
  return Cat({"{\"oslo.version\": \"2.0\", \"oslo.message\": ", Dump(Json(Dump(message))), "}"});
}

std::string NewUniqueId() { return UuidText(/*dashes=*/false); }

std::string NewUuid() { return UuidText(/*dashes=*/true); }

std::string OsloTimestamp() { return OsloTimestamp(std::chrono::system_clock::now()); }

std::string OsloTimestamp(std::chrono::system_clock::time_point t) {
  using std::chrono::duration_cast;
  using std::chrono::microseconds;
  using std::chrono::seconds;
  const auto since_epoch = duration_cast<microseconds>(t.time_since_epoch());
  auto secs = duration_cast<seconds>(since_epoch);
  auto micros = (since_epoch - secs).count();
  if (micros < 0) {  // before 1970: floor, as Python does
    micros += 1000000;
    secs -= seconds(1);
  }
  const time_t tt = static_cast<time_t>(secs.count());
  struct tm tm;
  gmtime_r(&tt, &tm);
  char buf[40];
  int n = std::snprintf(buf, sizeof(buf), "%04d-%02d-%02d %02d:%02d:%02d", tm.tm_year + 1900,
                        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  if (micros != 0) {
    std::snprintf(buf + n, sizeof(buf) - n, ".%06" PRId64, static_cast<int64_t>(micros));
  }
  return buf;
}

std::optional<std::pair<int, int>> ParseRpcVersion(std::string_view version) {
  const size_t dot = version.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  const auto major = ParseInteger<uint32_t>(version.substr(0, dot));
  const auto minor = ParseInteger<uint32_t>(version.substr(dot + 1));
  if (!major || !minor || *major > INT32_MAX || *minor > INT32_MAX) return std::nullopt;
  return std::pair<int, int>(static_cast<int>(*major), static_cast<int>(*minor));
}

StatusOr<RpcRequest> ParseRpcRequest(const Json& message) {
  if (!message.is_object()) return Invalid("RPC request is not a JSON object");
  RpcRequest req;
  std::optional<std::string> msg_id, reply_q;
  for (const auto& [key, value] : message.items()) {
    if (key == "method") {
      if (!value.is_string() || value.get_ref<const std::string&>().empty()) {
        return Invalid("RPC request \"method\" must be a non-empty string");
      }
      req.method = value.get<std::string>();
    } else if (key == "args") {
      if (!value.is_object()) return Invalid("RPC request \"args\" must be an object");
      req.args = value;
    } else if (key == "version") {
      if (!value.is_string()) return Invalid("RPC request \"version\" must be a string");
      req.version = value.get<std::string>();
    } else if (key == "namespace") {
      if (value.is_string()) {
        req.namespace_ = value.get<std::string>();
      } else if (!value.is_null()) {
        return Invalid("RPC request \"namespace\" must be a string or null");
      }
    } else if (key == "_unique_id") {
      if (!value.is_string()) return Invalid("RPC request \"_unique_id\" must be a string");
      req.unique_id = value.get<std::string>();
    } else if (key == "_msg_id" || key == "_reply_q") {
      if (value.is_null()) continue;
      if (!value.is_string()) {
        return Invalid(Cat({"RPC request \"", key, "\" must be a string or null"}));
      }
      (key == "_msg_id" ? msg_id : reply_q) = value.get<std::string>();
    } else if (key == "_timeout") {
      if (value.is_null()) continue;
      if (!value.is_number()) return Invalid("RPC request \"_timeout\" must be a number or null");
      const double timeout = value.get<double>();
      // oslo's _watchdog: int(timeout) / 2 < 1 means no keep-alives.
      if (std::isfinite(timeout) && std::trunc(timeout) >= 2) req.call_monitor_timeout = timeout;
    } else if (key.size() > kContextPrefix.size() && key.rfind(kContextPrefix, 0) == 0) {
      req.context[key.substr(kContextPrefix.size())] = value;
    }
  }
  if (req.method.empty()) return Invalid("RPC request has no \"method\"");
  if (msg_id.has_value() != reply_q.has_value()) {
    return Invalid("RPC request has only one of \"_msg_id\" and \"_reply_q\"");
  }
  req.msg_id = std::move(msg_id);
  req.reply_q = std::move(reply_q);
  return req;
}

Json RpcReply(const std::string& msg_id, const Json& result,
              const std::optional<RpcFailure>& failure, bool ending) {
  Json reply = Json::object();
  if (failure.has_value()) {
    Json data = Json::object();
    data["class"] = failure->exception_class;
    data["module"] = failure->exception_module;
    data["message"] = failure->message;
    data["tb"] = Json::array();
    data["args"] = failure->args.is_array() ? failure->args : Json::array({failure->args});
    data["kwargs"] = Json::object();
    reply["result"] = nullptr;
    reply["failure"] = Dump(data);
  } else {
    reply["result"] = result;
    reply["failure"] = nullptr;
  }
  reply["ending"] = ending;
  reply["_msg_id"] = msg_id;
  reply["_unique_id"] = NewUniqueId();
  return reply;
}

Json RpcKeepAlive(const std::string& msg_id) {
  return RpcReply(msg_id, nullptr, std::nullopt, /*ending=*/false);
}

Json NotificationMessage(const std::string& publisher_id, const std::string& event_type,
                         const std::string& priority, const Json& payload, const Json& context) {
  std::string upper = priority;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  Json msg = Json::object();
  msg["message_id"] = NewUuid();
  msg["publisher_id"] = publisher_id;
  msg["event_type"] = event_type;
  msg["priority"] = std::move(upper);
  msg["payload"] = payload;
  msg["timestamp"] = OsloTimestamp();
  msg["_unique_id"] = NewUniqueId();
  if (context.is_object()) {
    for (const auto& [key, value] : context.items()) {
      msg[Cat({kContextPrefix, key})] = value;
    }
  }
  return msg;
}

}  // namespace novadt::bus
