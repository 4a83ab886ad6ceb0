// Mutual TLS on the peer link ([peer] tls_cert_file, tls_key_file, tls_ca_file): every agent
// presents its host's certificate and accepts only peers whose certificate the CA signed AND
// names the host they claim to be — the callee checks the caller's Hello host and StreamOpen
// primary host against the client certificate; the caller checks that the callee's certificate
// names the peer host configured for the address it dials. Without the three files the link is
// plaintext (and every identity check passes), as configured.
//
// A certificate "names" a host when one of its DNS subjectAltNames, or (without DNS SANs) its
// subject CN, equals the host name exactly.
#pragma once

#include <map>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "agent/common/status.h"
#include "agent/config/config.h"

namespace novadt::rpc {

// Immutable; thread-safe.
class PeerCredentials {
 public:
  // Plaintext.
  static std::shared_ptr<const PeerCredentials> Insecure();
  // Reads the three PEM files of `peer` (all set) or returns Insecure() (none set).
  // InvalidArgument naming the option and file when one is unreadable or holds no PEM block.
  static StatusOr<std::shared_ptr<const PeerCredentials>> Load(const config::PeerSection& peer);

  bool tls() const { return tls_; }
  // The peer port's credentials: with TLS a client certificate signed by the CA is required.
  std::shared_ptr<grpc::ServerCredentials> ServerCredentials() const;
  // A channel to `address`, where the peer host `expected_host` listens: with TLS the callee's
  // certificate must name `expected_host` (the TLS handshake fails otherwise).
  std::shared_ptr<grpc::Channel> Channel(const std::string& address,
                                         const std::string& expected_host,
                                         grpc::ChannelArguments args) const;
  // Callee side: OK when the caller's client certificate names `claimed_host` (always OK in
  // plaintext); PermissionDenied saying which names the certificate carries otherwise.
  Status Authorize(const grpc::ServerContext& ctx, const std::string& claimed_host) const;

 private:
  PeerCredentials() = default;
  bool tls_ = false;
  std::string cert_pem_;
  std::string key_pem_;
  std::string ca_pem_;
};

// The peer host expected at each dialled address: "[peer] peers" read backwards.
std::map<std::string, std::string> PeerHostsByAddress(const config::PeerSection& peer);

}  // namespace novadt::rpc
