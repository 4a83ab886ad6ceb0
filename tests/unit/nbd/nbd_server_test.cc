#include "agent/nbd/nbd_server.h"

#include <endian.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "agent/nbd/nbd_protocol.h"
#include "tests/support/test_util.h"
#include "tests/unit/nbd/fake_backend.h"

namespace novadt::nbd {
namespace {

namespace p = proto;
using novadt::testing::ReadFile;
using novadt::testing::RunCommand;
using novadt::testing::ScratchDir;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr uint64_t kDiskSize = 4 << 20;

std::string Uri(const std::string& socket, const std::string& export_name = "vda") {
  return "nbd+unix:///" + export_name + "?socket=" + socket;
}

// A minimal NBD client over a raw socket, to send what QEMU never would.
class RawClient {
 public:
  ~RawClient() { Close(); }

  bool Connect(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    timeval tv{5, 0};  // a test must not hang on a server that does not answer
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  bool Send(const std::string& bytes) {
    return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(bytes.size());
  }
  // Reads exactly n bytes; false on EOF, error or timeout.
  bool Recv(size_t n, std::string* out) {
    out->assign(n, '\0');
    size_t done = 0;
    while (done < n) {
      ssize_t r = ::recv(fd_, out->data() + done, n - done, 0);
      if (r <= 0) return false;
      done += r;
    }
    return true;
  }
  // True when the server closed the connection within the receive timeout: EOF, or a reset
  // when it closed with our unread garbage still queued.
  bool SeesEof() {
    char c;
    ssize_t r = ::recv(fd_, &c, 1, 0);
    return r == 0 || (r < 0 && errno == ECONNRESET);
  }

  // Fixed newstyle handshake with NBD_OPT_GO; returns the export size, or 0 on failure.
  uint64_t Handshake(const std::string& export_name) {
    std::string hello;
    if (!Recv(18, &hello) || Get64(hello, 0) != p::kNbdMagic || Get64(hello, 8) != p::kIHaveOpt) {
      return 0;
    }
    std::string msg;
    Put32(&msg, p::kFlagFixedNewstyle | p::kFlagNoZeroes);
    Put64(&msg, p::kIHaveOpt);
    Put32(&msg, p::kOptGo);
    Put32(&msg, 4 + export_name.size() + 2);
    Put32(&msg, export_name.size());
    msg += export_name;
    Put16(&msg, 0);
    if (!Send(msg)) return 0;
    uint64_t size = 0;
    for (;;) {
      std::string hdr, data;
      if (!Recv(20, &hdr) || !Recv(Get32(hdr, 16), &data)) return 0;
      uint32_t type = Get32(hdr, 12);
      if (type == p::kRepAck) return size;
      if (type != p::kRepInfo) return 0;
      if (Get16(data, 0) == p::kInfoExport) size = Get64(data, 2);
    }
  }

  // Sends one request; returns the reply's error (-1 when the reply did not arrive).
  int64_t Request(uint16_t type, uint64_t offset, uint32_t length, const std::string& payload = "",
                  std::string* read_data = nullptr, uint16_t flags = 0) {
    std::string req;
    Put32(&req, p::kRequestMagic);
    Put16(&req, flags);
    Put16(&req, type);
    Put64(&req, ++handle_);
    Put64(&req, offset);
    Put32(&req, length);
    req += payload;
    if (!Send(req)) return -1;
    std::string reply;
    if (!Recv(16, &reply) || Get32(reply, 0) != p::kSimpleReplyMagic ||
        Get64(reply, 8) != handle_) {
      return -1;
    }
    uint32_t error = Get32(reply, 4);
    if (error == 0 && type == p::kCmdRead) {
      std::string data;
      if (!Recv(length, &data)) return -1;
      if (read_data) *read_data = data;
    }
    return error;
  }

  static void Put16(std::string* s, uint16_t v) {
    v = htobe16(v);
    s->append(reinterpret_cast<char*>(&v), 2);
  }
  static void Put32(std::string* s, uint32_t v) {
    v = htobe32(v);
    s->append(reinterpret_cast<char*>(&v), 4);
  }
  static void Put64(std::string* s, uint64_t v) {
    v = htobe64(v);
    s->append(reinterpret_cast<char*>(&v), 8);
  }
  static uint16_t Get16(const std::string& s, size_t at) {
    uint16_t v;
    std::memcpy(&v, s.data() + at, 2);
    return be16toh(v);
  }
  static uint32_t Get32(const std::string& s, size_t at) {
    uint32_t v;
    std::memcpy(&v, s.data() + at, 4);
    return be32toh(v);
  }
  static uint64_t Get64(const std::string& s, size_t at) {
    uint64_t v;
    std::memcpy(&v, s.data() + at, 8);
    return be64toh(v);
  }

 private:
  int fd_ = -1;
  uint64_t handle_ = 0;
};

class NbdServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    socket_ = dir_.path() + "/nbd.sock";
    disk_ = dir_.Write("disk.raw", std::string(kDiskSize, '\0'));
  }

  // Serves disk_ through a CapturingBackend that records every write in captured_.
  void StartFileServer(uint32_t max_request_bytes = 32 << 20) {
    auto file = OpenRawFileBackend(disk_);
    ASSERT_TRUE(file.ok()) << file.status();
    auto capturing = NewCapturingBackend(std::move(*file), [this](const CapturedWrite& w) {
      std::lock_guard<std::mutex> lock(mu_);
      captured_.push_back({w.kind, w.offset, w.length, std::string(w.data), w.fua});
      return Status();
    });
    Start(std::move(capturing), max_request_bytes);
  }

  void Start(std::unique_ptr<BlockBackend> backend, uint32_t max_request_bytes = 32 << 20) {
    NbdServerOptions opts;
    opts.socket_path = socket_;
    opts.export_name = "vda";
    opts.max_request_bytes = max_request_bytes;
    auto server = NbdServer::Create(opts, std::move(backend));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  // Runs qemu-io against the export; returns its exit code, output in *out.
  int QemuIo(const std::vector<std::string>& commands, std::string* out,
             const std::string& export_name = "vda") {
    // Writeback, so that only "write -f" carries FUA (writethrough sets FUA on every write).
    std::vector<std::string> argv = {"qemu-io", "-f", "raw", "-t", "writeback"};
    for (const auto& c : commands) {
      argv.push_back("-c");
      argv.push_back(c);
    }
    argv.push_back(Uri(socket_, export_name));
    return RunCommand(argv, out, std::chrono::seconds(30));
  }

  struct Captured {
    CapturedWrite::Kind kind;
    uint64_t offset;
    uint32_t length;
    std::string data;
    bool fua;
  };
  // Applies the captured writes, in order, to a zeroed image: what a replica would hold.
  std::string Replay() {
    std::lock_guard<std::mutex> lock(mu_);
    std::string image(kDiskSize, '\0');
    for (const auto& w : captured_) {
      if (w.kind == CapturedWrite::Kind::kData) {
        image.replace(w.offset, w.data.size(), w.data);
      } else {
        image.replace(w.offset, w.length, std::string(w.length, '\0'));
      }
    }
    return image;
  }

  ScratchDir dir_;
  std::string socket_;
  std::string disk_;
  std::unique_ptr<NbdServer> server_;
  std::mutex mu_;
  std::vector<Captured> captured_;
};

TEST_F(NbdServerTest, QemuImgInfoShowsTheSize) {
  StartFileServer();
  std::string out;
  ASSERT_EQ(RunCommand({"qemu-img", "info", "--output=json", Uri(socket_)}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("\"virtual-size\": 4194304"));
}

TEST_F(NbdServerTest, QemuIoWritesReadsAndFlushes) {
  StartFileServer();
  std::string out;
  ASSERT_EQ(QemuIo({"write -P 0xab 0 64k", "read -P 0xab 0 64k", "flush", "write -P 0xcd -f 1m 4k",
                    "write -z 8k 4k"},
                   &out),
            0)
      << out;
  EXPECT_THAT(out, Not(HasSubstr("failed")));
  EXPECT_THAT(out, Not(HasSubstr("Pattern verification")));
  std::string expected(kDiskSize, '\0');
  expected.replace(0, 64 << 10, std::string(64 << 10, '\xab'));
  expected.replace(1 << 20, 4096, std::string(4096, '\xcd'));
  expected.replace(8192, 4096, std::string(4096, '\0'));
  EXPECT_EQ(ReadFile(disk_), expected);
}

TEST_F(NbdServerTest, CapturesEveryWriteInOrder) {
  StartFileServer();
  std::string out;
  ASSERT_EQ(QemuIo({"write -P 0x11 0 4k", "write -P 0x22 2k 4k", "write -P 0x33 3m 512",
                    "write -P 0x44 -f 4095k 1k", "write -z 1k 1k"},
                   &out),
            0)
      << out;
  std::lock_guard<std::mutex> lock(mu_);
  ASSERT_EQ(captured_.size(), 5u);
  const std::vector<std::pair<uint64_t, char>> want = {
      {0, 0x11}, {2048, 0x22}, {3 << 20, 0x33}, {4095 << 10, 0x44}};
  const std::vector<uint32_t> lengths = {4096, 4096, 512, 1024};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(captured_[i].kind, CapturedWrite::Kind::kData) << i;
    EXPECT_EQ(captured_[i].offset, want[i].first) << i;
    EXPECT_EQ(captured_[i].data, std::string(lengths[i], want[i].second)) << i;
  }
  EXPECT_FALSE(captured_[0].fua);
  EXPECT_TRUE(captured_[3].fua);  // qemu-io write -f sends NBD_CMD_FLAG_FUA
  EXPECT_EQ(captured_[4].kind, CapturedWrite::Kind::kZeroes);
  EXPECT_EQ(captured_[4].offset, 1024u);
  EXPECT_EQ(captured_[4].length, 1024u);
}

TEST_F(NbdServerTest, QemuImgConvertCopiesAWholeImage) {
  std::mt19937 rng(42);
  std::string src(kDiskSize, '\0');
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<char>(rng());
  src.replace(1 << 20, 512 << 10, std::string(512 << 10, '\0'));  // a zero run to copy too
  std::string src_path = dir_.Write("src.raw", src);
  // The target starts non-zero, so the zero run must really be written.
  disk_ = dir_.Write("disk.raw", std::string(kDiskSize, '\x5a'));
  StartFileServer();

  std::string out;
  ASSERT_EQ(
      RunCommand({"qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src_path, Uri(socket_)},
                 &out, std::chrono::seconds(60)),
      0)
      << out;
  EXPECT_TRUE(ReadFile(disk_) == src) << "backing file differs from the source";
  // The captured stream alone rebuilds the image (the target started as 0x5a everywhere, so
  // every byte must have been captured for this to hold).
  EXPECT_TRUE(Replay() == src) << "replaying the captured writes does not give the source";
}

TEST_F(NbdServerTest, WritesBeyondTheEndFailAndTheServerKeepsServing) {
  StartFileServer(/*max_request_bytes=*/64 << 10);
  std::string out;
  EXPECT_NE(QemuIo({"write -P 0x01 4m 4k"}, &out), 0);  // starts at the end
  EXPECT_THAT(out, HasSubstr("write failed"));

  // QEMU checks bounds itself, so check the server's own answers with a raw client.
  RawClient raw;
  ASSERT_TRUE(raw.Connect(socket_));
  ASSERT_EQ(raw.Handshake("vda"), kDiskSize);
  EXPECT_EQ(raw.Request(p::kCmdWrite, kDiskSize - 512, 1024, std::string(1024, 'x')), p::kEnospc);
  EXPECT_EQ(raw.Request(p::kCmdWriteZeroes, kDiskSize, 1), p::kEnospc);
  EXPECT_EQ(raw.Request(p::kCmdRead, kDiskSize - 1, 2), p::kEinval);
  EXPECT_EQ(raw.Request(p::kCmdRead, ~uint64_t{0} - 10, 100), p::kEinval);  // wraps around
  // Over max_request_bytes: refused, and a write's payload is skipped so the stream stays in sync.
  EXPECT_EQ(raw.Request(p::kCmdRead, 0, 128 << 10), p::kEinval);
  EXPECT_EQ(raw.Request(p::kCmdWrite, 0, 128 << 10, std::string(128 << 10, 'y')), p::kEinval);
  EXPECT_EQ(raw.Request(p::kCmdTrim, 0, 4096), p::kEinval);  // not advertised
  EXPECT_EQ(raw.Request(p::kCmdWrite, 0, 3, "abc"), 0);
  std::string data;
  EXPECT_EQ(raw.Request(p::kCmdRead, 0, 3, "", &data), 0);
  EXPECT_EQ(data, "abc");
  EXPECT_EQ(raw.Request(p::kCmdFlush, 0, 0), 0);
  EXPECT_EQ(raw.Request(p::kCmdDisc, 0, 0), -1);  // no reply to DISC, the server closes
  raw.Close();

  ASSERT_EQ(QemuIo({"read -P 0x61 0 1", "write -P 0x02 0 4k"}, &out), 0) << out;
  EXPECT_THAT(out, Not(HasSubstr("failed")));
  EXPECT_EQ(ReadFile(disk_).substr(0, 4096), std::string(4096, '\x02'));
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& w : captured_) EXPECT_LE(w.offset + w.length, kDiskSize);
}

TEST_F(NbdServerTest, GarbageClientIsDroppedAndTheNextOneIsServed) {
  StartFileServer();
  {  // garbage instead of the handshake
    RawClient raw;
    ASSERT_TRUE(raw.Connect(socket_));
    std::string hello;
    ASSERT_TRUE(raw.Recv(18, &hello));
    ASSERT_TRUE(raw.Send(std::string(64, '\x7f')));
    EXPECT_TRUE(raw.SeesEof());
  }
  {  // garbage after a good handshake: bad request magic
    RawClient raw;
    ASSERT_TRUE(raw.Connect(socket_));
    ASSERT_EQ(raw.Handshake("vda"), kDiskSize);
    ASSERT_TRUE(raw.Send(std::string(28, 'G')));
    EXPECT_TRUE(raw.SeesEof());
  }
  {  // a client that goes away mid-request
    RawClient raw;
    ASSERT_TRUE(raw.Connect(socket_));
    ASSERT_EQ(raw.Handshake("vda"), kDiskSize);
    std::string partial;
    RawClient::Put32(&partial, p::kRequestMagic);
    ASSERT_TRUE(raw.Send(partial));
  }
  std::string out;
  ASSERT_EQ(QemuIo({"write -P 0xee 0 4k", "read -P 0xee 0 4k"}, &out), 0) << out;
  EXPECT_THAT(out, Not(HasSubstr("failed")));
}

TEST_F(NbdServerTest, UnknownExportIsRefusedAndListShowsTheExport) {
  StartFileServer();
  std::string out;
  EXPECT_NE(RunCommand({"qemu-img", "info", Uri(socket_, "other")}, &out), 0);
  // qemu-nbd --list drives NBD_OPT_LIST and NBD_OPT_INFO.
  ASSERT_EQ(RunCommand({"qemu-nbd", "--list", "-k", socket_}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("export: 'vda'"));
  EXPECT_THAT(out, HasSubstr("size:  4194304"));
  // The default export ("") is the export.
  ASSERT_EQ(RunCommand({"qemu-img", "info", Uri(socket_, "")}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("4 MiB"));
}

TEST_F(NbdServerTest, OldStyleExportNameAndUnsupportedOptions) {
  StartFileServer();
  RawClient raw;
  ASSERT_TRUE(raw.Connect(socket_));
  std::string hello;
  ASSERT_TRUE(raw.Recv(18, &hello));
  EXPECT_EQ(RawClient::Get16(hello, 16), p::kFlagFixedNewstyle | p::kFlagNoZeroes);
  std::string msg;
  RawClient::Put32(&msg, p::kFlagFixedNewstyle);  // no NO_ZEROES: expect 124 zero bytes
  for (uint32_t opt : {p::kOptStructuredReply, p::kOptStartTls, uint32_t{12345}}) {
    RawClient::Put64(&msg, p::kIHaveOpt);
    RawClient::Put32(&msg, opt);
    RawClient::Put32(&msg, 0);
  }
  RawClient::Put64(&msg, p::kIHaveOpt);
  RawClient::Put32(&msg, p::kOptExportName);
  RawClient::Put32(&msg, 3);
  msg += "vda";
  ASSERT_TRUE(raw.Send(msg));
  for (uint32_t opt : {p::kOptStructuredReply, p::kOptStartTls, uint32_t{12345}}) {
    std::string reply, text;
    ASSERT_TRUE(raw.Recv(20, &reply));
    EXPECT_EQ(RawClient::Get64(reply, 0), p::kOptReplyMagic);
    EXPECT_EQ(RawClient::Get32(reply, 8), opt);
    EXPECT_EQ(RawClient::Get32(reply, 12), p::kRepErrUnsup);
    ASSERT_TRUE(raw.Recv(RawClient::Get32(reply, 16), &text));
  }
  std::string export_info;
  ASSERT_TRUE(raw.Recv(8 + 2 + 124, &export_info));
  EXPECT_EQ(RawClient::Get64(export_info, 0), kDiskSize);
  EXPECT_EQ(RawClient::Get16(export_info, 8),
            p::kTxHasFlags | p::kTxSendFlush | p::kTxSendFua | p::kTxSendWriteZeroes);
  EXPECT_EQ(export_info.substr(10), std::string(124, '\0'));
  EXPECT_EQ(raw.Request(p::kCmdWrite, 4096, 2, "hi", nullptr, p::kCmdFlagFua), 0);
  std::lock_guard<std::mutex> lock(mu_);
  ASSERT_EQ(captured_.size(), 1u);
  EXPECT_TRUE(captured_[0].fua);
}

TEST_F(NbdServerTest, SecondClientIsRefusedWhileOneIsConnected) {
  StartFileServer();
  RawClient first;
  ASSERT_TRUE(first.Connect(socket_));
  ASSERT_EQ(first.Handshake("vda"), kDiskSize);

  std::string out;
  EXPECT_NE(RunCommand({"qemu-img", "info", Uri(socket_)}, &out, std::chrono::seconds(20)), 0);
  EXPECT_EQ(first.Request(p::kCmdWrite, 0, 2, "ok"), 0);  // the first one is still served

  first.Close();
  ASSERT_EQ(RunCommand({"qemu-img", "info", Uri(socket_)}, &out), 0) << out;
  EXPECT_EQ(server_->connections_served(), 2u);
}

TEST_F(NbdServerTest, StopWhileAClientIsConnectedIsPrompt) {
  StartFileServer();
  RawClient in_handshake;
  RawClient in_transmission;
  ASSERT_TRUE(in_transmission.Connect(socket_));
  ASSERT_EQ(in_transmission.Handshake("vda"), kDiskSize);
  ASSERT_TRUE(in_handshake.Connect(socket_));  // queued or refused; must not block Stop()

  auto start = std::chrono::steady_clock::now();
  server_->Stop();
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, std::chrono::seconds(1));
  EXPECT_TRUE(in_transmission.SeesEof());
  struct stat st;
  EXPECT_NE(::lstat(socket_.c_str(), &st), 0) << "socket file left behind";
  server_->Stop();  // idempotent
}

TEST_F(NbdServerTest, BackendEnospcFailsTheWriteWithNoSpace) {
  auto mem = std::make_unique<MemoryBackend>(kDiskSize);
  MemoryBackend* backend = mem.get();
  Start(std::move(mem));
  backend->FailWrites(absl::ErrnoToStatus(ENOSPC, "disk full"));
  std::string out;
  EXPECT_NE(QemuIo({"write -P 0xab 0 64k"}, &out), 0);
  EXPECT_THAT(out, HasSubstr("No space left on device"));

  backend->FailWrites(absl::ErrnoToStatus(EIO, "bad sector"));
  backend->FailReads(absl::ErrnoToStatus(EIO, "bad sector"));
  QemuIo({"write -P 0xab 0 4k", "read 0 4k"}, &out);
  EXPECT_THAT(out, HasSubstr("write failed: Input/output error"));
  EXPECT_THAT(out, HasSubstr("read failed: Input/output error"));

  backend->FailWrites(Status());
  backend->FailReads(Status());
  ASSERT_EQ(QemuIo({"write -P 0xab 0 4k", "read -P 0xab 0 4k"}, &out), 0) << out;
  EXPECT_THAT(out, Not(HasSubstr("failed")));
  EXPECT_EQ(backend->data().substr(0, 4096), std::string(4096, '\xab'));
}

// A QMP client good enough for a test: one command at a time, events skipped, replies matched by
// substring.
class Qmp {
 public:
  ~Qmp() {
    if (fd_ >= 0) ::close(fd_);
  }
  // False (and may be called again) while QEMU does not accept connections yet: its socket
  // file appears (bind) before it listens.
  bool Connect(const std::string& path) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    timeval tv{20, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd_);
      fd_ = -1;
      return false;
    }
    return ReadLine().find("\"QMP\"") != std::string::npos &&
           Execute(R"({"execute": "qmp_capabilities"})").find("return") != std::string::npos;
  }
  // Sends one command and returns its reply line ("" when none came).
  std::string Execute(const std::string& json) {
    std::string line = json + "\n";
    if (::send(fd_, line.data(), line.size(), MSG_NOSIGNAL) < 0) return "";
    for (;;) {
      std::string reply = ReadLine();
      if (reply.empty() || reply.find("\"event\"") == std::string::npos) return reply;
    }
  }

 private:
  std::string ReadLine() {
    for (;;) {
      size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      char chunk[4096];
      ssize_t r = ::recv(fd_, chunk, sizeof chunk, 0);
      if (r <= 0) return "";
      buf_.append(chunk, r);
    }
  }
  int fd_ = -1;
  std::string buf_;
};

// Stage I's real use: QEMU's blockdev-mirror with copy-mode=write-blocking (what libvirt's
// blockcopy --synchronous-writes runs) into the export. A write through the mirrored drive must
// be in the captured stream by the time QEMU completes it.
TEST_F(NbdServerTest, QemuWriteBlockingMirrorCapturesWritesBeforeTheyComplete) {
  std::mt19937 rng(7);
  std::string src(kDiskSize, '\0');
  for (auto& c : src) c = static_cast<char>(rng());
  std::string src_path = dir_.Write("src.raw", src);
  disk_ = dir_.Write("disk.raw", std::string(kDiskSize, '\x5a'));
  StartFileServer();

  std::string qmp_path = dir_.path() + "/qmp.sock";
  novadt::testing::Subprocess qemu(
      {"qemu-system-x86_64", "-M", "none", "-nodefaults", "-no-user-config", "-display", "none",
       "-qmp", "unix:" + qmp_path + ",server=on,wait=off", "-drive",
       "file=" + src_path + ",format=raw,if=none,id=drive0"},
      dir_.path() + "/qemu.log");
  Qmp qmp;
  ASSERT_TRUE(novadt::testing::WaitFor([&] { return qmp.Connect(qmp_path); },
                                       std::chrono::seconds(20)))
      << ReadFile(dir_.path() + "/qemu.log");

  std::string r = qmp.Execute(
      R"({"execute": "blockdev-add", "arguments": {"driver": "nbd", "node-name": "tgt",)"
      R"( "export": "vda", "server": {"type": "unix", "path": ")" +
      socket_ + R"("}}})");
  ASSERT_THAT(r, HasSubstr("return")) << r;
  r = qmp.Execute(
      R"({"execute": "blockdev-mirror", "arguments": {"job-id": "m", "device": "drive0",)"
      R"( "target": "tgt", "sync": "full", "copy-mode": "write-blocking"}})");
  ASSERT_THAT(r, HasSubstr("return")) << r;
  ASSERT_TRUE(novadt::testing::WaitFor(
      [&] {
        return qmp.Execute(R"({"execute": "query-block-jobs"})").find("\"ready\": true") !=
               std::string::npos;
      },
      std::chrono::seconds(30)));
  EXPECT_TRUE(ReadFile(disk_) == src) << "mirror READY but the target differs from the source";

  r = qmp.Execute(R"({"execute": "human-monitor-command", "arguments": {"command-line":)"
                  R"( "qemu-io drive0 \"write -P 0x77 1M 64k\""}})");
  // HMP qemu-io prints its result on QEMU's stdout, not in the reply; the data checks below tell.
  ASSERT_EQ(r.find("error"), std::string::npos) << r;
  // No waiting: the write completed in QEMU, so the agent must have captured it already.
  EXPECT_TRUE(Replay().substr(1 << 20, 64 << 10) == std::string(64 << 10, '\x77'))
      << "a completed guest write is not in the captured stream";
  src.replace(1 << 20, 64 << 10, std::string(64 << 10, '\x77'));

  r = qmp.Execute(R"({"execute": "block-job-cancel", "arguments": {"device": "m"}})");
  ASSERT_THAT(r, HasSubstr("return")) << r;
  ASSERT_TRUE(novadt::testing::WaitFor(
      [&] {
        return qmp.Execute(R"({"execute": "query-block-jobs"})").find("\"return\": []") !=
               std::string::npos;
      },
      std::chrono::seconds(30)));
  r = qmp.Execute(R"({"execute": "blockdev-del", "arguments": {"node-name": "tgt"}})");
  EXPECT_THAT(r, HasSubstr("return")) << r;
  qmp.Execute(R"({"execute": "quit"})");
  EXPECT_TRUE(qemu.Wait(std::chrono::seconds(20)).has_value());

  EXPECT_TRUE(ReadFile(src_path) == src);
  EXPECT_TRUE(ReadFile(disk_) == src) << "target differs from the source after the mirror";
  EXPECT_TRUE(Replay() == src) << "the captured stream does not rebuild the source";
}

TEST(NbdServerCreateTest, RejectsBadOptionsAndReplacesAStaleSocket) {
  ScratchDir dir;
  NbdServerOptions opts;
  opts.export_name = "vda";
  opts.socket_path = dir.Write("not-a-socket", "x");
  EXPECT_EQ(NbdServer::Create(opts, std::make_unique<MemoryBackend>(4096)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  opts.socket_path = dir.path() + "/" + std::string(200, 's');
  EXPECT_EQ(NbdServer::Create(opts, std::make_unique<MemoryBackend>(4096)).status().code(),
            absl::StatusCode::kInvalidArgument);

  opts.socket_path = dir.path() + "/nbd.sock";
  {
    auto first = NbdServer::Create(opts, std::make_unique<MemoryBackend>(4096));
    ASSERT_TRUE(first.ok()) << first.status();
    // Simulate a crash: the socket file stays, the server is gone.
    std::string copy = opts.socket_path + ".keep";
    ASSERT_EQ(::link(opts.socket_path.c_str(), copy.c_str()), 0);
    (*first)->Stop();
    ASSERT_EQ(::rename(copy.c_str(), opts.socket_path.c_str()), 0);
  }
  auto second = NbdServer::Create(opts, std::make_unique<MemoryBackend>(4096));
  ASSERT_TRUE(second.ok()) << second.status();
  std::string out;
  ASSERT_EQ(RunCommand({"qemu-img", "info", Uri(opts.socket_path)}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("4 KiB"));
}

}  // namespace
}  // namespace novadt::nbd
