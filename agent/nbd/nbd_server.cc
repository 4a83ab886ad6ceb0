#include "agent/nbd/nbd_server.h"

#include <endian.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/nbd/nbd_protocol.h"

namespace novadt::nbd {
namespace {

namespace p = proto;

// Longest option payload accepted during the handshake: a 4096-byte name plus info requests.
constexpr uint32_t kMaxOptionBytes = 64 * 1024;

constexpr uint16_t kTransmissionFlags =
    p::kTxHasFlags | p::kTxSendFlush | p::kTxSendFua | p::kTxSendWriteZeroes;

void Put16(std::string* s, uint16_t v) {
  v = htobe16(v);
  s->append(reinterpret_cast<const char*>(&v), sizeof v);
}
void Put32(std::string* s, uint32_t v) {
  v = htobe32(v);
  s->append(reinterpret_cast<const char*>(&v), sizeof v);
}
void Put64(std::string* s, uint64_t v) {
  v = htobe64(v);
  s->append(reinterpret_cast<const char*>(&v), sizeof v);
}
uint16_t Get16(const char* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return be16toh(v);
}
uint32_t Get32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return be32toh(v);
}
uint64_t Get64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return be64toh(v);
}

uint32_t NbdErrorFor(const Status& st) {
  switch (st.code()) {
    case absl::StatusCode::kOk:
      return 0;
    case absl::StatusCode::kResourceExhausted:
      return p::kEnospc;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return p::kEinval;
    case absl::StatusCode::kUnimplemented:
      return p::kEnotsup;
    case absl::StatusCode::kPermissionDenied:
      return p::kEperm;
    default:
      return p::kEio;
  }
}

// Why a connection ends without error: the client said goodbye (DISC, ABORT, EOF between
// requests). Everything else that ends a connection is logged as a warning.
bool IsCleanEnd(const Status& st) { return st.code() == absl::StatusCode::kCancelled; }

class NbdServerImpl;

// One client connection, served on the server thread. Every wait on the socket also watches
// the stop eventfd (to end promptly) and the listening socket (to refuse further clients).
class Connection {
 public:
  Connection(NbdServerImpl& server, int fd) : server_(server), fd_(fd) {}

  // Runs the handshake and the transmission phase until the client leaves, the protocol breaks
  // or the server stops. Returns why it ended.
  Status Serve();

 private:
  Status Handshake(bool* go);
  Status HandleInfoOrGo(uint32_t option, const std::string& data, bool* go);
  Status SendOptionReply(uint32_t option, uint32_t type, const std::string& data);
  Status Transmission();
  Status SendSimpleReply(uint64_t handle, uint32_t error, const std::string* data = nullptr);

  Status WaitReady(short events);
  Status ReadFull(void* buf, size_t n);
  Status WriteFull(const void* buf, size_t n);
  Status Discard(uint64_t n);

  NbdServerImpl& server_;
  const int fd_;
  bool no_zeroes_ = false;
};

class NbdServerImpl final : public NbdServer {
 public:
  NbdServerImpl(NbdServerOptions options, std::unique_ptr<BlockBackend> backend, int listen_fd,
                int wake_fd)
      : options_(std::move(options)),
        backend_(std::move(backend)),
        listen_fd_(listen_fd),
        wake_fd_(wake_fd) {
    thread_ = std::thread([this] { Run(); });
  }
  ~NbdServerImpl() override { Stop(); }

  void Stop() override {
    std::lock_guard<std::mutex> lock(stop_mu_);
    if (stopped_) return;
    stopped_ = true;
    uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
    if (thread_.joinable()) thread_.join();
    ::close(listen_fd_);
    ::close(wake_fd_);
    ::unlink(options_.socket_path.c_str());
  }

  const std::string& socket_path() const override { return options_.socket_path; }
  uint64_t connections_served() const override { return served_.load(); }

  const NbdServerOptions& options() const { return options_; }
  BlockBackend& backend() { return *backend_; }
  int listen_fd() const { return listen_fd_; }
  int wake_fd() const { return wake_fd_; }

  // Accepts one pending connection on the listening socket and closes it: the refusal of a
  // second client while one is served.
  void RefusePending() {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) {
      spdlog::warn("nbd {}: refused a second client while one is connected", options_.socket_path);
      ::close(fd);
    }
  }

 private:
  void Run() {
    pthread_setname_np(pthread_self(), "nbd-server");
    for (;;) {
      pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        spdlog::error("nbd {}: poll: {}", options_.socket_path, std::strerror(errno));
        return;
      }
      if (fds[1].revents != 0) return;
      if ((fds[0].revents & POLLIN) == 0) continue;
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) continue;  // the client went away already, or EMFILE: try again later
      served_.fetch_add(1);
      spdlog::info("nbd {}: client connected", options_.socket_path);
      Status st = Connection(*this, fd).Serve();
      ::close(fd);
      if (IsCleanEnd(st)) {
        spdlog::info("nbd {}: client disconnected: {}", options_.socket_path,
                     std::string(st.message()));
      } else {
        spdlog::warn("nbd {}: connection dropped: {}", options_.socket_path, st.ToString());
      }
    }
  }

  const NbdServerOptions options_;
  const std::unique_ptr<BlockBackend> backend_;
  const int listen_fd_;
  const int wake_fd_;
  std::atomic<uint64_t> served_{0};
  std::mutex stop_mu_;
  bool stopped_ = false;
  std::thread thread_;
};

Status Connection::WaitReady(short events) {
  for (;;) {
    pollfd fds[3] = {
        {fd_, events, 0}, {server_.wake_fd(), POLLIN, 0}, {server_.listen_fd(), POLLIN, 0}};
    if (::poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, "poll");
    }
    if (fds[1].revents != 0) return absl::AbortedError("server stopping");
    if (fds[2].revents & POLLIN) server_.RefusePending();
    if (fds[0].revents != 0) return Status();  // ready, or HUP/ERR for read/write to report
  }
}

Status Connection::ReadFull(void* buf, size_t n) {
  char* p = static_cast<char*>(buf);
  size_t done = 0;
  while (done < n) {
    NOVA_DT_RETURN_IF_ERROR(WaitReady(POLLIN));
    ssize_t r = ::read(fd_, p + done, n - done);
    if (r == 0) {
      // EOF before a message starts is a client leaving; inside one it is a broken client.
      return done == 0 ? absl::CancelledError("client closed the connection")
                       : absl::DataLossError("client closed the connection mid-message");
    }
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return absl::ErrnoToStatus(errno, "read");
    }
    done += r;
  }
  return Status();
}

Status Connection::WriteFull(const void* buf, size_t n) {
  const char* p = static_cast<const char*>(buf);
  size_t done = 0;
  while (done < n) {
    NOVA_DT_RETURN_IF_ERROR(WaitReady(POLLOUT));
    ssize_t r = ::send(fd_, p + done, n - done, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return absl::ErrnoToStatus(errno, "send");
    }
    done += r;
  }
  return Status();
}

Status Connection::Discard(uint64_t n) {
  std::vector<char> sink(std::min<uint64_t>(n, 1 << 20));
  while (n > 0) {
    size_t chunk = std::min<uint64_t>(n, sink.size());
    Status st = ReadFull(sink.data(), chunk);
    if (!st.ok()) return IsCleanEnd(st) ? absl::DataLossError("EOF in write payload") : st;
    n -= chunk;
  }
  return Status();
}

Status Connection::Serve() {
  bool go = false;
  NOVA_DT_RETURN_IF_ERROR(Handshake(&go));
  if (!go) return absl::CancelledError("client ended the handshake");
  return Transmission();
}

Status Connection::SendOptionReply(uint32_t option, uint32_t type, const std::string& data) {
  std::string msg;
  Put64(&msg, p::kOptReplyMagic);
  Put32(&msg, option);
  Put32(&msg, type);
  Put32(&msg, static_cast<uint32_t>(data.size()));
  msg += data;
  return WriteFull(msg.data(), msg.size());
}

Status Connection::Handshake(bool* go) {
  std::string hello;
  Put64(&hello, p::kNbdMagic);
  Put64(&hello, p::kIHaveOpt);
  Put16(&hello, p::kFlagFixedNewstyle | p::kFlagNoZeroes);
  NOVA_DT_RETURN_IF_ERROR(WriteFull(hello.data(), hello.size()));

  char buf[16];
  Status st = ReadFull(buf, 4);
  if (!st.ok()) return IsCleanEnd(st) ? absl::DataLossError("EOF before client flags") : st;
  uint32_t client_flags = Get32(buf);
  if ((client_flags & p::kFlagFixedNewstyle) == 0 ||
      (client_flags & ~uint32_t{p::kFlagFixedNewstyle | p::kFlagNoZeroes}) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported client flags 0x", absl::Hex(client_flags)));
  }
  no_zeroes_ = (client_flags & p::kFlagNoZeroes) != 0;

  const NbdServerOptions& opts = server_.options();
  for (;;) {
    st = ReadFull(buf, 16);
    if (!st.ok()) return IsCleanEnd(st) ? absl::DataLossError("EOF during handshake") : st;
    if (Get64(buf) != p::kIHaveOpt) return absl::InvalidArgumentError("bad option magic");
    uint32_t option = Get32(buf + 8);
    uint32_t length = Get32(buf + 12);
    if (length > kMaxOptionBytes) {
      return absl::InvalidArgumentError(absl::StrCat("option ", option, " too long: ", length));
    }
    std::string data(length, '\0');
    NOVA_DT_RETURN_IF_ERROR(ReadFull(data.data(), length));

    switch (option) {
      case p::kOptExportName: {
        // No way to refuse by reply here: an unknown name closes the connection.
        if (!data.empty() && data != opts.export_name) {
          return absl::NotFoundError("EXPORT_NAME for unknown export '" + data + "'");
        }
        std::string reply;
        Put64(&reply, server_.backend().Size());
        Put16(&reply, kTransmissionFlags);
        if (!no_zeroes_) reply.append(124, '\0');
        NOVA_DT_RETURN_IF_ERROR(WriteFull(reply.data(), reply.size()));
        *go = true;
        return Status();
      }
      case p::kOptAbort:
        // The protocol asks for an ACK; the client may already be gone, so ignore failures.
        (void)SendOptionReply(option, p::kRepAck, "");
        *go = false;
        return Status();
      case p::kOptList: {
        if (length != 0) {
          NOVA_DT_RETURN_IF_ERROR(SendOptionReply(option, p::kRepErrInvalid, "LIST takes no data"));
          break;
        }
        std::string entry;
        Put32(&entry, static_cast<uint32_t>(opts.export_name.size()));
        entry += opts.export_name;
        NOVA_DT_RETURN_IF_ERROR(SendOptionReply(option, p::kRepServer, entry));
        NOVA_DT_RETURN_IF_ERROR(SendOptionReply(option, p::kRepAck, ""));
        break;
      }
      case p::kOptInfo:
      case p::kOptGo:
        NOVA_DT_RETURN_IF_ERROR(HandleInfoOrGo(option, data, go));
        if (*go) return Status();
        break;
      default:
        // STRUCTURED_REPLY, meta contexts, STARTTLS and anything newer: the client falls back.
        NOVA_DT_RETURN_IF_ERROR(SendOptionReply(option, p::kRepErrUnsup, "unsupported option"));
        break;
    }
  }
}

Status Connection::HandleInfoOrGo(uint32_t option, const std::string& data, bool* go) {
  // Payload: u32 name length, name, u16 count of info requests, u16 each.
  const char* d = data.data();
  size_t size = data.size();
  if (size < 6) return SendOptionReply(option, p::kRepErrInvalid, "short INFO/GO request");
  uint32_t name_len = Get32(d);
  if (name_len > size - 6) return SendOptionReply(option, p::kRepErrInvalid, "bad name length");
  std::string name(d + 4, name_len);
  uint16_t n_requests = Get16(d + 4 + name_len);
  if (size != 4 + name_len + 2 + 2 * size_t{n_requests}) {
    return SendOptionReply(option, p::kRepErrInvalid, "bad info request count");
  }
  const NbdServerOptions& opts = server_.options();
  if (!name.empty() && name != opts.export_name) {
    return SendOptionReply(option, p::kRepErrUnknown, "unknown export");
  }
  bool want_block_size = false;
  bool want_name = false;
  for (uint16_t i = 0; i < n_requests; ++i) {
    uint16_t type = Get16(d + 4 + name_len + 2 + 2 * i);
    if (type == p::kInfoBlockSize) want_block_size = true;
    if (type == p::kInfoName) want_name = true;
  }
  std::string info;
  Put16(&info, p::kInfoExport);
  Put64(&info, server_.backend().Size());
  Put16(&info, kTransmissionFlags);
  NOVA_DT_RETURN_IF_ERROR(SendOptionReply(option, p::kRepInfo, info));
  if (want_block_size) {
    info.clear();
    Put16(&info, p::kInfoBlockSize);
    Put32(&info, 1);     // minimum: any byte granularity
    Put32(&info, 4096);  // preferred
    Put32(&info, opts.max_request_bytes);
    NOVA_DT_RETURN_IF_ERROR(SendOptionReply(option, p::kRepInfo, info));
  }
  if (want_name) {
    info.clear();
    Put16(&info, p::kInfoName);
    info += opts.export_name;
    NOVA_DT_RETURN_IF_ERROR(SendOptionReply(option, p::kRepInfo, info));
  }
  NOVA_DT_RETURN_IF_ERROR(SendOptionReply(option, p::kRepAck, ""));
  *go = option == p::kOptGo;
  return Status();
}

Status Connection::SendSimpleReply(uint64_t handle, uint32_t error, const std::string* data) {
  std::string hdr;
  Put32(&hdr, p::kSimpleReplyMagic);
  Put32(&hdr, error);
  Put64(&hdr, handle);
  if (data == nullptr || error != 0) return WriteFull(hdr.data(), hdr.size());
  // One buffer so that header and data leave in one send for small reads.
  hdr += *data;
  return WriteFull(hdr.data(), hdr.size());
}

Status Connection::Transmission() {
  BlockBackend& backend = server_.backend();
  const uint64_t size = backend.Size();
  const uint32_t max_len = server_.options().max_request_bytes;
  char req[p::kRequestSize];
  std::string payload;
  for (;;) {
    NOVA_DT_RETURN_IF_ERROR(ReadFull(req, sizeof req));
    uint32_t magic = Get32(req);
    if (magic != p::kRequestMagic) {
      return absl::InvalidArgumentError(absl::StrCat("bad request magic 0x", absl::Hex(magic)));
    }
    uint16_t flags = Get16(req + 4);
    uint16_t type = Get16(req + 6);
    uint64_t handle = Get64(req + 8);
    uint64_t offset = Get64(req + 16);
    uint32_t length = Get32(req + 24);
    const bool fua = (flags & p::kCmdFlagFua) != 0;
    const bool in_range = offset <= size && length <= size - offset;

    switch (type) {
      case p::kCmdRead: {
        uint32_t error = 0;
        StatusOr<std::string> data;
        if ((flags & ~p::kCmdFlagFua) != 0 || length > max_len || !in_range) {
          error = p::kEinval;
        } else {
          data = backend.Read(offset, length);
          if (!data.ok()) {
            spdlog::warn("nbd: read {}+{} failed: {}", offset, length, data.status().ToString());
            error = NbdErrorFor(data.status());
          } else if (data->size() != length) {
            error = p::kEio;
          }
        }
        NOVA_DT_RETURN_IF_ERROR(SendSimpleReply(handle, error, error ? nullptr : &*data));
        break;
      }
      case p::kCmdWrite: {
        if (length > max_len) {
          NOVA_DT_RETURN_IF_ERROR(Discard(length));
          NOVA_DT_RETURN_IF_ERROR(SendSimpleReply(handle, p::kEinval));
          break;
        }
        payload.resize(length);
        Status st = ReadFull(payload.data(), length);
        if (!st.ok()) return IsCleanEnd(st) ? absl::DataLossError("EOF in write payload") : st;
        uint32_t error = 0;
        if ((flags & ~p::kCmdFlagFua) != 0) {
          error = p::kEinval;
        } else if (!in_range) {
          error = p::kEnospc;
        } else if (Status w = backend.Write(offset, payload, fua); !w.ok()) {
          spdlog::warn("nbd: write {}+{} failed: {}", offset, length, w.ToString());
          error = NbdErrorFor(w);
        }
        // Replying only now is the synchronous-capture contract (block_backend.h).
        NOVA_DT_RETURN_IF_ERROR(SendSimpleReply(handle, error));
        break;
      }
      case p::kCmdWriteZeroes: {
        uint32_t error = 0;
        if ((flags & ~(p::kCmdFlagFua | p::kCmdFlagNoHole)) != 0) {
          error = p::kEinval;
        } else if (!in_range) {
          error = p::kEnospc;
        } else if (Status w = backend.WriteZeroes(offset, length, fua); !w.ok()) {
          spdlog::warn("nbd: write-zeroes {}+{} failed: {}", offset, length, w.ToString());
          error = NbdErrorFor(w);
        }
        NOVA_DT_RETURN_IF_ERROR(SendSimpleReply(handle, error));
        break;
      }
      case p::kCmdFlush: {
        uint32_t error = 0;
        if (Status f = backend.Flush(); !f.ok()) {
          spdlog::warn("nbd: flush failed: {}", f.ToString());
          error = NbdErrorFor(f);
        }
        NOVA_DT_RETURN_IF_ERROR(SendSimpleReply(handle, error));
        break;
      }
      case p::kCmdDisc:
        return absl::CancelledError("client sent NBD_CMD_DISC");
      default:
        // TRIM (not advertised), CACHE, BLOCK_STATUS, RESIZE, unknown: none carries a payload.
        NOVA_DT_RETURN_IF_ERROR(SendSimpleReply(handle, p::kEinval));
        break;
    }
  }
}

}  // namespace

StatusOr<std::unique_ptr<NbdServer>> NbdServer::Create(const NbdServerOptions& options,
                                                       std::unique_ptr<BlockBackend> backend) {
  sockaddr_un addr{};
  if (options.socket_path.empty() || options.socket_path.size() >= sizeof addr.sun_path) {
    return absl::InvalidArgumentError("bad NBD socket path '" + options.socket_path + "'");
  }
  if (options.export_name.size() > 4096) {
    return absl::InvalidArgumentError("NBD export name longer than 4096 bytes");
  }
  if (options.max_request_bytes == 0) {
    return absl::InvalidArgumentError("max_request_bytes must be positive");
  }
  if (backend == nullptr) return absl::InvalidArgumentError("no backend");

  struct stat st;
  if (::lstat(options.socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(options.socket_path + " exists and is not a socket");
    }
    ::unlink(options.socket_path.c_str());  // stale socket of an earlier run
  }

  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::ErrnoToStatus(errno, "socket");
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, options.socket_path.data(), options.socket_path.size());
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    Status s = absl::ErrnoToStatus(errno, "bind " + options.socket_path);
    ::close(fd);
    return s;
  }
  // Before listen(): nobody can connect until the socket is its owner's alone. (fchown/fchmod
  // on a socket fd would change the socket, not the file.)
  const FileOwner& owner = options.socket_owner;
  if ((!owner.keeps() && ::chown(options.socket_path.c_str(), owner.uid, owner.gid) != 0) ||
      ::chmod(options.socket_path.c_str(), 0600) != 0 || ::listen(fd, 8) != 0) {
    Status s = absl::ErrnoToStatus(errno, "chown/chmod/listen " + options.socket_path);
    ::close(fd);
    ::unlink(options.socket_path.c_str());
    return s;
  }
  int wake = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake < 0) {
    Status s = absl::ErrnoToStatus(errno, "eventfd");
    ::close(fd);
    ::unlink(options.socket_path.c_str());
    return s;
  }
  return std::unique_ptr<NbdServer>(new NbdServerImpl(options, std::move(backend), fd, wake));
}

}  // namespace novadt::nbd
