// The NBD endpoint of stage I (agent/nbd/nbd_server.h) as QEMU's NBD client reaches it: every
// input is the byte stream of one client connection (client flags, handshake options, then
// transmission requests with their payloads), sent to a real NbdServer on a unix socket; the
// harness reads the server's replies until it closes the connection. The backend checks the
// server's side of the contract (block_backend.h): every request inside the export, payloads
// of the stated length. A server that stops answering is a crash here (after 10 s).
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "agent/nbd/block_backend.h"
#include "agent/nbd/nbd_server.h"
#include "fuzz/fuzz_check.h"

namespace {

using namespace novadt;
using namespace novadt::nbd;

constexpr uint64_t kExportBytes = 1 << 20;

// An in-memory export that checks every call against the backend contract.
class CheckingBackend final : public BlockBackend {
 public:
  uint64_t Size() const override { return bytes_.size(); }
  StatusOr<std::string> Read(uint64_t offset, uint32_t length) override {
    Check(offset, length, "read");
    return bytes_.substr(offset, length);
  }
  Status Write(uint64_t offset, std::string_view data, bool) override {
    Check(offset, data.size(), "write");
    bytes_.replace(offset, data.size(), data);
    return absl::OkStatus();
  }
  Status WriteZeroes(uint64_t offset, uint32_t length, bool) override {
    Check(offset, length, "write-zeroes");
    bytes_.replace(offset, length, length, '\0');
    return absl::OkStatus();
  }
  Status Flush() override { return absl::OkStatus(); }

 private:
  void Check(uint64_t offset, uint64_t length, const char* what) const {
    FUZZ_CHECK(offset <= bytes_.size() && length <= bytes_.size() - offset,
               "%s %llu+%llu beyond the %zu-byte export", what,
               static_cast<unsigned long long>(offset), static_cast<unsigned long long>(length),
               bytes_.size());
  }
  std::string bytes_ = std::string(kExportBytes, '\0');
};

std::string socket_path;

NbdServer& Server() {
  static NbdServer* server = [] {
    socket_path = "/tmp/nova-dt-fuzz-nbd-" + std::to_string(getpid()) + ".sock";
    auto backend = NewCapturingBackend(std::make_unique<CheckingBackend>(),
                                       [](const CapturedWrite& w) {
                                         FUZZ_CHECK(w.kind != CapturedWrite::Kind::kData ||
                                                        w.data.size() == w.length,
                                                    "captured write of the wrong length");
                                         return absl::OkStatus();
                                       });
    auto s = NbdServer::Create({.socket_path = socket_path,
                                .export_name = "vda",
                                .max_request_bytes = 256 << 10},
                               std::move(backend));
    FUZZ_CHECK(s.ok(), "cannot start the NBD server: %s", s.status().ToString().c_str());
    return s->release();
  }();
  // libFuzzer ends a timed run with exit(): static destructors then run while the server thread
  // may still log a disconnect, and spdlog's registry (made before the server, so destroyed
  // after this handler) must outlive it. Stop() joins that thread and removes the socket.
  static const bool stop_at_exit = [] { return std::atexit([] { server->Stop(); }) == 0; }();
  (void)stop_at_exit;
  return *server;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);  // a connection is logged at info, a bad one at warning
  Server();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Server();
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  FUZZ_CHECK(fd >= 0, "socket: %s", std::strerror(errno));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
  FUZZ_CHECK(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0,
             "connect: %s", std::strerror(errno));
  // Send the input while reading replies (a reply may be larger than the socket buffer), then
  // half-close and read until the server closes.
  size_t sent = 0;
  bool write_open = true;
  char buf[64 << 10];
  for (;;) {
    if (write_open && sent == size) {
      ::shutdown(fd, SHUT_WR);
      write_open = false;
    }
    pollfd p{fd, static_cast<short>(POLLIN | (write_open ? POLLOUT : 0)), 0};
    const int n = ::poll(&p, 1, 10000);
    FUZZ_CHECK(n != 0, "the NBD server stopped answering (%zu of %zu bytes sent)", sent, size);
    if (n < 0) continue;
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      const ssize_t r = ::read(fd, buf, sizeof buf);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) break;
    }
    if (write_open && (p.revents & POLLOUT)) {
      const ssize_t w = ::send(fd, data + sent, size - sent, MSG_NOSIGNAL);
      if (w > 0) {
        sent += static_cast<size_t>(w);
      } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
        write_open = false;  // the server closed the connection: read what is left
      }
    }
  }
  ::close(fd);
  return 0;
}
