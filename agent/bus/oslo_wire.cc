#include "agent/bus/oslo_wire.h"

#include <time.h>

#include <cctype>
#include <charconv>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <random>
#include <utility>

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
// do not count; an unbalanced text is left for the parser to refuse.
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
  if (s.empty() || s.size() > 9) return false;
  long v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *out = v;
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

// A fast reader for the JSON that Python's json.dumps writes (oslo's jsonutils): ASCII text,
// with anything else escaped as \uXXXX. nlohmann's lexer costs ~7 ns a byte on the development
// machine, which alone held the agent under 20,000 notifications/s. The reader handles only that
// subset and gives up (returns false) on anything else -- a raw byte >= 0x80, a control byte, a
// lone surrogate, an integer of more than 18 digits, a float out of range, nesting deeper than
// kMaxJsonDepth, any syntax error -- in which case the caller parses the text with nlohmann, the
// authority on what is valid JSON. So what it accepts it must read exactly as nlohmann does:
// integers as int64 when negative and uint64 otherwise, other numbers as correctly rounded
// doubles, a repeated key's last value. It recurses at most kMaxJsonDepth levels.
class FastJsonReader {
 public:
  explicit FastJsonReader(std::string_view text) : p_(text.data()), end_(p_ + text.size()) {}

  bool ReadDocument(Json* out) {
    SkipWs();
    if (!ReadValue(out, 0)) return false;
    SkipWs();
    return p_ == end_;
  }

 private:
  void SkipWs() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }

  bool Consume(char c) {
    if (p_ == end_ || *p_ != c) return false;
    ++p_;
    return true;
  }

  bool ReadValue(Json* out, int depth) {
    if (p_ == end_) return false;
    switch (*p_) {
      case '{':
        return ReadObject(out, depth + 1);
      case '[':
        return ReadArray(out, depth + 1);
      case '"': {
        *out = Json::value_t::string;
        return ReadString(&out->get_ref<std::string&>());
      }
      case 't':
        *out = true;
        return ReadWord("true");
      case 'f':
        *out = false;
        return ReadWord("false");
      case 'n':
        *out = nullptr;
        return ReadWord("null");
      default:
        return ReadNumber(out);
    }
  }

  bool ReadObject(Json* out, int depth) {
    if (depth > kMaxJsonDepth) return false;
    ++p_;  // '{'
    *out = Json::value_t::object;
    auto& object = out->get_ref<Json::object_t&>();
    SkipWs();
    if (Consume('}')) return true;
    std::string key;
    while (true) {
      SkipWs();
      key.clear();
      if (!ReadString(&key)) return false;
      SkipWs();
      if (!Consume(':')) return false;
      SkipWs();
      Json value;
      if (!ReadValue(&value, depth)) return false;
      object.insert_or_assign(std::move(key), std::move(value));
      SkipWs();
      if (Consume('}')) return true;
      if (!Consume(',')) return false;
    }
  }

  bool ReadArray(Json* out, int depth) {
    if (depth > kMaxJsonDepth) return false;
    ++p_;  // '['
    *out = Json::value_t::array;
    auto& array = out->get_ref<Json::array_t&>();
    SkipWs();
    if (Consume(']')) return true;
    while (true) {
      SkipWs();
      array.emplace_back();
      if (!ReadValue(&array.back(), depth)) return false;
      SkipWs();
      if (Consume(']')) return true;
      if (!Consume(',')) return false;
    }
  }

  bool ReadWord(std::string_view word) {
    if (static_cast<size_t>(end_ - p_) < word.size() || std::string_view(p_, word.size()) != word) {
      return false;
    }
    p_ += word.size();
    return true;
  }

  static int HexDigit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  // The 4 hex digits after "\u" at p_ (p_ on the backslash).
  bool ReadUnicodeEscape(uint32_t* unit) {
    if (end_ - p_ < 6 || p_[0] != '\\' || p_[1] != 'u') return false;
    uint32_t v = 0;
    for (int i = 2; i < 6; ++i) {
      const int d = HexDigit(p_[i]);
      if (d < 0) return false;
      v = v << 4 | static_cast<uint32_t>(d);
    }
    p_ += 6;
    *unit = v;
    return true;
  }

  static void AppendUtf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xc0 | cp >> 6));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
      out->push_back(static_cast<char>(0xe0 | cp >> 12));
      out->push_back(static_cast<char>(0x80 | (cp >> 6 & 0x3f)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else {
      out->push_back(static_cast<char>(0xf0 | cp >> 18));
      out->push_back(static_cast<char>(0x80 | (cp >> 12 & 0x3f)));
      out->push_back(static_cast<char>(0x80 | (cp >> 6 & 0x3f)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    }
  }

  bool ReadString(std::string* out) {
    if (!Consume('"')) return false;
    while (true) {
      const char* run = p_;
      while (p_ < end_ && *p_ != '"' && *p_ != '\\' && static_cast<unsigned char>(*p_) >= 0x20 &&
             static_cast<unsigned char>(*p_) < 0x80) {
        ++p_;
      }
      out->append(run, p_);
      if (p_ == end_) return false;
      if (*p_ == '"') {
        ++p_;
        return true;
      }
      if (*p_ != '\\' || p_ + 1 == end_) return false;  // a control or non-ASCII byte
      char c;
      switch (p_[1]) {
        case '"':
          c = '"';
          break;
        case '\\':
          c = '\\';
          break;
        case '/':
          c = '/';
          break;
        case 'b':
          c = '\b';
          break;
        case 'f':
          c = '\f';
          break;
        case 'n':
          c = '\n';
          break;
        case 'r':
          c = '\r';
          break;
        case 't':
          c = '\t';
          break;
        case 'u': {
          uint32_t cp;
          if (!ReadUnicodeEscape(&cp)) return false;
          if (cp >= 0xdc00 && cp <= 0xdfff) return false;  // a lone low surrogate
          if (cp >= 0xd800 && cp <= 0xdbff) {
            uint32_t low;
            if (!ReadUnicodeEscape(&low) || low < 0xdc00 || low > 0xdfff) return false;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
          }
          AppendUtf8(cp, out);
          continue;
        }
        default:
          return false;
      }
      out->push_back(c);
      p_ += 2;
    }
  }

  bool ReadNumber(Json* out) {
    const char* start = p_;
    const bool negative = Consume('-');
    const char* digits = p_;
    if (p_ == end_ || *p_ < '0' || *p_ > '9') return false;
    if (*p_ == '0') {
      ++p_;
    } else {
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    const size_t int_digits = p_ - digits;
    bool is_float = false;
    if (p_ < end_ && *p_ == '.') {
      is_float = true;
      ++p_;
      const char* frac = p_;
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
      if (p_ == frac) return false;
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
      is_float = true;
      ++p_;
      if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      const char* exp = p_;
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
      if (p_ == exp) return false;
    }
    if (!is_float) {
      if (int_digits > 18) return false;  // may not fit: nlohmann decides
      uint64_t v = 0;
      for (const char* d = digits; d < p_; ++d) v = v * 10 + static_cast<uint64_t>(*d - '0');
      if (negative) {
        *out = -static_cast<int64_t>(v);
      } else {
        *out = v;
      }
      return true;
    }
    double v;
    const auto [ptr, ec] = std::from_chars(start, p_, v);
    if (ec != std::errc() || ptr != p_ || !std::isfinite(v)) return false;
    *out = v;
    return true;
  }

  const char* p_;
  const char* const end_;
};

// Parses `text` (named `what` in errors) into an object: FastJsonReader when it can, otherwise
// the depth check and nlohmann, which also gives the errors.
StatusOr<Json> ParseObject(std::string_view text, std::string_view what) {
  Json fast;
  if (FastJsonReader(text).ReadDocument(&fast)) {
    if (!fast.is_object()) return Invalid(Cat({what, " is not a JSON object"}));
    return fast;
  }
  if (!DepthWithinLimit(text)) {
    return Invalid(Cat({what, " nests JSON arrays/objects deeper than ",
                        std::to_string(kMaxJsonDepth), " levels"}));
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
