// core::PeerLink over gRPC (the Peer service of proto/nova_dt/v1/peer.proto).
#pragma once

#include <memory>
#include <string>

#include <map>

#include "agent/core/peer_link.h"
#include "agent/rpc/peer_tls.h"

namespace novadt::rpc {

struct PeerIdentity {
  std::string host;            // our [DEFAULT] host, sent in every greeting
  std::string version;
  std::string listen_address;  // our own peer address, so the callee can call back
};

// One channel per peer address, created on first use and kept. Thread-safe. With TLS the callee
// must present a certificate naming the host `hosts_by_address` gives for the address (a hello
// to an address without one fails).
std::unique_ptr<core::PeerLink> MakeGrpcPeerLink(
    PeerIdentity self,
    std::shared_ptr<const PeerCredentials> credentials = PeerCredentials::Insecure({}),
    std::map<std::string, std::string> hosts_by_address = {});

}  // namespace novadt::rpc
