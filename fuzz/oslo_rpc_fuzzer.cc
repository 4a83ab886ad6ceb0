// oslo.messaging RPC requests as the agent's RPC server takes them off the bus
// (agent/bus/rpc_server.cc OnDelivery + Dispatch): the envelope, the request, its version, and
// the failure reply built from the request's own strings, which must encode to a body that
// decodes again (a client must be able to read every reply, whatever bytes the request had).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "agent/bus/oslo_wire.h"
#include "fuzz/fuzz_check.h"

using namespace novadt::bus;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  const auto message = DecodeOsloBody(body);
  if (!message.ok()) return 0;
  const auto request = ParseRpcRequest(*message);
  if (!request.ok()) return 0;
  const auto version = ParseRpcVersion(request->version);
  if (version.has_value()) {
    FUZZ_CHECK(version->first >= 0 && version->second >= 0, "negative version part");
  }
  RpcFailure failure;
  failure.exception_module = "oslo_messaging.rpc.dispatcher";
  failure.exception_class = "UnsupportedVersion";
  failure.message = "Endpoint does not support RPC version " + request->version +
                    ". Attempted method: " + request->method + " " + request->namespace_;
  failure.args = Json::array({request->version});
  const Json reply = RpcReply(request->msg_id.value_or(""), nullptr, failure, true);
  const auto again = DecodeOsloBody(EncodeOsloBody(reply), SIZE_MAX);
  FUZZ_CHECK(again.ok(), "reply does not decode: %s", again.status().ToString().c_str());
  FUZZ_CHECK(again->value("_msg_id", "") == request->msg_id.value_or(""), "reply lost _msg_id");
  (void)EncodeOsloBody(RpcKeepAlive(request->msg_id.value_or("")));
  return 0;
}
