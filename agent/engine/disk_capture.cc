#include "agent/engine/disk_capture.h"

#include <unistd.h>

#include <filesystem>
#include <mutex>
#include <thread>

#include "agent/nbd/block_backend.h"
#include "agent/nbd/nbd_server.h"

namespace novadt::engine {
namespace {

// Capture-only export: the bytes live in the capture buffer, not here.
class WriteOnlyBackend final : public nbd::BlockBackend {
 public:
  explicit WriteOnlyBackend(uint64_t size) : size_(size) {}
  uint64_t Size() const override { return size_; }
  StatusOr<std::string> Read(uint64_t, uint32_t length) override {
    return std::string(length, '\0');
  }
  Status Write(uint64_t, std::string_view, bool) override { return absl::OkStatus(); }
  Status WriteZeroes(uint64_t, uint32_t, bool) override { return absl::OkStatus(); }
  Status Flush() override { return absl::OkStatus(); }

 private:
  const uint64_t size_;
};

class NbdDiskCapture final : public DiskCapture {
 public:
  NbdDiskCapture(core::Hypervisor& hv, std::string uuid, std::vector<core::DiskGeometry> disks,
                 std::string socket_dir, FileOwner qemu)
      : hv_(hv),
        uuid_(std::move(uuid)),
        disks_(std::move(disks)),
        dir_(std::move(socket_dir)),
        qemu_(std::move(qemu)) {}
  ~NbdDiskCapture() override { Stop(); }

  Status Start(std::chrono::milliseconds timeout) override {
    const std::string root = std::filesystem::path(dir_).parent_path().string();
    if (!root.empty() && !std::filesystem::exists(root)) {
      NOVA_DT_RETURN_IF_ERROR(PrepareNbdSocketRoot(root, qemu_));
    }
    NOVA_DT_RETURN_IF_ERROR(MakeOwnedDir(dir_, ::geteuid(), qemu_.gid, 0710));
    if (Status st = CheckSearchable(dir_, qemu_); !st.ok()) {
      return absl::FailedPreconditionError("QEMU cannot connect to the disk capture in " + dir_ +
                                           ": " + std::string(st.message()));
    }
    for (const auto& disk : disks_) {
      const std::string socket = dir_ + "/" + disk.name + ".sock";
      auto backend = nbd::NewCapturingBackend(
          std::make_unique<WriteOnlyBackend>(disk.size_bytes),
          [this, name = disk.name](const nbd::CapturedWrite& w) { return Capture(name, w); });
      nbd::NbdServerOptions options;
      options.socket_path = socket;
      options.export_name = disk.name;
      options.socket_owner = qemu_;
      auto server = nbd::NbdServer::Create(options, std::move(backend));
      if (!server.ok()) {
        Stop();
        return server.status();
      }
      servers_.push_back(*std::move(server));
      if (Status st = hv_.StartDiskCapture(uuid_, disk.name, socket, disk.name); !st.ok()) {
        Stop();
        return st;
      }
      started_.push_back(disk.name);
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (const auto& disk : disks_) {
      for (;;) {
        auto ready = hv_.DiskCaptureReady(uuid_, disk.name);
        if (!ready.ok()) {
          Stop();
          return ready.status();
        }
        if (*ready) break;
        if (std::chrono::steady_clock::now() >= deadline) {
          Stop();
          return absl::DeadlineExceededError("disk " + disk.name +
                                             " did not reach the mirroring phase in time");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    return absl::OkStatus();
  }

  std::vector<core::DiskWrite> TakeWrites() override {
    std::lock_guard<std::mutex> lock(mu_);
    buffered_ = 0;
    return std::exchange(writes_, {});
  }

  uint64_t buffered_bytes() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return buffered_;
  }

  void Stop() override {
    for (const auto& name : started_) (void)hv_.StopDiskCapture(uuid_, name);
    started_.clear();
    for (auto& s : servers_) s->Stop();
    servers_.clear();
  }

 private:
  Status Capture(const std::string& disk, const nbd::CapturedWrite& w) {
    core::DiskWrite out{disk, w.offset, {}, false, 0};
    if (w.kind == nbd::CapturedWrite::Kind::kZeroes) {
      out.zeroes = true;
      out.length = w.length;
    } else {
      out.data.assign(w.data);
    }
    std::lock_guard<std::mutex> lock(mu_);
    buffered_ += out.zeroes ? 0 : out.data.size();
    writes_.push_back(std::move(out));
    return absl::OkStatus();
  }

  core::Hypervisor& hv_;
  const std::string uuid_;
  const std::vector<core::DiskGeometry> disks_;
  const std::string dir_;
  const FileOwner qemu_;
  std::vector<std::unique_ptr<nbd::NbdServer>> servers_;
  std::vector<std::string> started_;
  mutable std::mutex mu_;
  std::vector<core::DiskWrite> writes_;  // guarded by mu_
  uint64_t buffered_ = 0;                // guarded by mu_
};

}  // namespace

std::unique_ptr<DiskCapture> MakeNbdDiskCapture(core::Hypervisor& hv, std::string instance_uuid,
                                                std::vector<core::DiskGeometry> disks,
                                                std::string socket_dir, FileOwner qemu) {
  return std::make_unique<NbdDiskCapture>(hv, std::move(instance_uuid), std::move(disks),
                                          std::move(socket_dir), std::move(qemu));
}

Status PrepareNbdSocketRoot(const std::string& socket_root, const FileOwner& qemu) {
  std::error_code ec;
  std::filesystem::create_directories(socket_root, ec);
  if (ec) return absl::ErrnoToStatus(ec.value(), "mkdir " + socket_root);
  NOVA_DT_RETURN_IF_ERROR(MakeOwnedDir(socket_root, ::geteuid(), qemu.gid, 0710));
  if (Status st = CheckSearchable(socket_root, qemu); !st.ok()) {
    return absl::FailedPreconditionError("QEMU cannot reach the disk captures' sockets in " +
                                         socket_root + ": " + std::string(st.message()));
  }
  return absl::OkStatus();
}

}  // namespace novadt::engine
