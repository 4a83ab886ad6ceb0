#include "agent/replica/store_sink.h"

#include <algorithm>
#include <filesystem>
#include <random>

#include "agent/common/identifiers.h"
#include "agent/common/logging.h"

namespace novadt::replica {
namespace {

// Largest zero buffer materialised at once for a "write zeroes" item.
constexpr uint64_t kZeroChunk = 1 << 20;

}  // namespace

class ReplicaRegistry::Sink final : public core::ReplicaSink {
 public:
  Sink(ReplicaRegistry& registry, std::string uuid, std::unique_ptr<ReplicaStore> store,
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
    registry_.EndStreaming(*entry_);
  }

  void OnPrimaryHeard() override {
    if (registry_.events_.heard) registry_.events_.heard(uuid_);
  }
  Status AddBootFileData(const core::BootFileChunk& c) override {
    return Apply([&] { return store_->AddBootFileData(c.name, c.offset, c.data); });
  }
  Status EndBootFiles() override {
    return Apply([&] { return store_->CommitBootFiles(); });
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
      // The primary ended the stream on purpose (unprotect, switchover, its agent stopping): it
      // may release output from now on that this replica never gets, so the replica is only a
      // basis from now on, never restored from (docs/security.md).
      if (why.ok() && !entry_->fenced && !entry_->discarded && entry_->owner &&
          !entry_->owner->released) {
        ReplicaOwner released = *entry_->owner;
        released.released = true;
        if (Status st = registry_.SetOwner(*entry_, uuid_, released); !st.ok()) {
          entry_->owner = released;  // at least for this agent's lifetime
          log_.Error("cannot record the replica as released: {}", st.ToString());
        }
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

  ReplicaRegistry& registry_;
  const std::string uuid_;
  const InstanceLog log_;
  std::unique_ptr<ReplicaStore> store_;
  std::shared_ptr<Entry> entry_;
  const uint64_t stream_id_;
  std::string device_state_;
};

ReplicaRegistry::ReplicaRegistry(RegistryOptions options, ReplicaEvents events)
    : options_(std::move(options)), events_(std::move(events)) {}

std::shared_ptr<ReplicaRegistry::Entry> ReplicaRegistry::LiveEntryFor(
    const std::string& uuid, std::unique_lock<std::mutex>& lock) {
  for (;;) {
    std::shared_ptr<Entry> entry = EntryFor(uuid);
    lock = std::unique_lock<std::mutex>(entry->mu);
    if (!entry->discarded) return entry;
    // Discarded while this caller waited: Discard() has removed it from the map by now.
    lock.unlock();
  }
}

std::shared_ptr<ReplicaRegistry::Entry> ReplicaRegistry::EntryFor(const std::string& uuid) {
  std::shared_ptr<Entry> entry;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto& e = entries_[uuid];
    if (!e) e = std::make_shared<Entry>();
    entry = e;
  }
  std::lock_guard<std::mutex> lock(entry->mu);
  LoadOwner(*entry, uuid);
  return entry;
}

void ReplicaRegistry::LoadOwner(Entry& e, const std::string& uuid) const {
  if (e.loaded) return;
  e.loaded = true;
  auto owner = ReadReplicaOwner(ReplicaDir(options_.replica_path, uuid));
  if (owner.ok()) {
    e.owner = *owner;
    // Taken over here before a restart: the files may be the running copy's own.
    e.fenced = owner->taken_over && owner->host == options_.this_host;
  } else if (!absl::IsNotFound(owner.status())) {
    // Nobody's: the next stream replaces the replica, and no basis is handed out from it.
    InstanceLog(uuid).Error("the replica's owner record is unusable ({}): treated as nobody's",
                            owner.status().ToString());
  }
}

Status ReplicaRegistry::SetOwner(Entry& e, const std::string& uuid, ReplicaOwner owner) const {
  NOVA_DT_RETURN_IF_ERROR(WriteReplicaOwner(ReplicaDir(options_.replica_path, uuid), owner));
  e.owner = std::move(owner);
  return absl::OkStatus();
}

Status ReplicaRegistry::OwnedBy(const Entry& e, const std::string& uuid,
                                const std::string& primary_host) const {
  if (e.owner && e.owner->host == primary_host && !e.owner->taken_over) return absl::OkStatus();
  return absl::PermissionDeniedError(
      "the replica of " + uuid + " here belongs to " +
      (e.owner ? (e.owner->taken_over ? "this host (taken over)" : "primary " + e.owner->host) +
                     (e.owner->released ? ", released" : "")
               : std::string("nobody (no owner recorded)")) +
      ", not " + primary_host);
}

bool ReplicaRegistry::TakeStreamSlot(const std::string& host) {
  std::lock_guard<std::mutex> lock(slots_mu_);
  int& n = streams_by_host_[host];
  if (n >= options_.max_streams_per_peer) {
    if (n == 0) streams_by_host_.erase(host);
    return false;
  }
  ++n;
  return true;
}

void ReplicaRegistry::ReleaseStreamSlot(const std::string& host) {
  std::lock_guard<std::mutex> lock(slots_mu_);
  auto it = streams_by_host_.find(host);
  if (it != streams_by_host_.end() && --it->second <= 0) streams_by_host_.erase(it);
}

void ReplicaRegistry::EndStreaming(Entry& e) {
  e.streaming = false;
  ReleaseStreamSlot(e.primary_host);
}

core::ReplicaSinkFactory ReplicaRegistry::Factory() {
  return [this](const core::StreamOpen& open) -> StatusOr<std::unique_ptr<core::ReplicaSink>> {
    NOVA_DT_RETURN_IF_ERROR(ValidateInstanceUuid(open.instance_uuid));
    NOVA_DT_RETURN_IF_ERROR(ValidateHostName(open.primary_host));
    const std::string& uuid = open.instance_uuid;
    const InstanceLog log(uuid);
    std::unique_ptr<ReplicaStore> store;
    uint64_t stream_id;
    std::shared_ptr<Entry> entry;
    {
      std::unique_lock<std::mutex> lock;
      entry = LiveEntryFor(uuid, lock);  // never an entry Discard() freed meanwhile
      if (entry->fenced) return core::TakenOverRefusal(uuid);
      const bool owner = OwnedBy(*entry, uuid, open.primary_host).ok();
      // A replica another primary owns is its own until it lets go (docs/security.md).
      if (!owner && entry->owner && !entry->owner->released) {
        return OwnedBy(*entry, uuid, open.primary_host);
      }
      if (entry->streaming && entry->primary_host != open.primary_host) {
        return absl::FailedPreconditionError("server " + uuid +
                                             " is already being replicated to this host (from " +
                                             entry->primary_host + ")");
      }
      const bool replacing = entry->streaming;
      if (!replacing && !TakeStreamSlot(open.primary_host)) {
        return absl::ResourceExhaustedError(
            open.primary_host + " already has " + std::to_string(options_.max_streams_per_peer) +
            " replication streams open to this host");
      }
      // From here on this stream holds a slot of its primary; give it back on refusal.
      auto refuse = [&](Status why) {
        if (replacing) {  // the old stream ends too (its store was aborted)
          entry->store = nullptr;
          EndStreaming(*entry);
          entry->stream_id = ++stream_ids_;
        } else {
          ReleaseStreamSlot(open.primary_host);
        }
        return why;
      };
      if (replacing) {
        // The same (authenticated) primary started over: its old stream is dead to it, even if
        // its end has not reached this host yet (a lossy link). The new stream replaces it; the
        // old sink refuses its next item and its end reports nothing.
        log.Warn("a new replication stream from {} replaces the one still open",
                 open.primary_host);
        if (entry->store) entry->store->Abort();
        entry->store = nullptr;
      }
      ReplicaGeometry geometry{open.ram_size_bytes, {}};
      for (const auto& d : open.disks) geometry.disks.push_back({d.name, d.size_bytes});
      const std::string dir = ReplicaDir(options_.replica_path, uuid);
      // A basis is handed out to the owner only, and serves one stream.
      const bool basis_valid = owner && open.basis_id != 0 && open.basis_id == entry->basis_id &&
                               entry->basis_stream_id == entry->stream_id;
      entry->basis_id = 0;
      if (open.basis_id != 0) {
        if (!basis_valid) {
          return refuse(absl::FailedPreconditionError(
              "basis " + std::to_string(open.basis_id) + " of " + uuid +
              " is no longer valid here (the replica changed or was hashed again): seed in full"));
        }
        auto opened = SeedInPlace(dir, geometry);
        if (!opened.ok()) return refuse(opened.status());
        store = *std::move(opened);
      } else {
        if (Status gone = ReplicaStore::Destroy(dir); !gone.ok()) return refuse(gone);
        entry->owner.reset();
        auto created = ReplicaStore::Create(dir, geometry, options_.store);
        if (!created.ok()) return refuse(created.status());
        store = *std::move(created);
      }
      // The stream's boot files replace what the replica had (none: the older ones go too).
      if (Status boot = store->BeginBootFiles(open.boot_files); !boot.ok()) {
        store.reset();
        return refuse(boot);
      }
      if (Status owned = SetOwner(*entry, uuid, {open.primary_host, false, false}); !owned.ok()) {
        store.reset();
        return refuse(owned);
      }
      entry->streaming = true;
      entry->primary_host = open.primary_host;
      stream_id = entry->stream_id = ++stream_ids_;
      log.Info("replica {} in {} for a stream from {}",
               open.basis_id ? "seeded in place over its basis" : "created", dir,
               open.primary_host);
    }
    if (events_.opened) events_.opened(open);
    return std::unique_ptr<core::ReplicaSink>(
        new Sink(*this, uuid, std::move(store), entry, stream_id));
  };
}

StatusOr<std::unique_ptr<ReplicaStore>> ReplicaRegistry::SeedInPlace(
    const std::string& dir, const ReplicaGeometry& geometry) const {
  auto opened = ReplicaStore::Open(dir, options_.store);
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
  NOVA_DT_RETURN_IF_ERROR(ValidateInstanceUuid(uuid));
  NOVA_DT_RETURN_IF_ERROR(ValidateHostName(primary_host));
  std::shared_ptr<Entry> entry = EntryFor(uuid);
  std::unique_ptr<ReplicaStore> store;
  uint64_t stream_id;
  {
    std::lock_guard<std::mutex> lock(entry->mu);
    if (entry->fenced) return core::TakenOverRefusal(uuid);
    if (Status owned = OwnedBy(*entry, uuid, primary_host); !owned.ok()) {
      // Another primary's live replica is not even described to a caller that is not its owner;
      // one it released (or nobody's) is replaced by the caller's full seed.
      if (entry->owner && !entry->owner->released) return owned;
      return absl::NotFoundError("no replica of " + uuid + " for " + primary_host +
                                 " here: seed in full");
    }
    if (entry->streaming) {
      // Its primary is about to re-seed: the open stream is dead to it (see Factory()). End it
      // now so the files hold still while they are hashed.
      InstanceLog(uuid).Warn("{} asks for a basis: the replication stream still open ends",
                             primary_host);
      if (entry->store) entry->store->Abort();
      entry->store = nullptr;
      EndStreaming(*entry);
      entry->stream_id = ++stream_ids_;
    }
    entry->basis_id = 0;
    auto opened = ReplicaStore::Open(ReplicaDir(options_.replica_path, uuid), options_.store);
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

Status ReplicaRegistry::CheckOwner(const std::string& primary_host, const std::string& uuid) {
  NOVA_DT_RETURN_IF_ERROR(ValidateInstanceUuid(uuid));
  NOVA_DT_RETURN_IF_ERROR(ValidateHostName(primary_host));
  std::shared_ptr<Entry> entry = EntryFor(uuid);
  std::lock_guard<std::mutex> lock(entry->mu);
  if (!entry->owner) return absl::NotFoundError("no replica of " + uuid + " here");
  return OwnedBy(*entry, uuid, primary_host);
}

Status ReplicaRegistry::Release(const std::string& primary_host, const std::string& uuid) {
  NOVA_DT_RETURN_IF_ERROR(ValidateInstanceUuid(uuid));
  NOVA_DT_RETURN_IF_ERROR(ValidateHostName(primary_host));
  std::shared_ptr<Entry> entry = EntryFor(uuid);
  std::lock_guard<std::mutex> lock(entry->mu);
  if (!entry->owner) return absl::NotFoundError("no replica of " + uuid + " here");
  NOVA_DT_RETURN_IF_ERROR(OwnedBy(*entry, uuid, primary_host));
  if (entry->owner->released) return absl::OkStatus();
  ReplicaOwner released = *entry->owner;
  released.released = true;
  NOVA_DT_RETURN_IF_ERROR(SetOwner(*entry, uuid, released));
  InstanceLog(uuid).Info("{} ended protection: the replica is kept only as a basis",
                         primary_host);
  return absl::OkStatus();
}

StatusOr<FencedReplica> ReplicaRegistry::Fence(const std::string& uuid, bool handed_over) {
  NOVA_DT_RETURN_IF_ERROR(ValidateInstanceUuid(uuid));
  std::shared_ptr<Entry> entry = EntryFor(uuid);
  const std::string dir = ReplicaDir(options_.replica_path, uuid);
  // Under the entry's lock throughout: an open stream applies nothing while the replica is
  // opened, and the entry is fenced only once there is a replica to restore and the take-over
  // is recorded (a fence that fails leaves the server's streams accepted, as before).
  std::lock_guard<std::mutex> lock(entry->mu);
  if (!handed_over && entry->owner && entry->owner->released && !entry->fenced) {
    return absl::FailedPreconditionError(
        "the replica of " + uuid + " was released by its primary " + entry->owner->host +
        " (it ended protection on purpose): output it released since is not in it, so it is "
        "never restored");
  }
  entry->basis_id = 0;  // the copy restored from it will change the files
  if (entry->store) entry->store->Abort();  // its open epoch (and journal) go before Open()
  // The committed state as the files say (recovering an interrupted commit if needed).
  auto store = ReplicaStore::Open(dir, options_.store);
  if (!store.ok()) return store.status();
  auto boot_files = (*store)->BootFiles();
  if (!boot_files.ok()) {
    return Status(boot_files.status().code(), "the boot files of the replica of " + uuid +
                                                  " are damaged: " +
                                                  std::string(boot_files.status().message()));
  }
  // Remembered across restarts: a returning old primary's stream must never replace the files
  // the copy restored here runs on. Recorded also when no owner was (a replica made before
  // owner records, or an unreadable record). Not recorded: no take-over.
  if (Status st = SetOwner(*entry, uuid, {options_.this_host, false, true}); !st.ok()) {
    return Status(st.code(), "cannot record the take-over in the replica of " + uuid + ": " +
                                 std::string(st.message()));
  }
  entry->fenced = true;
  FencedReplica out;
  out.committed_epoch = (*store)->committed_epoch();
  out.ram_path = (*store)->ram_path();
  out.device_state_path = (*store)->device_state_path();
  for (const auto& d : (*store)->geometry().disks) {
    out.disk_paths[d.name] = (*store)->disk_path(d.name);
  }
  out.boot_files = *std::move(boot_files);
  return out;
}

bool ReplicaRegistry::TakenOverHere(const std::string& uuid) {
  if (!ValidateInstanceUuid(uuid).ok()) return false;
  std::shared_ptr<Entry> entry = EntryFor(uuid);
  std::lock_guard<std::mutex> lock(entry->mu);
  return entry->fenced;
}

Status ReplicaRegistry::Discard(const std::string& uuid) {
  NOVA_DT_RETURN_IF_ERROR(ValidateInstanceUuid(uuid));
  std::unique_lock<std::mutex> lock;
  std::shared_ptr<Entry> entry = LiveEntryFor(uuid, lock);
  entry->discarded = true;  // the open sink (if any) refuses its next item
  if (entry->store) entry->store->Abort();
  // The directory goes while the entry is locked and still the server's: a stream opening
  // meanwhile waits for it, finds the entry discarded and starts afresh on a new one — it never
  // creates a replica that is then removed under it.
  std::error_code ec;
  std::filesystem::remove_all(ReplicaDir(options_.replica_path, uuid), ec);
  {
    std::lock_guard<std::mutex> map_lock(mu_);
    auto it = entries_.find(uuid);
    if (it != entries_.end() && it->second == entry) entries_.erase(it);  // a fresh entry next
  }
  if (ec) {
    return absl::InternalError("cannot remove the replica of " + uuid + ": " + ec.message());
  }
  return absl::OkStatus();
}

StatusOr<uint64_t> ReplicaRegistry::KeepBasis(
    const std::string& uuid, const ReplicaGeometry& geometry, const std::string& ram_file,
    const std::map<std::string, std::string>& disk_files, const std::string& new_owner) {
  NOVA_DT_RETURN_IF_ERROR(ValidateInstanceUuid(uuid));
  NOVA_DT_RETURN_IF_ERROR(ValidateHostName(new_owner));
  std::shared_ptr<Entry> entry = EntryFor(uuid);
  std::lock_guard<std::mutex> lock(entry->mu);  // no stream opens meanwhile
  if (entry->streaming) {
    return absl::FailedPreconditionError("a replication stream of " + uuid + " is open here");
  }
  const std::string dir = ReplicaDir(options_.replica_path, uuid);
  Status st = ReplicaStore::CreateBasis(dir, geometry, ram_file, disk_files, options_.store);
  if (!st.ok() && !absl::IsAlreadyExists(st)) return st;
  NOVA_DT_RETURN_IF_ERROR(SetOwner(*entry, uuid, {new_owner, true, false}));
  entry->fenced = false;
  entry->basis_id = 0;
  return entry->stream_id;
}

uint64_t ReplicaRegistry::Relinquish(const std::string& uuid, const std::string& new_owner,
                                     bool released) {
  if (!ValidateInstanceUuid(uuid).ok() || !ValidateHostName(new_owner).ok()) return 0;
  std::shared_ptr<Entry> entry = EntryFor(uuid);
  std::lock_guard<std::mutex> lock(entry->mu);
  entry->fenced = false;
  if (entry->owner) {
    if (Status st = SetOwner(*entry, uuid, {new_owner, released, false}); !st.ok()) {
      InstanceLog(uuid).Error("cannot record {} as the replica's owner: {}", new_owner,
                              st.ToString());
      entry->owner = ReplicaOwner{new_owner, released, false};
    }
  }
  return entry->stream_id;
}

Status ReplicaRegistry::DiscardIfUnused(const std::string& uuid, uint64_t mark) {
  NOVA_DT_RETURN_IF_ERROR(ValidateInstanceUuid(uuid));
  std::shared_ptr<Entry> entry = EntryFor(uuid);
  std::lock_guard<std::mutex> lock(entry->mu);  // a stream opening now waits for this
  if (entry->streaming || entry->stream_id != mark || entry->basis_id != 0) {
    return absl::OkStatus();
  }
  entry->owner.reset();
  std::error_code ec;
  std::filesystem::remove_all(ReplicaDir(options_.replica_path, uuid), ec);
  if (ec) {
    return absl::InternalError("cannot remove the replica of " + uuid + ": " + ec.message());
  }
  return absl::OkStatus();
}

}  // namespace novadt::replica
