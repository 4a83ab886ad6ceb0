#include "agent/replica/store_sink.h"

#include <algorithm>
#include <functional>
#include <mutex>
#include <set>

#include "agent/common/logging.h"

namespace novadt::replica {
namespace {

// Servers with an open stream; shared by the factory and its sinks.
struct ActiveStreams {
  std::mutex mu;
  std::set<std::string> uuids;
};

// Largest zero buffer materialised at once for a "write zeroes" item.
constexpr uint64_t kZeroChunk = 1 << 20;

class StoreSink final : public core::ReplicaSink {
 public:
  StoreSink(std::string uuid, std::unique_ptr<ReplicaStore> store,
            std::shared_ptr<ActiveStreams> active, std::shared_ptr<const ReplicaEvents> events)
      : uuid_(std::move(uuid)), log_(uuid_), store_(std::move(store)),
        active_(std::move(active)), events_(std::move(events)) {}

  ~StoreSink() override {
    std::lock_guard<std::mutex> lock(active_->mu);
    active_->uuids.erase(uuid_);
  }

  Status BeginEpoch(uint64_t epoch) override {
    device_state_.clear();
    return store_->BeginEpoch(epoch);
  }
  Status AddPages(const core::RamPages& p) override {
    return store_->AddPages(p.page_index, p.data);
  }
  Status AddDiskWrite(const core::DiskWrite& w) override {
    if (!w.zeroes) return store_->AddDiskWrite(w.disk, w.offset, w.data);
    const std::string zeroes(std::min(w.length, kZeroChunk), '\0');
    for (uint64_t done = 0; done < w.length;) {
      const uint64_t n = std::min<uint64_t>(kZeroChunk, w.length - done);
      NOVA_DT_RETURN_IF_ERROR(
          store_->AddDiskWrite(w.disk, w.offset + done, std::string_view(zeroes).substr(0, n)));
      done += n;
    }
    return absl::OkStatus();
  }
  Status AddDeviceState(const core::DeviceStateChunk& c) override {
    // The store takes the blob whole (it goes straight to a file); chunks are joined here.
    device_state_ += c.data;
    if (!c.last) return absl::OkStatus();
    Status st = store_->SetDeviceState(device_state_);
    device_state_.clear();
    device_state_.shrink_to_fit();
    return st;
  }
  Status CommitEpoch(const core::EpochEnd& end) override {
    NOVA_DT_RETURN_IF_ERROR(store_->Commit());
    log_.Debug("replica committed epoch {}", end.epoch);
    if (events_->committed) events_->committed(uuid_, end.epoch);
    return absl::OkStatus();
  }
  void Close(const Status& why) override {
    store_->Abort();  // an epoch still open is dropped; the replica stays committed
    if (why.ok()) {
      log_.Info("replication stream closed at epoch {}", store_->committed_epoch());
    } else {
      log_.Warn("replication stream ended at epoch {}: {}", store_->committed_epoch(),
                why.ToString());
    }
    if (events_->closed) events_->closed(uuid_, why);
  }

 private:
  const std::string uuid_;
  const InstanceLog log_;
  std::unique_ptr<ReplicaStore> store_;
  std::shared_ptr<ActiveStreams> active_;
  std::shared_ptr<const ReplicaEvents> events_;
  std::string device_state_;
};

}  // namespace

core::ReplicaSinkFactory MakeStoreSinkFactory(std::string replica_path, ReplicaOptions options,
                                              ReplicaEvents events) {
  auto active = std::make_shared<ActiveStreams>();
  auto shared_events = std::make_shared<const ReplicaEvents>(std::move(events));
  return [replica_path = std::move(replica_path), options, active,
          shared_events](const core::StreamOpen& open)
             -> StatusOr<std::unique_ptr<core::ReplicaSink>> {
    {
      std::lock_guard<std::mutex> lock(active->mu);
      if (!active->uuids.insert(open.instance_uuid).second) {
        return absl::FailedPreconditionError("server " + open.instance_uuid +
                                             " is already being replicated to this host");
      }
    }
    auto release = [&] {
      std::lock_guard<std::mutex> lock(active->mu);
      active->uuids.erase(open.instance_uuid);
    };
    ReplicaGeometry geometry{open.ram_size_bytes, {}};
    for (const auto& d : open.disks) geometry.disks.push_back({d.name, d.size_bytes});
    const std::string dir = ReplicaDir(replica_path, open.instance_uuid);
    if (Status st = ReplicaStore::Destroy(dir); !st.ok()) {
      release();
      return st;
    }
    auto store = ReplicaStore::Create(dir, geometry, options);
    if (!store.ok()) {
      release();
      return store.status();
    }
    InstanceLog(open.instance_uuid)
        .Info("replica created in {} for a stream from {}", dir, open.primary_host);
    if (shared_events->opened) shared_events->opened(open.instance_uuid, open.primary_host);
    return std::unique_ptr<core::ReplicaSink>(
        new StoreSink(open.instance_uuid, *std::move(store), active, shared_events));
  };
}

}  // namespace novadt::replica
