// core::PeerLink over gRPC (the Peer service of proto/nova_dt/v1/peer.proto).
#pragma once

#include <memory>
#include <string>

#include "agent/core/peer_link.h"

namespace novadt::rpc {

struct PeerIdentity {
  std::string host;            // our [DEFAULT] host, sent in every greeting
  std::string version;
  std::string listen_address;  // our own peer address, so the callee can call back
};

// One channel per peer address, created on first use and kept. Thread-safe.
std::unique_ptr<core::PeerLink> MakeGrpcPeerLink(PeerIdentity self);

}  // namespace novadt::rpc
