// The backup's end of replication streams: core::ReplicaSink over a ReplicaStore, one replica
// directory per server under [replication] replica_path, one stream per server at a time — and
// the fence that ends replication of a server for good when the backup takes it over.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "agent/core/replication_link.h"
#include "agent/replica/replica_owner.h"
#include "agent/replica/replica_store.h"

namespace novadt::replica {

// Bookkeeping callbacks for the agent, called on the stream's thread. Any may be empty.
struct ReplicaEvents {
  // A stream opened (re-created) the server's replica.
  std::function<void(const core::StreamOpen& open)> opened;
  // Any message arrived from the primary (the failure detector's input).
  std::function<void(const std::string& instance_uuid)> heard;
  std::function<void(const std::string& instance_uuid, uint64_t epoch)> committed;
  std::function<void(const std::string& instance_uuid, const Status& why)> closed;
};

// A committed replica, as the failover restorer needs it.
struct FencedReplica {
  uint64_t committed_epoch = 0;
  std::string ram_path;
  std::string device_state_path;
  std::map<std::string, std::string> disk_paths;  // target dev -> image
  // The boot files of the stream that seeded it ("kernel", "ramdisk" -> the replica's copy),
  // checked against boot.rec (ReplicaStore::BootFiles()); empty when it carried none.
  std::map<std::string, std::string> boot_files;
};

struct RegistryOptions {
  // [replication] replica_path: one directory per server below it (ReplicaDir()).
  std::string replica_path;
  // [DEFAULT] host of this agent: the owner recorded for replicas it takes over.
  std::string this_host;
  // Replication streams open at once from one primary host; beyond it a stream is refused with
  // ResourceExhausted (a stream replacing its own predecessor does not count twice).
  int max_streams_per_peer = 64;
  ReplicaOptions store;
};

// Thread-safe: streams of different servers run concurrently with each other and with Fence().
//
// Ownership (replica_owner.h, docs/security.md): every replica records the primary it belongs to
// in its directory, and only that primary may stream to it, ask for its basis or hand the server
// over. Every uuid and host given to a method is checked (canonical UUID, host name) before a
// path is built from it: InvalidArgument otherwise.
class ReplicaRegistry {
 public:
  ReplicaRegistry(RegistryOptions options, ReplicaEvents events);

  // Makes sinks for incoming streams. A new stream (re)seeds: the server's replica is
  // re-created with the stream's geometry, its epochs start at 1 — or, for a stream naming a
  // valid basis (Basis()), reopened in place and un-seeded (FailedPrecondition for a stale one):
  // a replica is never resumed at its epoch, it is re-seeded over its basis.
  // The stream's boot files (StreamOpen::boot_files) replace the replica's before its first
  // epoch (ReplicaStore::BeginBootFiles). The stream's primary becomes (or stays) the replica's
  // owner. Refused: a stream for a
  // replica another primary owns and has not released (PermissionDenied); a stream from another
  // primary while one is open (FailedPrecondition; one from the same primary replaces the open
  // one); any stream for a server taken over here (core::TakenOverRefusal); more than
  // max_streams_per_peer streams from one primary (ResourceExhausted). A stream for a replica
  // released by another primary replaces it with a fresh one (never a basis). The registry must
  // outlive the factory's sinks.
  core::ReplicaSinkFactory Factory();

  // The basis of `instance_uuid`'s replica for its owner `primary_host`, about to re-seed it
  // (core/replica_basis.h): the files hashed as they are, whatever epoch they hold. A stream
  // still open from that primary is ended first (as a new stream from it would). The next
  // stream naming the basis (StreamOpen::basis_id) seeds in place over it; any other stream,
  // fence or discard invalidates it. NotFound when there is no usable replica for that primary
  // (none, or one another primary released: seed in full); PermissionDenied when another
  // primary owns it; the taken-over refusal for a server taken over here; Aborted when the
  // replica changed while it was hashed.
  StatusOr<core::ReplicaBasis> Basis(const std::string& primary_host,
                                     const std::string& instance_uuid);

  // Whether `primary_host` owns the replica of `instance_uuid` here (recorded, not taken over
  // here; possibly released: a switchover ends the stream before it hands over): what a peer's
  // TakeOver must be. PermissionDenied saying whose it is otherwise; NotFound when no owner is
  // recorded.
  Status CheckOwner(const std::string& primary_host, const std::string& instance_uuid);

  // Its owner `primary_host` ends protection on purpose and will release output the replica
  // lacks: the replica is recorded as released (a basis only; Fence() for a failover refuses it
  // from now on). An open stream may go on; only the owner's next stream makes the replica
  // failover-eligible again. PermissionDenied when another primary owns it; NotFound when there
  // is none.
  Status Release(const std::string& primary_host, const std::string& instance_uuid);

  // Ends replication of `instance_uuid` for good: an open stream's next item is refused and its
  // open epoch dropped (waiting for an item being applied right now), later streams are refused,
  // and this host is recorded as the owner (taken over; kept across restarts). Returns the
  // committed replica, its boot files checked. `handed_over`: the owner handed the server over
  // (a planned switchover, whose final stream ended on purpose); otherwise (a failover) a replica
  // its owner released is refused with FailedPrecondition, and nothing changes. NotFound when
  // there is none; its own errors (DataLoss...) when the replica cannot be opened consistently
  // or a boot file is damaged (ReplicaStore::BootFiles()); the error of writing
  // owner.rec when the take-over cannot be recorded. On any error the server is not fenced
  // (streams are accepted as before; an epoch the open stream had begun is dropped).
  StatusOr<FencedReplica> Fence(const std::string& instance_uuid, bool handed_over);

  // Whether this host took `instance_uuid` over from its replica here (fenced; a copy may run on
  // the replica's files). False for a malformed UUID.
  bool TakenOverHere(const std::string& instance_uuid);

  // Frees the replica of a server that is gone (deleted in Nova, or switched away from a copy
  // that ran on it): an open stream's next item is refused (FailedPrecondition, not a
  // take-over), the replica directory is removed. A later stream for the server seeds anew.
  // OK when there was nothing to free; Internal when the directory cannot be removed.
  Status Discard(const std::string& instance_uuid);

  // This host stops running `instance_uuid` from its replica (a switchover away from here, or a
  // take-over that failed): `new_owner` runs the server (or keeps it), so its streams are
  // accepted again instead of being refused as taken over — a switched-away replica is released
  // (kept as its basis, never restored from); after a failed take-over it stays the owner's
  // live replica. The files stay until a stream replaces them or DiscardIfUnused() frees them.
  // Returns a mark for DiscardIfUnused().
  uint64_t Relinquish(const std::string& instance_uuid, const std::string& new_owner,
                      bool released);
  // A copy of `instance_uuid` that ran here is going away (`new_owner` runs the server now):
  // keeps what it leaves — its RAM file (if it still has one) and raw disk images — as a replica
  // that is not seeded (ReplicaStore::CreateBasis), owned by `new_owner` and released: the basis
  // of a later re-protection from there towards here. Nothing is kept while a stream for the
  // server is open; an existing replica is kept as it is (its owner becomes `new_owner`).
  // Returns a mark for DiscardIfUnused() (to free it if no re-protection comes).
  StatusOr<uint64_t> KeepBasis(const std::string& instance_uuid, const ReplicaGeometry& geometry,
                               const std::string& ram_file,
                               const std::map<std::string, std::string>& disk_files,
                               const std::string& new_owner);
  // Frees the replica directory unless it was used since Relinquish() returned `mark`: a stream
  // opened for the server, or its basis was handed out (the new primary seeds over it: the
  // files a copy switched away from here ran on are the best basis there is).
  Status DiscardIfUnused(const std::string& instance_uuid, uint64_t mark);

 private:
  class Sink;
  struct Entry {
    std::mutex mu;               // held while a sink applies an item, and by Fence()
    bool loaded = false;         // `owner` read from the directory (once)
    std::optional<ReplicaOwner> owner;  // none: nobody's (any peer's stream replaces it)
    bool streaming = false;      // a sink is open
    bool fenced = false;         // taken over here: every stream refused (TakenOverRefusal)
    bool discarded = false;      // freed: the open sink refuses; the next stream starts afresh
    std::string primary_host;    // of the open (or last) stream
    uint64_t stream_id = 0;      // the open sink's (registry-unique); older sinks superseded
    ReplicaStore* store = nullptr;  // the open sink's store, under mu
    uint64_t basis_id = 0;          // the last basis handed out; 0: none valid
    uint64_t basis_stream_id = 0;   // stream_id when it was hashed: valid while unchanged
  };
  // Opens the replica in `dir` for a seed over its basis: same geometry, then Unseed().
  StatusOr<std::unique_ptr<ReplicaStore>> SeedInPlace(const std::string& dir,
                                                      const ReplicaGeometry& geometry) const;
  // The entry of a validated uuid, its owner record loaded. REQUIRES: uuid valid.
  std::shared_ptr<Entry> EntryFor(const std::string& uuid);
  // EntryFor(), locked into `lock`, never one Discard() has freed (such an entry is out of the
  // map once its lock is free: the next lookup gets the fresh one).
  std::shared_ptr<Entry> LiveEntryFor(const std::string& uuid, std::unique_lock<std::mutex>& lock);
  // Reads the owner record into `e` the first time. REQUIRES: e.mu held.
  void LoadOwner(Entry& e, const std::string& uuid) const;
  // Records `owner` for `uuid` (file, then `e`). REQUIRES: e.mu held, the directory exists.
  Status SetOwner(Entry& e, const std::string& uuid, ReplicaOwner owner) const;
  // Why `primary_host` may not act on the replica `e` holds (PermissionDenied), or OK when it
  // owns it. REQUIRES: e.mu held, owner loaded.
  Status OwnedBy(const Entry& e, const std::string& uuid, const std::string& primary_host) const;
  // Counts the open streams per primary host. Take/Release under the entry's mu.
  bool TakeStreamSlot(const std::string& host);
  void ReleaseStreamSlot(const std::string& host);
  // Marks `e`'s open stream ended. REQUIRES: e.mu held, e.streaming.
  void EndStreaming(Entry& e);

  const RegistryOptions options_;
  const ReplicaEvents events_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> entries_;  // guarded by mu_
  std::mutex slots_mu_;
  std::map<std::string, int> streams_by_host_;  // guarded by slots_mu_
  // Stream ids are unique across entries (an entry erased by Discard() and made anew must not
  // reuse the ids of marks handed out before).
  std::atomic<uint64_t> stream_ids_{0};
};

}  // namespace novadt::replica
