// oslo.messaging's wire format (rabbit driver, envelope 2.0), both directions, as pure functions
// on strings and JSON: no broker, no I/O. See OPENSTACK-FACTS.md §2 and oslo_messaging/_drivers/
// common.py (serialize_msg / deserialize_msg) and amqpdriver.py. Thread-safe: every function may
// be called from any thread (the identifiers come from a per-thread generator).
#pragma once

#include <chrono>
#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "agent/common/status.h"

namespace novadt::bus {

using Json = nlohmann::json;

// Largest body accepted by default; anything bigger is refused before parsing.
inline constexpr size_t kDefaultMaxBodyBytes = 1 << 20;
// Deepest nesting of JSON arrays/objects accepted (in the body, and again in "oslo.message"):
// simdjson's parser limit, and checked before nlohmann parses what simdjson leaves to it.
// Copying, comparing and dumping the result recurse once per level, so a body of 100k '[' would
// overflow the stack later.
inline constexpr int kMaxJsonDepth = 64;

// Decodes an AMQP body as oslo's deserialize_msg does: an object with both "oslo.version" and
// "oslo.message" is an envelope, unwrapped (decoded twice); any other JSON object is returned as
// is (format 1.0, e.g. the "messaging" notification driver). The envelope version must be one
// oslo's version_is_compatible('2.0', v) accepts: major 2, minor 0 (and revision 0), so "2.0"
// (oslo 14 refuses "2.1" and "3.0" too), written in plain digits (Python's int() would also take
// " 0" or "+2"). Errors (InvalidArgument, with a reason that names the field and never quotes the
// body): bigger than `max_bytes`, nested deeper than kMaxJsonDepth, not JSON (including invalid
// UTF-8 and truncation), not an object, "oslo.version" not a string or incompatible,
// "oslo.message" not a string, not JSON or not an object inside.
StatusOr<Json> DecodeOsloBody(std::string_view body, size_t max_bytes = kDefaultMaxBodyBytes);

// Wraps `message` in envelope 2.0 (serialize_msg), keys in oslo's order; the body is ASCII
// (non-ASCII as \uXXXX, as Python's json.dumps writes it). Strings that are not valid UTF-8 are
// written with U+FFFD in place of the bad bytes (never throws).
std::string EncodeOsloBody(const Json& message);

// A fresh 32-hex-digit identifier (uuid4().hex), as oslo uses for _unique_id and _msg_id.
std::string NewUniqueId();
// A fresh uuid4 in canonical form (notifications' message_id).
std::string NewUuid();
// Now as oslo's str(timeutils.utcnow()): "2026-11-24 19:04:19.031911" (UTC, no "T", no zone;
// like Python's str(datetime), no fraction at all when the microseconds are 0).
std::string OsloTimestamp();
// The same for a given time (tests; callers with an injected Clock).
std::string OsloTimestamp(std::chrono::system_clock::time_point t);

// One RPC request (cast or call) as the dispatcher sees it.
struct RpcRequest {
  std::string method;
  Json args = Json::object();
  std::string version = "1.0";    // dispatcher default when absent
  std::string namespace_;         // empty when absent
  std::string unique_id;          // _unique_id
  Json context = Json::object();  // the _context_* keys, prefix stripped
  // Calls only (all three absent for a cast).
  std::optional<std::string> msg_id;   // _msg_id
  std::optional<std::string> reply_q;  // _reply_q
  // _timeout (call_monitor_timeout) in seconds when set and not null: the server must send
  // keep-alive replies every timeout/2. Like oslo's dispatcher (_watchdog), a value whose integer
  // part is below 2 asks for no keep-alives and is left empty here.
  std::optional<double> call_monitor_timeout;
  bool is_call() const { return msg_id.has_value() && reply_q.has_value(); }
};

// Reads a decoded request. InvalidArgument (naming the field) when the message is not an object,
// "method" is missing or not a string, "args" is present but not an object, "version" is not a
// string, "namespace" is neither a string nor null, "_unique_id"/"_msg_id"/"_reply_q" are not
// strings (null _msg_id/_reply_q count as absent, as in oslo's unpack_context), "_timeout" is
// neither a number nor null, or only one of _msg_id/_reply_q is present.
StatusOr<RpcRequest> ParseRpcRequest(const Json& message);

// The API version a request asks for (RpcRequest::version): "major.minor", each plain decimal
// digits that fit an int. nullopt for anything else (a sign, spaces, a third part...), which
// the RPC server answers with oslo's UnsupportedVersion.
std::optional<std::pair<int, int>> ParseRpcVersion(std::string_view version);

// A remote exception as oslo serializes it (serialize_remote_exception): class and module name
// the Python exception the client re-raises when the module is in its allowed_remote_exmods
// ("builtins" always is); otherwise the client raises oslo_messaging.RemoteError.
struct RpcFailure {
  std::string exception_class;   // e.g. "ServerNotFound"
  std::string exception_module;  // e.g. "nova_dt.exception"
  std::string message;
  Json args = Json::array();  // positional arguments the exception is rebuilt with
};

// The reply message (before EncodeOsloBody): {"result", "failure", "ending", "_msg_id",
// "_unique_id"}. With `failure`, "failure" is the JSON *string* oslo expects ({"class", "module",
// "message", "tb": [], "args", "kwargs": {}}) and "result" null. The Python client then raises,
// for module "builtins", the builtin class itself built from `args` with its first argument
// replaced by message + "\n" (deserialize_remote_exception appends the empty traceback).
Json RpcReply(const std::string& msg_id, const Json& result,
              const std::optional<RpcFailure>& failure, bool ending);
// The call_monitor keep-alive: result and failure null, ending false.
Json RpcKeepAlive(const std::string& msg_id);

// A notification as oslo's Notifier._notify builds it (message_id, publisher_id, event_type,
// priority upper-case, payload, timestamp) plus the driver's _unique_id; `context` keys are
// added with the "_context_" prefix.
Json NotificationMessage(const std::string& publisher_id, const std::string& event_type,
                         const std::string& priority, const Json& payload,
                         const Json& context = Json::object());

}  // namespace novadt::bus
