#include "agent/rpc/peer_tls.h"

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <fstream>
#include <sstream>

#include "agent/common/identifiers.h"

namespace novadt::rpc {
namespace {

StatusOr<std::string> ReadPem(const std::string& option, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  if (in) text << in.rdbuf();
  if (!in) return absl::InvalidArgumentError("[peer] " + option + ": cannot read " + path);
  const std::string pem = text.str();
  if (pem.find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError("[peer] " + option + ": " + path + " holds no PEM block");
  }
  return pem;
}

}  // namespace

std::shared_ptr<const PeerCredentials> PeerCredentials::Insecure(std::vector<std::string> peers) {
  std::shared_ptr<PeerCredentials> c(new PeerCredentials());
  c->peers_.insert(peers.begin(), peers.end());
  return c;
}

StatusOr<std::shared_ptr<const PeerCredentials>> PeerCredentials::Load(
    const config::PeerSection& peer) {
  std::vector<std::string> peers;
  for (const auto& p : peer.peers) peers.push_back(p.host);
  if (peer.tls_cert_file.empty()) {
    if (peer.allow_insecure) return Insecure(std::move(peers));
    return absl::FailedPreconditionError(
        "[peer] has no TLS certificates: the peer API (replication streams, take-overs) would "
        "accept any caller on the network. Set tls_cert_file, tls_key_file and tls_ca_file "
        "(deploy/nova-dt-make-certs, docs/security.md), or allow_insecure = true on an isolated "
        "lab network");
  }
  std::shared_ptr<PeerCredentials> c(new PeerCredentials());
  c->tls_ = true;
  c->peers_.insert(peers.begin(), peers.end());
  auto cert = ReadPem("tls_cert_file", peer.tls_cert_file);
  if (!cert.ok()) return cert.status();
  auto key = ReadPem("tls_key_file", peer.tls_key_file);
  if (!key.ok()) return key.status();
  auto ca = ReadPem("tls_ca_file", peer.tls_ca_file);
  if (!ca.ok()) return ca.status();
  c->cert_pem_ = *std::move(cert);
  c->key_pem_ = *std::move(key);
  c->ca_pem_ = *std::move(ca);
  return std::shared_ptr<const PeerCredentials>(std::move(c));
}

std::shared_ptr<grpc::ServerCredentials> PeerCredentials::ServerCredentials() const {
  if (!tls_) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions o(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  o.pem_root_certs = ca_pem_;
  o.pem_key_cert_pairs.push_back({key_pem_, cert_pem_});
  return grpc::SslServerCredentials(o);
}

std::shared_ptr<grpc::Channel> PeerCredentials::Channel(const std::string& address,
                                                        const std::string& expected_host,
                                                        grpc::ChannelArguments args) const {
  if (!tls_) return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = ca_pem_;
  o.pem_private_key = key_pem_;
  o.pem_cert_chain = cert_pem_;
  // Peers are dialled by address; the certificate must name the host configured for it.
  args.SetSslTargetNameOverride(expected_host);
  return grpc::CreateCustomChannel(address, grpc::SslCredentials(o), args);
}

Status PeerCredentials::Authorize(const grpc::ServerContext& ctx,
                                  const std::string& claimed_host) const {
  NOVA_DT_RETURN_IF_ERROR(ValidateHostName(claimed_host));
  if (!peers_.count(claimed_host)) {
    return absl::PermissionDeniedError("host '" + claimed_host +
                                       "' is not one of this agent's [peer] peers");
  }
  if (!tls_) return absl::OkStatus();
  const std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  if (!auth || !auth->IsPeerAuthenticated()) {
    return absl::PermissionDeniedError("the peer presented no verified client certificate");
  }
  std::vector<std::string> names;
  for (const auto& v : auth->FindPropertyValues("x509_subject_alternative_name")) {
    names.push_back(Printable({v.data(), v.size()}, 255));
  }
  if (names.empty()) {
    for (const auto& v : auth->FindPropertyValues("x509_common_name")) {
      names.push_back(Printable({v.data(), v.size()}, 255));
    }
  }
  for (const auto& n : names) {
    if (n == claimed_host) return absl::OkStatus();
  }
  std::string shown;
  for (const auto& n : names) shown += (shown.empty() ? "" : ", ") + n;
  return absl::PermissionDeniedError("peer claims to be host '" + claimed_host +
                                     "' but its certificate names " +
                                     (shown.empty() ? std::string("no host") : shown));
}

std::map<std::string, std::string> PeerHostsByAddress(const config::PeerSection& peer) {
  std::map<std::string, std::string> hosts;
  for (const auto& p : peer.peers) hosts[p.address] = p.host;
  return hosts;
}

}  // namespace novadt::rpc
