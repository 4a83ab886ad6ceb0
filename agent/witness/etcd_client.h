// A small etcd v3 client over gRPC (proto/etcd: KV and Lease of etcd 3.4): one channel per
// endpoint, tried in order when one is unreachable, optional TLS, a deadline on every request.
// Used by the etcd witness (etcd_witness.h); the engine never sees it.
//
// Endpoint choice: a call goes to the endpoint that answered last (initially the first one).
// When that endpoint fails with UNAVAILABLE (refused, down, no leader) or does not answer within
// the request timeout, the call moves on to the next endpoint in the configured order, wrapping
// around, and tries every endpoint at most once; the endpoint that answers becomes the one used
// next. A call therefore takes at most endpoints x request_timeout. Retrying a write on another
// endpoint after a timeout may apply it twice: callers use guarded transactions (Txn compares)
// and treat a repeated outcome as theirs.
//
// Thread safety: every method may be called from any thread, concurrently.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "agent/common/clock.h"
#include "agent/common/status.h"
#include "agent/config/config.h"
#include "proto/etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"

namespace novadt::witness {

struct EtcdClientOptions {
  // "host:port" (no scheme), in the order they are tried. REQUIRES: not empty.
  std::vector<std::string> endpoints;
  // TLS towards every endpoint. The server certificate must name the endpoint's host.
  bool tls = false;
  // With tls: PEM CA bundle verifying the servers; empty: the system (gRPC default) roots.
  std::string ca_pem;
  // With tls: PEM client certificate and key for etcd's --client-cert-auth; both or neither.
  std::string cert_pem;
  std::string key_pem;
  // Deadline of one request on one endpoint.
  std::chrono::milliseconds request_timeout{1000};
};

// [witness] as client options: strips the scheme (https:// means TLS) and reads the PEM files.
// InvalidArgument naming the option and file when one is unreadable or holds no PEM block.
// REQUIRES: witness.enabled().
StatusOr<EtcdClientOptions> EtcdClientOptionsFromConfig(const config::WitnessSection& witness);

class EtcdClient final {
 public:
  // Creates the channels; contacts nobody (gRPC connects on first use).
  // InvalidArgument: no endpoint, or a client certificate without its key.
  static StatusOr<std::unique_ptr<EtcdClient>> Create(EtcdClientOptions options,
                                                      const Clock& clock);
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  // Each returns etcd's response, or the gRPC status of the last endpoint tried as an
  // absl::Status with the same code ("etcd <endpoint> <Method>: <message>"): Unavailable /
  // DeadlineExceeded when no endpoint answered; etcd's own errors keep etcd's code (e.g.
  // NotFound "etcdserver: requested lease not found" for a Put or Txn with a dead lease). Over
  // TLS, when etcd closed the connection right after the handshake (how it refuses a client
  // certificate it does not trust, or none), the message says to check the client certificate.
  StatusOr<etcdserverpb::RangeResponse> Range(const etcdserverpb::RangeRequest& request);
  StatusOr<etcdserverpb::PutResponse> Put(const etcdserverpb::PutRequest& request);
  StatusOr<etcdserverpb::DeleteRangeResponse> DeleteRange(
      const etcdserverpb::DeleteRangeRequest& request);
  StatusOr<etcdserverpb::TxnResponse> Txn(const etcdserverpb::TxnRequest& request);
  StatusOr<etcdserverpb::LeaseGrantResponse> LeaseGrant(
      const etcdserverpb::LeaseGrantRequest& request);
  // NotFound when the lease does not exist (any more).
  StatusOr<etcdserverpb::LeaseRevokeResponse> LeaseRevoke(
      const etcdserverpb::LeaseRevokeRequest& request);
  // TTL -1 in the response when the lease does not exist.
  StatusOr<etcdserverpb::LeaseTimeToLiveResponse> LeaseTimeToLive(
      const etcdserverpb::LeaseTimeToLiveRequest& request);

  // One renewal of lease `id` over a short-lived LeaseKeepAlive stream (one request, one
  // response, then the stream is closed), so that each renewal has its own deadline.
  struct KeepAliveResult {
    // The lease's TTL in seconds after the renewal; 0 when etcd no longer knows the lease
    // (expired or revoked).
    int64_t ttl_s = 0;
    // When the request that succeeded was sent (on the injected Clock). etcd restarts the
    // lease's TTL when it receives the request, so the lease lives at least until
    // sent_at + ttl_s.
    Clock::TimePoint sent_at{};
  };
  StatusOr<KeepAliveResult> KeepAliveOnce(int64_t lease_id);

  // The endpoint the next call goes to first ("host:port").
  std::string preferred_endpoint() const;

 private:
  struct Endpoint;
  EtcdClient(EtcdClientOptions options, const Clock& clock);

  // Runs `attempt` on each endpoint in turn from the preferred one, as described above.
  template <typename Response, typename Attempt>
  StatusOr<Response> Call(const char* method, Attempt attempt);

  const EtcdClientOptions options_;
  const Clock& clock_;
  std::vector<std::unique_ptr<Endpoint>> endpoints_;
  std::atomic<size_t> preferred_{0};
};

}  // namespace novadt::witness
