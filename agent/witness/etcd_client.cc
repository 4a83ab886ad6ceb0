#include "agent/witness/etcd_client.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>

#include <fstream>
#include <sstream>

namespace novadt::witness {
namespace {

StatusOr<std::string> ReadPem(const std::string& option, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  if (in) text << in.rdbuf();
  if (!in) return absl::InvalidArgumentError("[witness] " + option + ": cannot read " + path);
  std::string pem = text.str();
  if (pem.find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError("[witness] " + option + ": " + path + " holds no PEM block");
  }
  return pem;
}

// Moves on to the next endpoint: it is unreachable, has no leader, or did not answer in time.
bool TryNextEndpoint(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE ||
         s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
}

// With TLS 1.3 a client considers the handshake done before the server has checked the client's
// certificate, so etcd with --client-cert-auth refuses a certificate it does not trust (or a
// missing one) by closing the connection just after it: gRPC then fails the connection attempt
// with a read error, a reset or a closed socket, and keeps the TLS alert to its own log. The
// hint says what to check. (A stopped etcd refuses the TCP connection instead, and a server
// certificate that does not verify fails the handshake itself: neither gets the hint.)
std::string TlsRefusalHint(const grpc::Status& s, bool client_certificate) {
  const std::string& m = s.error_message();
  auto has = [&m](const char* what) { return m.find(what) != std::string::npos; };
  if (s.error_code() != grpc::StatusCode::UNAVAILABLE || !has("failed to connect") ||
      !(has("Endpoint read failed") || has("Connection reset by peer") || has("Socket closed"))) {
    return "";
  }
  return client_certificate
             ? " (etcd closed the connection right after the TLS handshake: most likely it does "
               "not accept the client certificate [witness] tls_cert_file — it must be signed by "
               "a CA in etcd's --trusted-ca-file)"
             : " (etcd closed the connection right after the TLS handshake: most likely it "
               "requires a client certificate — set [witness] tls_cert_file and tls_key_file)";
}

}  // namespace

StatusOr<EtcdClientOptions> EtcdClientOptionsFromConfig(const config::WitnessSection& witness) {
  EtcdClientOptions o;
  for (const std::string& url : witness.etcd_endpoints) {
    if (url.rfind("https://", 0) == 0) {
      o.tls = true;
      o.endpoints.push_back(url.substr(8));
    } else if (url.rfind("http://", 0) == 0) {
      o.endpoints.push_back(url.substr(7));
    } else {
      return absl::InvalidArgumentError("[witness] etcd_endpoints: not an http(s):// URL: " + url);
    }
  }
  if (o.tls) {
    if (!witness.tls_ca_file.empty()) {
      auto ca = ReadPem("tls_ca_file", witness.tls_ca_file);
      if (!ca.ok()) return ca.status();
      o.ca_pem = *std::move(ca);
    }
    if (!witness.tls_cert_file.empty()) {
      auto cert = ReadPem("tls_cert_file", witness.tls_cert_file);
      if (!cert.ok()) return cert.status();
      auto key = ReadPem("tls_key_file", witness.tls_key_file);
      if (!key.ok()) return key.status();
      o.cert_pem = *std::move(cert);
      o.key_pem = *std::move(key);
    }
  }
  o.request_timeout = std::chrono::milliseconds(witness.request_timeout_ms);
  return o;
}

struct EtcdClient::Endpoint {
  std::string address;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<etcdserverpb::KV::Stub> kv;
  std::unique_ptr<etcdserverpb::Lease::Stub> lease;
};

StatusOr<std::unique_ptr<EtcdClient>> EtcdClient::Create(EtcdClientOptions options,
                                                         const Clock& clock) {
  if (options.endpoints.empty()) return absl::InvalidArgumentError("etcd: no endpoint");
  if (options.cert_pem.empty() != options.key_pem.empty()) {
    return absl::InvalidArgumentError("etcd: a client certificate needs its key and vice versa");
  }
  return std::unique_ptr<EtcdClient>(new EtcdClient(std::move(options), clock));
}

EtcdClient::EtcdClient(EtcdClientOptions options, const Clock& clock)
    : options_(std::move(options)), clock_(clock) {
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (options_.tls) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options_.ca_pem;
    ssl.pem_private_key = options_.key_pem;
    ssl.pem_cert_chain = options_.cert_pem;
    creds = grpc::SslCredentials(ssl);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  grpc::ChannelArguments args;
  // After an outage (etcd restarted) reconnect within a second, not gRPC's default of up to
  // two minutes: the lease must be renewed well within its TTL.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // Separate connections per client object, so two clients (two witnesses in one process, as
  // in tests) do not share one subchannel's fate.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  for (const std::string& address : options_.endpoints) {
    auto e = std::make_unique<Endpoint>();
    e->address = address;
    e->channel = grpc::CreateCustomChannel(address, creds, args);
    e->kv = etcdserverpb::KV::NewStub(e->channel);
    e->lease = etcdserverpb::Lease::NewStub(e->channel);
    endpoints_.push_back(std::move(e));
  }
}

EtcdClient::~EtcdClient() = default;

std::string EtcdClient::preferred_endpoint() const {
  return endpoints_[preferred_.load() % endpoints_.size()]->address;
}

template <typename Response, typename Attempt>
StatusOr<Response> EtcdClient::Call(const char* method, Attempt attempt) {
  const size_t n = endpoints_.size();
  const size_t first = preferred_.load() % n;
  grpc::Status last;
  std::string last_address;
  for (size_t i = 0; i < n; ++i) {
    const size_t index = (first + i) % n;
    Endpoint& e = *endpoints_[index];
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + options_.request_timeout);
    Response response;
    const grpc::Status s = attempt(e, ctx, response);
    if (s.ok()) {
      preferred_.store(index);
      return response;
    }
    last = s;
    last_address = e.address;
    if (!TryNextEndpoint(s)) break;
  }
  std::string hint;
  if (options_.tls) hint = TlsRefusalHint(last, !options_.cert_pem.empty());
  return absl::Status(static_cast<absl::StatusCode>(last.error_code()),
                      "etcd " + last_address + " " + method + ": " + last.error_message() + hint);
}

StatusOr<etcdserverpb::RangeResponse> EtcdClient::Range(const etcdserverpb::RangeRequest& r) {
  return Call<etcdserverpb::RangeResponse>(
      "Range", [&](Endpoint& e, grpc::ClientContext& ctx, etcdserverpb::RangeResponse& out) {
        return e.kv->Range(&ctx, r, &out);
      });
}

StatusOr<etcdserverpb::PutResponse> EtcdClient::Put(const etcdserverpb::PutRequest& r) {
  return Call<etcdserverpb::PutResponse>(
      "Put", [&](Endpoint& e, grpc::ClientContext& ctx, etcdserverpb::PutResponse& out) {
        return e.kv->Put(&ctx, r, &out);
      });
}

StatusOr<etcdserverpb::DeleteRangeResponse> EtcdClient::DeleteRange(
    const etcdserverpb::DeleteRangeRequest& r) {
  return Call<etcdserverpb::DeleteRangeResponse>(
      "DeleteRange",
      [&](Endpoint& e, grpc::ClientContext& ctx, etcdserverpb::DeleteRangeResponse& out) {
        return e.kv->DeleteRange(&ctx, r, &out);
      });
}

StatusOr<etcdserverpb::TxnResponse> EtcdClient::Txn(const etcdserverpb::TxnRequest& r) {
  return Call<etcdserverpb::TxnResponse>(
      "Txn", [&](Endpoint& e, grpc::ClientContext& ctx, etcdserverpb::TxnResponse& out) {
        return e.kv->Txn(&ctx, r, &out);
      });
}

StatusOr<etcdserverpb::LeaseGrantResponse> EtcdClient::LeaseGrant(
    const etcdserverpb::LeaseGrantRequest& r) {
  auto response = Call<etcdserverpb::LeaseGrantResponse>(
      "LeaseGrant",
      [&](Endpoint& e, grpc::ClientContext& ctx, etcdserverpb::LeaseGrantResponse& out) {
        return e.lease->LeaseGrant(&ctx, r, &out);
      });
  if (response.ok() && !response->error().empty()) {
    return absl::UnavailableError("etcd LeaseGrant: " + response->error());
  }
  return response;
}

StatusOr<etcdserverpb::LeaseRevokeResponse> EtcdClient::LeaseRevoke(
    const etcdserverpb::LeaseRevokeRequest& r) {
  return Call<etcdserverpb::LeaseRevokeResponse>(
      "LeaseRevoke",
      [&](Endpoint& e, grpc::ClientContext& ctx, etcdserverpb::LeaseRevokeResponse& out) {
        return e.lease->LeaseRevoke(&ctx, r, &out);
      });
}

StatusOr<etcdserverpb::LeaseTimeToLiveResponse> EtcdClient::LeaseTimeToLive(
    const etcdserverpb::LeaseTimeToLiveRequest& r) {
  return Call<etcdserverpb::LeaseTimeToLiveResponse>(
      "LeaseTimeToLive",
      [&](Endpoint& e, grpc::ClientContext& ctx, etcdserverpb::LeaseTimeToLiveResponse& out) {
        return e.lease->LeaseTimeToLive(&ctx, r, &out);
      });
}

StatusOr<EtcdClient::KeepAliveResult> EtcdClient::KeepAliveOnce(int64_t lease_id) {
  Clock::TimePoint sent_at{};
  auto response = Call<etcdserverpb::LeaseKeepAliveResponse>(
      "LeaseKeepAlive",
      [&](Endpoint& e, grpc::ClientContext& ctx, etcdserverpb::LeaseKeepAliveResponse& out) {
        // Taken before anything reaches etcd: the renewal happens later than this.
        sent_at = clock_.Now();
        std::unique_ptr<grpc::ClientReaderWriter<etcdserverpb::LeaseKeepAliveRequest,
                                                 etcdserverpb::LeaseKeepAliveResponse>>
            stream = e.lease->LeaseKeepAlive(&ctx);
        etcdserverpb::LeaseKeepAliveRequest request;
        request.set_id(lease_id);
        bool answered = stream->Write(request) && stream->Read(&out);
        stream->WritesDone();
        grpc::Status s = stream->Finish();
        if (answered) return grpc::Status::OK;  // etcd ends the stream after our WritesDone
        if (s.ok()) {
          // The server closed the stream without answering.
          return grpc::Status(grpc::StatusCode::UNAVAILABLE, "keep-alive stream closed");
        }
        return s;
      });
  if (!response.ok()) return response.status();
  if (response->id() != lease_id) {
    return absl::InternalError("etcd LeaseKeepAlive: answer for lease " +
                               std::to_string(response->id()) + ", asked for " +
                               std::to_string(lease_id));
  }
  return KeepAliveResult{response->ttl(), sent_at};
}

}  // namespace novadt::witness
