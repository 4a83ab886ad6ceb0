#include "agent/replica/store_sink.h"

#include <algorithm>
#include <filesystem>
#include <random>

#include "agent/common/logging.h"

namespace novadt::replica {
namespace {

// Largest zero buffer materialised at once for a "write zeroes" item.
constexpr uint64_t kZeroChunk = 1 << 20;

}  // namespace

class ReplicaRegistry::Sink final : public core::ReplicaSink {
 public:
  Sink(const ReplicaRegistry& registry, std::string uuid, std::unique_ptr<ReplicaStore> store,
       std::shared_ptr<Entry> entry, uint64_t stream_id)
      : registry_(registry), uuid_(std::move(uuid)), log_(uuid_), store_(std::move(store)),
        entry_(std::move(entry)), stream_id_(stream_id) {
    std::lock_guard<std::mutex> lock(entry_->mu);
    if (entry_->stream_id == stream_id_) entry_->store = store_.get();
  }

  ~Sink() override {
    std::lock_guard<std::mutex> lock(entry_->mu);
    if (entry_->stream_id != stream_id_) return;  // superseded: the entry is the new sink's
    entry_->store = nullptr;
    entry_->streaming = false;
  }

  void OnPrimaryHeard() override {
    if (registry_.events_.heard) registry_.events_.heard(uuid_);
  }
  Status BeginEpoch(uint64_t epoch) override {
    return Apply([&] {
      device_state_.clear();
      return store_->BeginEpoch(epoch);
    });
  }
  Status AddPages(const core::RamPages& p) override {
    return Apply([&] { return store_->AddPages(p.page_index, p.data); });
  }
  Status AddDiskWrite(const core::DiskWrite& w) override {
    return Apply([&]() -> Status {
      if (!w.zeroes) return store_->AddDiskWrite(w.disk, w.offset, w.data);
      const std::string zeroes(std::min(w.length, kZeroChunk), '\0');
      for (uint64_t done = 0; done < w.length;) {
        const uint64_t n = std::min<uint64_t>(kZeroChunk, w.length - done);
        NOVA_DT_RETURN_IF_ERROR(
            store_->AddDiskWrite(w.disk, w.offset + done, std::string_view(zeroes).substr(0, n)));
        done += n;
      }
      return absl::OkStatus();
    });
  }
  Status AddDeviceState(const core::DeviceStateChunk& c) override {
    return Apply([&]() -> Status {
      // The store takes the blob whole (it goes straight to a file); chunks are joined here.
      device_state_ += c.data;
      if (!c.last) return absl::OkStatus();
      Status st = store_->SetDeviceState(device_state_);
      device_state_.clear();
      device_state_.shrink_to_fit();
      return st;
    });
  }
  Status CommitEpoch(const core::EpochEnd& end) override {
    NOVA_DT_RETURN_IF_ERROR(Apply([&] { return store_->Commit(); }));
    log_.Debug("replica committed epoch {}", end.epoch);
    if (registry_.events_.committed) registry_.events_.committed(uuid_, end.epoch);
    return absl::OkStatus();
  }
  void Close(const Status& why) override {
    uint64_t committed;
    {
      std::lock_guard<std::mutex> lock(entry_->mu);
      store_->Abort();  // an epoch still open is dropped; the replica stays committed
      committed = store_->committed_epoch();
      if (entry_->stream_id != stream_id_) {
        log_.Info("superseded replication stream ended: {}", why.ToString());
        return;  // the replica and its events belong to the newer stream
      }
    }
    if (why.ok()) {
      log_.Info("replication stream closed at epoch {}", committed);
    } else {
      log_.Warn("replication stream ended at epoch {}: {}", committed, why.ToString());
    }
    if (registry_.events_.closed) registry_.events_.closed(uuid_, why);
  }

 private:
  // Runs one store operation unless the server was fenced (then the stream ends).
  template <typename F>
  Status Apply(F&& op) {
    std::lock_guard<std::mutex> lock(entry_->mu);
    if (entry_->fenced) return core::TakenOverRefusal(uuid_);
    if (entry_->discarded) {
      return absl::FailedPreconditionError("the replica of " + uuid_ + " was discarded here");
    }
    if (entry_->stream_id != stream_id_) {
      return absl::FailedPreconditionError("replication stream of " + uuid_ +
                                           " superseded by a newer stream from its primary");
    }
    return op();
  }

  const ReplicaRegistry& registry_;
  const std::string uuid_;
  const InstanceLog log_;
  std::unique_ptr<ReplicaStore> store_;
  std::shared_ptr<Entry> entry_;
  const uint64_t stream_id_;
  std::string device_state_;
};

ReplicaRegistry::ReplicaRegistry(std::string replica_path, ReplicaOptions options,
                                 ReplicaEvents events)
    : replica_path_(std::move(replica_path)), options_(options), events_(std::move(events)) {}

std::shared_ptr<ReplicaRegistry::Entry> ReplicaRegistry::EntryFor(const std::string& uuid) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& e = entries_[uuid];
  if (!e) e = std::make_shared<Entry>();
  return e;
}

core::ReplicaSinkFactory ReplicaRegistry::Factory() {
  return [this](const core::StreamOpen& open) -> StatusOr<std::unique_ptr<core::ReplicaSink>> {
    std::shared_ptr<Entry> entry = EntryFor(open.instance_uuid);
    std::unique_ptr<ReplicaStore> store;
    uint64_t stream_id;
    {
      std::lock_guard<std::mutex> lock(entry->mu);
      if (entry->fenced) return core::TakenOverRefusal(open.instance_uuid);
      if (entry->streaming) {
        if (entry->primary_host != open.primary_host) {
          return absl::FailedPreconditionError("server " + open.instance_uuid +
                                               " is already being replicated to this host (from " +
                                               entry->primary_host + ")");
        }
        // The same (authenticated) primary started over: its old stream is dead to it, even if
        // its end has not reached this host yet (a lossy link). The new stream replaces it; the
        // old sink refuses its next item and its end reports nothing.
        InstanceLog(open.instance_uuid)
            .Warn("a new replication stream from {} replaces the one still open",
                  open.primary_host);
        if (entry->store) entry->store->Abort();
        entry->store = nullptr;
      }
      ReplicaGeometry geometry{open.ram_size_bytes, {}};
      for (const auto& d : open.disks) geometry.disks.push_back({d.name, d.size_bytes});
      const std::string dir = ReplicaDir(replica_path_, open.instance_uuid);
      const bool basis_valid = open.basis_id != 0 && open.basis_id == entry->basis_id &&
                               entry->basis_stream_id == entry->stream_id;
      entry->basis_id = 0;  // a basis serves one stream
      if (open.basis_id != 0) {
        if (!basis_valid) {
          return absl::FailedPreconditionError(
              "basis " + std::to_string(open.basis_id) + " of " + open.instance_uuid +
              " is no longer valid here (the replica changed or was hashed again): seed in full");
        }
        auto opened = SeedInPlace(dir, geometry);
        if (!opened.ok()) return opened.status();
        store = *std::move(opened);
      } else {
        NOVA_DT_RETURN_IF_ERROR(ReplicaStore::Destroy(dir));
        auto created = ReplicaStore::Create(dir, geometry, options_);
        if (!created.ok()) return created.status();
        store = *std::move(created);
      }
      entry->streaming = true;
      entry->primary_host = open.primary_host;
      stream_id = entry->stream_id = ++stream_ids_;
      InstanceLog(open.instance_uuid)
          .Info("replica {} in {} for a stream from {}",
                open.basis_id ? "seeded in place over its basis" : "created", dir,
                open.primary_host);
    }
    if (events_.opened) events_.opened(open);
    return std::unique_ptr<core::ReplicaSink>(
        new Sink(*this, open.instance_uuid, std::move(store), entry, stream_id));
  };
}

StatusOr<std::unique_ptr<ReplicaStore>> ReplicaRegistry::SeedInPlace(
    const std::string& dir, const ReplicaGeometry& geometry) const {
  auto opened = ReplicaStore::Open(dir, options_);
  if (!opened.ok()) return opened.status();
  const ReplicaGeometry& have = (*opened)->geometry();
  bool same = have.ram_size == geometry.ram_size && have.disks.size() == geometry.disks.size();
  for (size_t i = 0; same && i < have.disks.size(); ++i) {
    same = have.disks[i].name == geometry.disks[i].name &&
           have.disks[i].size == geometry.disks[i].size;
  }
  if (!same) {
    return absl::FailedPreconditionError("the stream's geometry differs from its basis replica");
  }
  NOVA_DT_RETURN_IF_ERROR((*opened)->Unseed());
  return opened;
}

StatusOr<core::ReplicaBasis> ReplicaRegistry::Basis(const std::string& primary_host,
                                                    const std::string& uuid) {
  std::shared_ptr<Entry> entry = EntryFor(uuid);
  std::unique_ptr<ReplicaStore> store;
  uint64_t stream_id;
  {
    std::lock_guard<std::mutex> lock(entry->mu);
    if (entry->fenced) return core::TakenOverRefusal(uuid);
    if (entry->streaming) {
      if (entry->primary_host != primary_host) {
        return absl::FailedPreconditionError("server " + uuid +
                                             " is already being replicated to this host (from " +
                                             entry->primary_host + ")");
      }
      // Its primary is about to re-seed: the open stream is dead to it (see Factory()). End it
      // now so the files hold still while they are hashed.
      InstanceLog(uuid).Warn("{} asks for a basis: the replication stream still open ends",
                             primary_host);
      if (entry->store) entry->store->Abort();
      entry->store = nullptr;
      entry->streaming = false;
      entry->stream_id = ++stream_ids_;
    }
    entry->basis_id = 0;
    auto opened = ReplicaStore::Open(ReplicaDir(replica_path_, uuid), options_);
    if (!opened.ok()) {
      return absl::NotFoundError("no usable replica of " + uuid + " here: " +
                                 std::string(opened.status().message()));
    }
    store = *std::move(opened);
    stream_id = entry->stream_id;
  }
  // Hashed unlocked (a failover must not wait for it); only reads. Whatever changed the files
  // meanwhile also changed the entry, checked below.
  auto basis = HashReplica(*store);
  store.reset();
  if (!basis.ok()) return basis.status();
  std::lock_guard<std::mutex> lock(entry->mu);
  if (entry->fenced) return core::TakenOverRefusal(uuid);
  if (entry->discarded || entry->streaming || entry->stream_id != stream_id) {
    return absl::AbortedError("the replica of " + uuid + " changed while it was hashed");
  }
  std::random_device random;
  do {
    basis->id = (static_cast<uint64_t>(random()) << 32) | random();
  } while (basis->id == 0);
  entry->basis_id = basis->id;
  entry->basis_stream_id = stream_id;
  return basis;
}

StatusOr<FencedReplica> ReplicaRegistry::Fence(const std::string& uuid) {
  std::shared_ptr<Entry> entry = EntryFor(uuid);
  {
    std::lock_guard<std::mutex> lock(entry->mu);
    entry->fenced = true;
    entry->basis_id = 0;  // the copy restored from it will change the files
    if (entry->store) entry->store->Abort();
  }
  // The committed state as the files say (recovering an interrupted commit if needed).
  auto store = ReplicaStore::Open(ReplicaDir(replica_path_, uuid), options_);
  if (!store.ok()) return store.status();
  FencedReplica out;
  out.committed_epoch = (*store)->committed_epoch();
  out.ram_path = (*store)->ram_path();
  out.device_state_path = (*store)->device_state_path();
  for (const auto& d : (*store)->geometry().disks) out.disk_paths[d.name] = (*store)->disk_path(d.name);
  return out;
}

Status ReplicaRegistry::Discard(const std::string& uuid) {
  std::shared_ptr<Entry> entry = EntryFor(uuid);
  {
    std::lock_guard<std::mutex> lock(entry->mu);
    entry->discarded = true;  // the open sink (if any) refuses its next item
    if (entry->store) entry->store->Abort();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    entries_.erase(uuid);  // a new stream gets a fresh entry
  }
  std::error_code ec;
  std::filesystem::remove_all(ReplicaDir(replica_path_, uuid), ec);
  if (ec) {
    return absl::InternalError("cannot remove the replica of " + uuid + ": " + ec.message());
  }
  return absl::OkStatus();
}

StatusOr<uint64_t> ReplicaRegistry::KeepBasis(
    const std::string& uuid, const ReplicaGeometry& geometry, const std::string& ram_file,
    const std::map<std::string, std::string>& disk_files) {
  std::shared_ptr<Entry> entry = EntryFor(uuid);
  std::lock_guard<std::mutex> lock(entry->mu);  // no stream opens meanwhile
  if (entry->streaming) {
    return absl::FailedPreconditionError("a replication stream of " + uuid + " is open here");
  }
  Status st = ReplicaStore::CreateBasis(ReplicaDir(replica_path_, uuid), geometry, ram_file,
                                        disk_files, options_);
  if (!st.ok() && !absl::IsAlreadyExists(st)) return st;
  entry->fenced = false;
  entry->basis_id = 0;
  return entry->stream_id;
}

uint64_t ReplicaRegistry::Relinquish(const std::string& uuid) {
  std::shared_ptr<Entry> entry = EntryFor(uuid);
  std::lock_guard<std::mutex> lock(entry->mu);
  entry->fenced = false;
  return entry->stream_id;
}

Status ReplicaRegistry::DiscardIfUnused(const std::string& uuid, uint64_t mark) {
  std::shared_ptr<Entry> entry = EntryFor(uuid);
  std::lock_guard<std::mutex> lock(entry->mu);  // a stream opening now waits for this
  if (entry->streaming || entry->stream_id != mark || entry->basis_id != 0) {
    return absl::OkStatus();
  }
  std::error_code ec;
  std::filesystem::remove_all(ReplicaDir(replica_path_, uuid), ec);
  if (ec) {
    return absl::InternalError("cannot remove the replica of " + uuid + ": " + ec.message());
  }
  return absl::OkStatus();
}

}  // namespace novadt::replica
