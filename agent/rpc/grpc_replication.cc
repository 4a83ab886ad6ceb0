#include "agent/rpc/grpc_replication.h"

#include <pthread.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "agent/common/identifiers.h"
#include "agent/common/logging.h"
#include "agent/core/replica_basis.h"
#include "agent/core/replication_receiver.h"
#include "agent/rpc/convert.h"

namespace novadt::rpc {
namespace {

using nova_dt::v1::ReplicationAck;
using nova_dt::v1::ReplicationMessage;

int64_t NowUnixUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A proto data message as a core stream item; heartbeats and opens are handled by the caller.
core::StreamItem ItemFromProto(const ReplicationMessage& m) {
  switch (m.body_case()) {
    case ReplicationMessage::kBegin:
      return core::EpochBegin{m.begin().epoch()};
    case ReplicationMessage::kPages:
      return core::RamPages{{m.pages().page_index().begin(), m.pages().page_index().end()},
                            m.pages().data()};
    case ReplicationMessage::kDiskWrite: {
      const auto& w = m.disk_write();
      return core::DiskWrite{w.disk(), w.offset(), w.data(), w.zeroes(), w.length()};
    }
    case ReplicationMessage::kBootFile:
      return core::BootFileChunk{m.boot_file().name(), m.boot_file().offset(),
                                 m.boot_file().data()};
    case ReplicationMessage::kDeviceState:
      return core::DeviceStateChunk{m.device_state().data(), m.device_state().last(),
                                    static_cast<core::DeviceStateEncoding>(m.device_state().encoding())};
    default: {
      const auto& e = m.end();
      return core::EpochEnd{e.epoch(), e.pages(), e.disk_writes(), e.device_state_bytes()};
    }
  }
}

// `call()`, with an exception turned into Internal: what a peer sends must never end the agent.
template <typename T, typename F>
StatusOr<T> GuardedCall(const char* what, F&& call) {
  try {
    return call();
  } catch (const std::exception& e) {
    spdlog::error("{} failed with an exception: {}", what, e.what());
    return absl::InternalError(std::string(what) + " failed: " + e.what());
  }
}

// Hashes per BasisChunk: 1 MiB of them.
constexpr size_t kHashesPerChunk = 64 << 10;

void AppendHashes(const core::ContentHash* h, size_t n, std::string& out) {
  for (size_t i = 0; i < n; ++i) {
    for (uint64_t word : {h[i].low, h[i].high}) {
      for (int b = 0; b < 8; ++b) out.push_back(static_cast<char>(word >> (8 * b)));
    }
  }
}

uint64_t LittleEndian64(const char* p) {
  uint64_t v = 0;
  for (int b = 7; b >= 0; --b) v = (v << 8) | static_cast<uint8_t>(p[b]);
  return v;
}

// Adds one chunk's hashes to `out` at its `first`; InvalidArgument if they do not fit.
Status ReadHashes(const nova_dt::v1::BasisChunk& c, std::vector<core::ContentHash>& out) {
  const std::string& bytes = c.hashes();
  if (bytes.size() % 16 != 0 || c.first() > out.size() ||
      bytes.size() / 16 > out.size() - c.first()) {
    return absl::InvalidArgumentError("basis chunk of \"" + Printable(c.disk()) + "\" at " +
                                      std::to_string(c.first()) + " does not fit the basis");
  }
  for (size_t i = 0; i < bytes.size() / 16; ++i) {
    out[c.first() + i] = {LittleEndian64(bytes.data() + 16 * i),
                          LittleEndian64(bytes.data() + 16 * i + 8)};
  }
  return absl::OkStatus();
}

}  // namespace

grpc::Status ServeBasis(
    grpc::ServerContext* ctx, const nova_dt::v1::BasisRequest& request,
    grpc::ServerWriter<nova_dt::v1::BasisChunk>* writer,
    const std::function<StatusOr<core::ReplicaBasis>(const std::string&, const std::string&)>&
        basis,
    const PeerCredentials& credentials) {
  if (Status who = credentials.Authorize(*ctx, request.host()); !who.ok()) {
    spdlog::warn("basis request from {} refused: {}", ctx->peer(), std::string(who.message()));
    return ToGrpc(who);
  }
  if (Status bad = ValidateInstanceUuid(request.instance_uuid()); !bad.ok()) return ToGrpc(bad);
  StatusOr<core::ReplicaBasis> b = GuardedCall<core::ReplicaBasis>(
      "basis", [&] { return basis(request.host(), request.instance_uuid()); });
  if (!b.ok()) return ToGrpc(b.status());
  nova_dt::v1::BasisChunk head;
  head.set_basis_id(b->id);
  head.set_ram_size_bytes(b->ram_size_bytes);
  for (const auto& d : b->disks) {
    auto* o = head.add_disks();
    o->set_name(d.name);
    o->set_size_bytes(d.size_bytes);
  }
  head.set_disk_block_bytes(core::kBasisBlockSize);
  // The first chunk carries the head (every basis has RAM, so there is one).
  nova_dt::v1::BasisChunk next = head;
  const auto send = [&](const std::string& disk, const std::vector<core::ContentHash>& hashes) {
    for (size_t from = 0; from < hashes.size(); from += kHashesPerChunk) {
      nova_dt::v1::BasisChunk c;
      c.Swap(&next);
      c.set_basis_id(b->id);
      c.set_disk(disk);
      c.set_first(from);
      const size_t n = std::min(kHashesPerChunk, hashes.size() - from);
      AppendHashes(hashes.data() + from, n, *c.mutable_hashes());
      if (!writer->Write(c)) return false;
    }
    return true;
  };
  if (!send("", b->ram_pages)) return grpc::Status(grpc::StatusCode::CANCELLED, "caller left");
  for (const auto& d : b->disks) {
    if (!send(d.name, b->disk_blocks.at(d.name))) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "caller left");
    }
  }
  return grpc::Status::OK;
}

grpc::Status ServeReplicationStream(
    grpc::ServerContext* ctx, grpc::ServerReaderWriter<ReplicationAck, ReplicationMessage>* stream,
    const core::ReplicaSinkFactory& factory, std::chrono::milliseconds heartbeat_interval,
    const PeerCredentials& credentials, const core::StreamLimits& limits) {
  ReplicationMessage msg;
  if (!stream->Read(&msg)) return grpc::Status(grpc::StatusCode::CANCELLED, "stream ended before StreamOpen");
  if (msg.body_case() != ReplicationMessage::kOpen) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "first message is not StreamOpen");
  }
  if (Status who = credentials.Authorize(*ctx, msg.open().primary_host()); !who.ok()) {
    spdlog::warn("replication stream from {} ({}) refused: {}",
                 Printable(msg.open().primary_host()), ctx->peer(), std::string(who.message()));
    return ToGrpc(who);
  }
  auto receiver = GuardedCall<std::unique_ptr<core::ReplicationReceiver>>("stream open", [&] {
    return core::ReplicationReceiver::Start(FromProto(msg.open()), factory, limits);
  });
  if (!receiver.ok()) {
    spdlog::warn("replication stream from {} for {} refused: {}", msg.open().primary_host(),
                 Printable(msg.open().instance_uuid()), receiver.status().ToString());
    return ToGrpc(receiver.status());
  }
  const InstanceLog log((*receiver)->open().instance_uuid);
  log.Info("replication stream from {} opened", (*receiver)->open().primary_host);

  // Acks (this thread) and heartbeats (helper thread) share the stream's write side.
  std::mutex write_mu;
  std::condition_variable stop_cv;
  bool stopping = false;
  auto write = [&](const ReplicationAck& ack) {
    std::lock_guard<std::mutex> lock(write_mu);
    return stream->Write(ack);
  };
  std::thread heartbeats([&] {
    pthread_setname_np(pthread_self(), "repl-heartbeat");
    std::unique_lock<std::mutex> lock(write_mu);
    while (!stop_cv.wait_for(lock, heartbeat_interval, [&] { return stopping; })) {
      ReplicationAck hb;
      hb.mutable_heartbeat()->set_sent_unix_us(NowUnixUs());
      if (!stream->Write(hb)) break;
    }
  });

  Status result;
  while (result.ok()) {
    if (!stream->Read(&msg)) {
      if (ctx->IsCancelled()) result = absl::CancelledError("primary cancelled the stream");
      break;
    }
    (*receiver)->Heard();
    if (msg.body_case() == ReplicationMessage::kHeartbeat) {
      if (msg.heartbeat().sync() == 0) continue;
      // Every message before it has been handled on this thread: answer the barrier.
      ReplicationAck synced;
      synced.mutable_heartbeat()->set_sent_unix_us(NowUnixUs());
      synced.mutable_heartbeat()->set_sync(msg.heartbeat().sync());
      if (!write(synced)) result = absl::UnavailableError("cannot send ack to the primary");
      continue;
    }
    if (msg.body_case() == ReplicationMessage::kOpen || msg.body_case() == ReplicationMessage::BODY_NOT_SET) {
      result = absl::InvalidArgumentError(msg.body_case() == ReplicationMessage::kOpen
                                              ? "second StreamOpen on one stream"
                                              : "empty ReplicationMessage");
      break;
    }
    auto acked = GuardedCall<std::optional<uint64_t>>(
        "replication item", [&] { return (*receiver)->Handle(ItemFromProto(msg)); });
    if (!acked.ok()) {
      result = acked.status();
    } else if (acked->has_value()) {
      ReplicationAck ack;
      ack.mutable_committed()->set_epoch(**acked);
      if (!write(ack)) result = absl::UnavailableError("cannot send ack to the primary");
    }
  }
  {
    std::lock_guard<std::mutex> lock(write_mu);
    stopping = true;
  }
  stop_cv.notify_all();
  heartbeats.join();
  (*receiver)->Close(result);
  if (!result.ok()) log.Warn("replication stream ended: {}", result.ToString());
  return ToGrpc(result);
}

namespace {

class GrpcEpochStream final : public core::EpochStream {
 public:
  GrpcEpochStream(nova_dt::v1::Peer::Stub* stub, core::EpochStreamCallbacks callbacks)
      : callbacks_(std::move(callbacks)) {
    stream_ = stub->Replicate(&ctx_);
  }

  ~GrpcEpochStream() override {
    Cancel();
    if (!reader_.joinable()) return;
    // The last owner may drop the stream from inside on_done, i.e. on the reader thread, which
    // touches nothing of the stream after on_done returns.
    if (reader_.get_id() == std::this_thread::get_id()) {
      reader_.detach();
    } else {
      reader_.join();
    }
  }

  // Sends the StreamOpen and starts reading acks.
  Status Start(const core::StreamOpen& open) {
    ReplicationMessage m;
    ToProto(open, m.mutable_open());
    const bool sent = stream_->Write(m);
    reader_ = std::thread([this] { ReadAcks(); });
    pthread_setname_np(reader_.native_handle(), "repl-acks");
    return sent ? absl::OkStatus() : Terminal();
  }

  Status Send(const core::StreamItem& item) override {
    ReplicationMessage m;
    ToProto(item, &m);
    return stream_->Write(m) ? absl::OkStatus() : Terminal();
  }

  Status Heartbeat() override {
    ReplicationMessage m;
    m.mutable_heartbeat()->set_sent_unix_us(NowUnixUs());
    return stream_->Write(m) ? absl::OkStatus() : Terminal();
  }

  Status Sync(uint64_t token) override {
    ReplicationMessage m;
    m.mutable_heartbeat()->set_sent_unix_us(NowUnixUs());
    m.mutable_heartbeat()->set_sync(token);
    return stream_->Write(m) ? absl::OkStatus() : Terminal();
  }

  Status Finish(std::chrono::milliseconds timeout) override {
    stream_->WritesDone();
    std::unique_lock<std::mutex> lock(mu_);
    if (!done_cv_.wait_for(lock, timeout, [this] { return done_; })) {
      lock.unlock();
      ctx_.TryCancel();
      return absl::DeadlineExceededError("backup did not end the stream in time");
    }
    return final_;
  }

  void Cancel() override { ctx_.TryCancel(); }

 private:
  void ReadAcks() {
    ReplicationAck ack;
    while (stream_->Read(&ack)) {
      if (!callbacks_.on_ack) continue;
      if (ack.body_case() == ReplicationAck::kCommitted) {
        callbacks_.on_ack({core::StreamAck::Kind::kCommitted, ack.committed().epoch()});
      } else if (ack.heartbeat().sync() != 0) {
        callbacks_.on_ack({core::StreamAck::Kind::kSynced, ack.heartbeat().sync()});
      } else {
        callbacks_.on_ack({core::StreamAck::Kind::kHeartbeat, 0});
      }
    }
    const Status st = FromGrpc(stream_->Finish());
    {
      std::lock_guard<std::mutex> lock(mu_);
      final_ = st;
      done_ = true;
    }
    done_cv_.notify_all();
    if (callbacks_.on_done) callbacks_.on_done(st);
  }

  // A failed Write means the stream is over; its status comes from Finish() on the reader.
  Status Terminal() {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait_for(lock, std::chrono::seconds(5), [this] { return done_; });
    if (!done_) return absl::UnavailableError("replication stream broken");
    return final_.ok() ? absl::UnavailableError("replication stream closed") : final_;
  }

  grpc::ClientContext ctx_;
  core::EpochStreamCallbacks callbacks_;
  std::unique_ptr<grpc::ClientReaderWriter<ReplicationMessage, ReplicationAck>> stream_;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable done_cv_;
  bool done_ = false;
  Status final_;
};

class GrpcReplicationLink final : public core::ReplicationLink {
 public:
  GrpcReplicationLink(std::shared_ptr<const PeerCredentials> credentials,
                      std::map<std::string, std::string> hosts_by_address)
      : credentials_(std::move(credentials)), hosts_(std::move(hosts_by_address)) {}

  StatusOr<std::unique_ptr<core::EpochStream>> Open(const std::string& address,
                                                    const core::StreamOpen& open,
                                                    core::EpochStreamCallbacks callbacks) override {
    auto stub = Stub(address);
    if (!stub.ok()) return stub.status();
    auto stream = std::make_unique<GrpcEpochStream>(*stub, std::move(callbacks));
    NOVA_DT_RETURN_IF_ERROR(stream->Start(open));
    return std::unique_ptr<core::EpochStream>(std::move(stream));
  }

  StatusOr<core::ReplicaBasis> Basis(const std::string& address, const core::StreamOpen& open,
                                     std::chrono::milliseconds timeout) override {
    auto stub = Stub(address);
    if (!stub.ok()) return stub.status();
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + timeout);
    nova_dt::v1::BasisRequest request;
    request.set_host(open.primary_host);
    request.set_instance_uuid(open.instance_uuid);
    auto reader = (*stub)->Basis(&ctx, request);
    core::ReplicaBasis basis;
    nova_dt::v1::BasisChunk c;
    bool head = true;
    Status bad;
    while (bad.ok() && reader->Read(&c)) {
      if (head) {
        head = false;
        // Checked before anything is allocated for it: a basis describes exactly this server's
        // geometry (what the backup says is outside input).
        std::vector<core::DiskGeometry> disks;
        for (const auto& d : c.disks()) disks.push_back({d.name(), d.size_bytes()});
        if (c.ram_size_bytes() != open.ram_size_bytes || disks != open.disks) {
          bad = absl::FailedPreconditionError("the backup's replica has another geometry");
          break;
        }
        if (c.disk_block_bytes() != core::kBasisBlockSize) {
          bad = absl::InvalidArgumentError("basis with blocks of " +
                                           std::to_string(c.disk_block_bytes()) + " bytes");
          break;
        }
        basis.id = c.basis_id();
        basis.ram_size_bytes = c.ram_size_bytes();
        basis.disks = std::move(disks);
        for (const auto& d : basis.disks) {
          basis.disk_blocks[d.name].resize(core::BasisBlockCount(d.size_bytes));
        }
        basis.ram_pages.resize(basis.ram_size_bytes / core::kGuestPageSize);
      }
      if (c.basis_id() != basis.id) {
        bad = absl::InvalidArgumentError("basis chunks of two bases");
      } else if (c.disk().empty()) {
        bad = ReadHashes(c, basis.ram_pages);
      } else if (auto it = basis.disk_blocks.find(c.disk()); it != basis.disk_blocks.end()) {
        bad = ReadHashes(c, it->second);
      } else {
        bad = absl::InvalidArgumentError("basis chunk of unknown disk " + Printable(c.disk()));
      }
    }
    if (!bad.ok()) {
      ctx.TryCancel();  // nothing more of it is read
      (void)reader->Finish();
      return bad;
    }
    NOVA_DT_RETURN_IF_ERROR(FromGrpc(reader->Finish()));
    if (head) return absl::InvalidArgumentError("empty basis");
    NOVA_DT_RETURN_IF_ERROR(basis.Validate());
    return basis;
  }

  Status Release(const std::string& address, const core::StreamOpen& open,
                 std::chrono::milliseconds timeout) override {
    auto stub = Stub(address);
    if (!stub.ok()) return stub.status();
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + timeout);
    nova_dt::v1::ReleaseRequest request;
    request.set_host(open.primary_host);
    request.set_instance_uuid(open.instance_uuid);
    nova_dt::v1::ReleaseReply reply;
    return FromGrpc((*stub)->Release(&ctx, request, &reply));
  }

 private:
  // The stub of the peer at `address` (one channel per address, kept). With TLS the address
  // must be a configured peer's, whose host its certificate must name: InvalidArgument if not.
  StatusOr<nova_dt::v1::Peer::Stub*> Stub(const std::string& address) {
    auto host = hosts_.find(address);
    if (credentials_->tls() && host == hosts_.end()) {
      return absl::InvalidArgumentError("no configured peer host for " + address +
                                        ": cannot verify its certificate");
    }
    std::lock_guard<std::mutex> lock(mu_);
    auto& stub = stubs_[address];
    if (!stub) {
      grpc::ChannelArguments args;
      args.SetMaxSendMessageSize(kMaxPeerMessageBytes);
      args.SetMaxReceiveMessageSize(kMaxPeerMessageBytes);
      stub = nova_dt::v1::Peer::NewStub(
          credentials_->Channel(address, host == hosts_.end() ? "" : host->second, args));
    }
    return stub.get();
  }

  const std::shared_ptr<const PeerCredentials> credentials_;
  const std::map<std::string, std::string> hosts_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<nova_dt::v1::Peer::Stub>> stubs_;
};

}  // namespace

std::unique_ptr<core::ReplicationLink> MakeGrpcReplicationLink(
    std::shared_ptr<const PeerCredentials> credentials,
    std::map<std::string, std::string> hosts_by_address) {
  return std::make_unique<GrpcReplicationLink>(std::move(credentials),
                                               std::move(hosts_by_address));
}

}  // namespace novadt::rpc
