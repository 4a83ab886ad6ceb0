// The replication stream over gRPC (nova_dt.v1.Peer/Replicate): the backup's service side and
// the primary's core::ReplicationLink.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

#include <grpcpp/grpcpp.h>

#include <map>
#include <string>

#include "agent/core/replication_link.h"
#include "agent/core/replication_receiver.h"
#include "agent/rpc/peer_tls.h"
#include "nova_dt/v1/peer.grpc.pb.h"

namespace novadt::rpc {

// Largest message either side accepts on the peer port. Senders chunk below it.
inline constexpr int kMaxPeerMessageBytes = 16 << 20;

// Serves one Replicate call on the calling (gRPC) thread until the stream ends: checks and
// forwards every message through core::ReplicationReceiver to the sink made by `factory`,
// acknowledges committed epochs, and sends a heartbeat every `heartbeat_interval` (from a
// helper thread) so the primary can tell a slow backup from a dead one. Returns the status the
// primary sees (refusals carry the receiver's or the sink's message). The StreamOpen's
// primary_host must pass `credentials.Authorize` (PermissionDenied otherwise), and the stream
// stays within `limits`. An exception escaping the sink ends this stream (INTERNAL), never the
// agent.
grpc::Status ServeReplicationStream(
    grpc::ServerContext* ctx,
    grpc::ServerReaderWriter<nova_dt::v1::ReplicationAck, nova_dt::v1::ReplicationMessage>* stream,
    const core::ReplicaSinkFactory& factory, std::chrono::milliseconds heartbeat_interval,
    const PeerCredentials& credentials, const core::StreamLimits& limits = {});

// Serves one Basis call: `basis` (the replica registry's) for the request's server, sent in
// chunks of hashes. The request's host must pass `credentials.Authorize`, its instance UUID be
// canonical.
grpc::Status ServeBasis(
    grpc::ServerContext* ctx, const nova_dt::v1::BasisRequest& request,
    grpc::ServerWriter<nova_dt::v1::BasisChunk>* writer,
    const std::function<StatusOr<core::ReplicaBasis>(const std::string& primary_host,
                                                     const std::string& instance_uuid)>& basis,
    const PeerCredentials& credentials);

// The primary's side. Thread-safe; streams it opens are independent. `hosts_by_address` names the
// peer host expected at each address (with TLS its certificate must name it; an address without
// a host is refused).
std::unique_ptr<core::ReplicationLink> MakeGrpcReplicationLink(
    std::shared_ptr<const PeerCredentials> credentials = PeerCredentials::Insecure({}),
    std::map<std::string, std::string> hosts_by_address = {});

// absl and gRPC use the same numeric codes.
inline grpc::Status ToGrpc(const absl::Status& st) {
  return st.ok() ? grpc::Status::OK
                 : grpc::Status(static_cast<grpc::StatusCode>(st.code()), std::string(st.message()));
}
inline absl::Status FromGrpc(const grpc::Status& st) {
  return st.ok() ? absl::OkStatus()
                 : absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
}

}  // namespace novadt::rpc
