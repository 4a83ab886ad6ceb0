// Who may call the peer API (docs/security.md). With mutual TLS ([peer] tls_cert_file,
// tls_key_file, tls_ca_file) every agent presents its host's certificate and accepts only callers
// whose certificate the CA signed AND names the host they claim to be, where that host is one of
// its [peer] peers (as libvirt's tls_allowed_dn_list) — the callee checks the host of every Hello,
// StreamOpen, Basis and TakeOver against the client certificate; the caller checks that the
// callee's certificate names the peer host configured for the address it dials. Without the
// three files the agent refuses to serve the peer API unless [peer] allow_insecure is set: then
// nothing is authenticated and only the claimed host is checked against [peer] peers.
//
// A certificate "names" a host when one of its DNS subjectAltNames, or (without DNS SANs) its
// subject CN, equals the host name exactly.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "agent/common/status.h"
#include "agent/config/config.h"

namespace novadt::rpc {

// Immutable; thread-safe.
class PeerCredentials {
 public:
  // Plaintext, accepting callers that claim to be one of `peers` (nobody when empty).
  static std::shared_ptr<const PeerCredentials> Insecure(std::vector<std::string> peers);
  // Reads the three PEM files of `peer` (all set); callers are accepted from `peer.peers`.
  // InvalidArgument naming the option and file when one is unreadable or holds no PEM block.
  // None set: Insecure() when peer.allow_insecure, else FailedPrecondition saying what to do.
  static StatusOr<std::shared_ptr<const PeerCredentials>> Load(const config::PeerSection& peer);

  bool tls() const { return tls_; }
  // The peer port's credentials: with TLS a client certificate signed by the CA is required.
  std::shared_ptr<grpc::ServerCredentials> ServerCredentials() const;
  // A channel to `address`, where the peer host `expected_host` listens: with TLS the callee's
  // certificate must name `expected_host` (the TLS handshake fails otherwise).
  std::shared_ptr<grpc::Channel> Channel(const std::string& address,
                                         const std::string& expected_host,
                                         grpc::ChannelArguments args) const;
  // Callee side: OK when `claimed_host` is a well-formed host name (else InvalidArgument), one
  // of the accepted peers and, with TLS, named by the caller's client certificate;
  // PermissionDenied saying why otherwise.
  Status Authorize(const grpc::ServerContext& ctx, const std::string& claimed_host) const;

 private:
  PeerCredentials() = default;
  bool tls_ = false;
  std::set<std::string> peers_;  // hosts accepted as callers
  std::string cert_pem_;
  std::string key_pem_;
  std::string ca_pem_;
};

// The peer host expected at each dialled address: "[peer] peers" read backwards.
std::map<std::string, std::string> PeerHostsByAddress(const config::PeerSection& peer);

}  // namespace novadt::rpc
