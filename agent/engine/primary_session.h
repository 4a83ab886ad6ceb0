// One protected server on its primary host: the epoch engine's state machine, driving the
// seven stages (ARCHITECTURE.md) over the parts it is given:
//
//   seeding    ask the backup for its basis (what its replica files already hold, hashed:
//              core/replica_basis.h) and open the replication stream, declaring and sending the
//              server's boot files first (SessionParts::boot_files); short pause: arm dirty
//              tracking, open egress epoch 1, resume; start disk capture and stream its initial
//              copy (it seeds the disks), then all of RAM in slices, while the guest runs —
//              leaving out what the basis holds; the first checkpoint completes epoch 1.
//   protected  every `epoch` interval: checkpoint (stages II+III, Checkpointer), stream the
//              epoch (IV/V, EpochWriter); each ack from the backup (VI) releases that epoch's
//              held output (EgressGate).
//   degraded   the backup did not ack the oldest outstanding epoch within `degrade_after`, or
//              the stream broke, or a checkpoint failed: all held output is released, the guest
//              runs unprotected, the reason is reported; after `reseed_after` seeding starts
//              again (a new stream re-seeds the replica, over its basis when it has one).
//   unprotected  Stop() was called.
//
// With a witness (SessionParts::witness, docs/witness.md) the session also keeps invariant 3
// (never two running copies, never a failover to a replica older than released output):
//   - before seeding it claims the server at the witness and sends the claim's generation in
//     the stream's open message; the backup's take-over must name it;
//   - a degraded pair releases its held output only after the witness advanced the generation
//     (the backup's replica can then never be resumed); until then output stays held and the
//     reason says so;
//   - Fence() pauses the guest and keeps it paused (no checkpoint resumes it) until Unfence():
//     the agent calls them as its witness lease's fence deadline passes and renews.
// With or without a witness, a backup that answers that it took the server over
// (core::TakenOverRefusal: it failed over while this primary lived, or before this agent
// restarted) ends the session for good with nothing released (SessionStatus::taken_over); the
// agent then stands the copy down.
//
// Threads: an epoch thread (seeding, checkpoints, sending), a watchdog thread (the degrade
// bound, which must fire even while a send is blocked by a stalled backup), and the link's ack
// thread. The egress gate is touched under one mutex so a degrade can never strand frames in a
// buffer opened after the release.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "agent/common/clock.h"
#include "agent/core/replication_link.h"
#include "agent/dirty/dirty_tracker.h"
#include "agent/engine/checkpointer.h"
#include "agent/engine/disk_capture.h"
#include "agent/engine/egress_gate.h"
#include "agent/engine/ram_stager.h"
#include "agent/witness/witness.h"

namespace novadt::engine {

enum class PairState { kSeeding, kProtected, kDegraded, kUnprotected };
std::string_view PairStateName(PairState s);

struct SessionOptions {
  std::chrono::milliseconds epoch{100};
  std::chrono::milliseconds degrade_after{2000};
  std::chrono::milliseconds reseed_after{2000};
  std::chrono::milliseconds capture_ready_timeout{120000};
  uint64_t seed_slice_pages = 1024;  // RAM streamed per slice while seeding (4 MiB)
  // Most passes over RAM after the seeding copy, each sending what changed since it was sent;
  // they stop once one took at most degrade_after / 4 (sent and received by the backup).
  int seed_precopy_rounds = 10;
  // Bound on waiting, after a seeding pass, until the backup received it (a slow link).
  std::chrono::milliseconds seed_drain_timeout{300000};
  // Bound on asking the backup for its basis before a seed (it hashes its replica files).
  std::chrono::milliseconds basis_timeout{10000};
  // Stop(): how long the backup has to confirm it will never restore its replica before the
  // held output is released all the same.
  std::chrono::milliseconds release_timeout{2000};
  // [replication] max_boot_file_bytes: a larger boot file is not sent (the seed fails).
  uint64_t max_boot_file_bytes = 256ull << 20;
};

// What the session drives. The pointers must outlive the session; the rest it owns.
struct SessionParts {
  core::Hypervisor* hypervisor = nullptr;
  core::ReplicationLink* link = nullptr;
  std::string backup_address;
  core::StreamOpen open;  // identity and geometry of the server
  std::unique_ptr<dirty::DirtyTracker> tracker;
  std::unique_ptr<RamStager> stager;
  std::unique_ptr<EgressGate> gate;
  std::unique_ptr<DiskCapture> capture;
  // Optional: the fencing witness (claims are made for open.primary_host).
  witness::Witness* witness = nullptr;
  // The boot files the domain boots from in Nova's instance directory
  // <instances_path>/<open.instance_uuid>/ ("kernel", "ramdisk": core/replication_link.h, "Boot
  // files"), opened and sent anew at the start of every stream (BootFileSource), before the
  // seed; the stream's protocol is 4 with them, 3 without. Empty: none.
  std::string instances_path;
  std::vector<std::string> boot_files;
};

struct SessionStatus {
  PairState state = PairState::kSeeding;
  std::string reason;
  uint64_t last_checkpoint = 0;  // newest epoch taken
  uint64_t last_committed = 0;   // newest epoch the backup acked (this stream)
  uint64_t reseeds = 0;
  std::string dirty_tracking;    // "soft-dirty" | "hash-scan"
  Clock::Duration pause_p50{0};
  Clock::Duration pause_p99{0};
  Clock::Duration seed_time{0};  // last seeding: start .. epoch 1 acked
  uint64_t seed_bytes = 0;        // last seeding: page and disk payload sent
  uint64_t seed_basis_bytes = 0;  // left out: the backup's basis held them (core/replica_basis.h)
  // Steady state (epochs after seeding, this protection attempt): what was streamed.
  uint64_t steady_epochs = 0;
  uint64_t steady_pages = 0;
  uint64_t steady_bytes = 0;  // page, disk-write and device-state payload
  // With a witness: the generation claimed for the current stream (0: none yet), whether the
  // guest is fenced (paused by Fence()), and whether a degraded pair's output is still held
  // because the witness has not confirmed the advanced generation.
  int64_t witness_generation = 0;
  bool fenced = false;
  bool output_held_for_witness = false;
  // A switchover's final epoch is under way or done (HandOver): the guest is not resumed here.
  bool handing_over = false;
  // The backup refused the stream because it runs the server itself (core::TakenOverRefusal):
  // this copy must stand down — nothing held was or will be released, no re-seed is tried.
  bool taken_over = false;
};

class PrimarySession {
 public:
  PrimarySession(SessionParts parts, SessionOptions options, const Clock& clock);
  ~PrimarySession();  // Stop()
  PrimarySession(const PrimarySession&) = delete;
  PrimarySession& operator=(const PrimarySession&) = delete;

  // Starts protecting (seeding first). Returns at once.
  void Start();
  // Unprotects: stops checkpointing, ends the stream, releases all held output (not after a
  // successful HandOver: see there), stops the disk capture. The guest keeps running (a guest
  // paused by HandOver stays paused). Bounded; idempotent.
  void Stop();

  SessionStatus status() const;

  // Self-fencing: pauses the guest (QMP stop, serialised with checkpoints) and keeps it paused:
  // no checkpoint or seeding step resumes a fenced guest. OK when already fenced. `why` is
  // reported in status and logs.
  Status Fence(const std::string& why);
  // Resumes a fenced guest (QMP cont). OK when not fenced.
  Status Unfence();
  // Planned switchover, this side's half: at the next epoch boundary takes a final checkpoint
  // with the guest left paused (fenced for good), streams it and waits until the backup
  // committed it; then releases every held frame (all were sent before the final pause, so the
  // backup's copy has sent them too), ends the stream cleanly and ends the session's work.
  // Returns the final epoch; the guest stays paused and the caller hands the server over
  // (then Abandon(), or Stop() + resume the guest if the backup does not take over: what the
  // guest sent after the final epoch stays held — a new session adopts and releases it).
  // FailedPrecondition when the pair is not protected (nothing changed); another error when the
  // final epoch failed: the guest then runs again and the pair degrades as for any failed epoch.
  // Bounded by the epoch interval, one checkpoint and the degrade bound.
  struct HandOverResult {
    uint64_t epoch = 0;             // the final epoch, committed on the backup
    Clock::TimePoint paused_at{};   // when the final pause began
  };
  StatusOr<HandOverResult> HandOver();

  // Another host owns the server now (the witness moved it): ends the session like Stop() but
  // releases nothing and advances nothing — the held output belongs to a copy that must never
  // be heard from (the caller destroys it). `why` becomes the reason.
  void Abandon(const std::string& why);

 private:
  void EpochThread();
  void WatchdogThread();
  // One protection attempt: seed, then checkpoint until degraded or stopped. Returns why it
  // ended (OK when stopped).
  Status Protect();
  // Streams epoch 1: the disks' initial copy, all RAM and pre-copy rounds while the guest runs,
  // then the first pause — leaving out what `basis` (may be null) already holds.
  Status Seed(core::EpochStream& stream, core::StagedEpoch& staged,
              const core::ReplicaBasis* basis);
  // Seeding steps (the epoch thread's), over what the seed has sent so far.
  struct SeedCopy;
  Status SendDiskWrites(SeedCopy& copy, std::vector<core::DiskWrite> writes);
  // Every page, in slices; those the basis holds are left out.
  Status SendAllPages(SeedCopy& copy);
  // The pages whose bytes changed since they were sent; returns their payload bytes.
  StatusOr<uint64_t> SendChangedPages(SeedCopy& copy);
  // The backup's basis for the next stream, or none (full seed; why is logged). The taken-over
  // refusal is returned as an error.
  StatusOr<std::optional<core::ReplicaBasis>> FetchBasis();
  // Seeding barrier: returns once the backup has received everything sent on `stream` so far
  // (EpochStream::Sync); at once on a link without barriers. Aborted when the pair degrades.
  Status Drain(core::EpochStream& stream);
  Status PauseAndArm();
  // The final epoch of a switchover, once streamed: waits for its commit, then releases all
  // held output. The guest is paused; on failure it is resumed.
  Status FinishHandOver(core::EpochStream& stream, uint64_t epoch);
  // A switchover that failed after its final pause: resumes the guest (unless Fence() was
  // called meanwhile), then answers HandOver() with `why`, so its caller never sees the guest
  // paused by the switchover.
  void FailHandOver(const Status& why);
  // QMP cont and clears the fence. REQUIRES: gate_mu_ held.
  Status ResumeFencedGuest();
  // With a witness: claims the server, waiting (bounded by Stop()) while the witness is
  // unreachable. Refusals (another host owns it) are returned.
  StatusOr<int64_t> ClaimOwnership();
  // With a witness, on the watchdog thread: a degraded pair's output leaves only once the
  // witness advanced the generation. REQUIRES: `lock` holds mu_ (released while calling out).
  void ReleaseHeldForWitness(std::unique_lock<std::mutex>& lock);
  void OnAck(uint64_t epoch);
  void OnStreamDone(const Status& st, uint64_t generation);
  void Degrade(const std::string& reason);
  bool Stopping() const;
  void RecordPause(Clock::Duration d);
  // Replaces the staged (raw) device state by what goes on the wire (device_state_codec.h).
  void EncodeDeviceState(core::StagedEpoch& staged);

  SessionParts parts_;
  const SessionOptions options_;
  const Clock& clock_;
  Checkpointer checkpointer_;

  std::mutex gate_mu_;  // serialises every EgressGate call and the degrade decision

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool started_ = false;
  bool stopping_ = false;
  PairState state_ = PairState::kSeeding;
  std::string reason_;
  uint64_t generation_ = 0;                       // of the current stream
  std::shared_ptr<core::EpochStream> stream_;     // the current stream, for Cancel()
  std::map<uint64_t, Clock::TimePoint> unacked_;  // epoch -> when it was checkpointed
  uint64_t last_checkpoint_ = 0;
  uint64_t last_committed_ = 0;
  uint64_t reseeds_ = 0;
  Clock::TimePoint seed_started_{};
  Clock::Duration seed_time_{0};
  uint64_t seed_bytes_ = 0;        // guarded by mu_
  uint64_t sync_sent_ = 0;         // guarded by mu_: the last Sync() token
  bool full_seed_next_ = false;    // guarded by mu_: the backup was out of space
  uint64_t synced_ = 0;            // guarded by mu_: the last token the backup answered
  uint64_t seed_basis_bytes_ = 0;  // guarded by mu_
  std::deque<Clock::Duration> pauses_;  // the last 1000 pause totals
  uint64_t steady_epochs_ = 0, steady_pages_ = 0, steady_bytes_ = 0;
  int64_t witness_generation_ = 0;
  core::DeviceStateEncoder device_states_;  // epoch thread; reset with every new stream
  bool release_pending_ = false;  // degraded with a witness: output held until advanced
  Clock::TimePoint next_advance_attempt_{};
  bool fenced_ = false;           // guarded by mu_; changed only under gate_mu_ too
  bool fence_requested_ = false;  // guarded by mu_: Fence() called and no Unfence() since
  bool abandoned_ = false;        // guarded by mu_: Stop() releases nothing
  // Planned switchover (HandOver), guarded by mu_: asked for; its outcome once known (the final
  // epoch, or why it failed); done — the session's work ended with the guest paused.
  bool handover_requested_ = false;
  std::optional<StatusOr<HandOverResult>> handover_outcome_;
  Clock::TimePoint handover_paused_at_{};
  bool handed_over_ = false;
  bool taken_over_ = false;  // guarded by mu_: the backup runs the server (SessionStatus)

  std::thread epoch_thread_;
  std::thread watchdog_thread_;
};

}  // namespace novadt::engine
