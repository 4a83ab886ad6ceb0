#include "agent/engine/primary_session.h"

#include <algorithm>

#include "agent/common/logging.h"
#include "agent/core/epoch_sender.h"
#include "agent/core/replica_basis.h"
#include "agent/engine/boot_files.h"
#include "agent/engine/qmp.h"

namespace novadt::engine {

std::string_view PairStateName(PairState s) {
  switch (s) {
    case PairState::kSeeding: return "seeding";
    case PairState::kProtected: return "protected";
    case PairState::kDegraded: return "degraded";
    case PairState::kUnprotected: return "unprotected";
  }
  return "unknown";
}

PrimarySession::PrimarySession(SessionParts parts, SessionOptions options, const Clock& clock)
    : parts_(std::move(parts)),
      options_(options),
      clock_(clock),
      checkpointer_(*parts_.hypervisor, parts_.open.instance_uuid, *parts_.tracker, *parts_.stager,
                    *parts_.gate, [this] { return parts_.capture->TakeWrites(); }, clock) {}

PrimarySession::~PrimarySession() { Stop(); }

void PrimarySession::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (started_) return;
  started_ = true;
  epoch_thread_ = std::thread([this] { EpochThread(); });
  watchdog_thread_ = std::thread([this] { WatchdogThread(); });
}

bool PrimarySession::Stopping() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stopping_;
}

void PrimarySession::Abandon(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    abandoned_ = true;
  }
  Stop();
  std::lock_guard<std::mutex> lock(mu_);
  reason_ = why;
}

void PrimarySession::Stop() {
  std::shared_ptr<core::EpochStream> stream;
  bool abandoned;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    stream = stream_;
    // After a switchover's final epoch the held output (what the guest sent after it) must
    // never leave from here: the backup may run the server. A guest resumed here after a failed
    // switchover gets it released by its next session (EgressGate::AdoptLeftovers).
    abandoned = abandoned_ || handed_over_ || taken_over_;
  }
  cv_.notify_all();
  if (stream) stream->Cancel();  // unblocks a send stuck on a stalled backup
  if (epoch_thread_.joinable()) epoch_thread_.join();
  if (watchdog_thread_.joinable()) watchdog_thread_.join();
  if (abandoned) {
    parts_.capture->Stop();
    std::lock_guard<std::mutex> lock(mu_);
    state_ = PairState::kUnprotected;
    stream_.reset();
    return;
  }
  bool held;
  {
    std::lock_guard<std::mutex> gate_lock(gate_mu_);
    held = parts_.gate->holds_output();
  }
  // The backup's replica is about to fall behind what clients see: it must never be restored
  // (docs/security.md, "unprotect"). Bounded; on failure the output still leaves (the operator
  // asked for an unprotected guest), loudly — without a witness only this keeps the backup
  // from resuming the stale copy should this host die now.
  if (Status released = parts_.link->Release(parts_.backup_address, parts_.open,
                                             options_.release_timeout);
      !released.ok() && !absl::IsUnimplemented(released) && !absl::IsNotFound(released)) {
    InstanceLog(parts_.open.instance_uuid)
        .Error("unprotecting: the backup did not confirm it will never restore its replica "
               "({}); should this host die now, a failover without a witness could resume it",
               released.ToString());
  }
  if (parts_.witness && witness_generation_ > 0 && held) {
    // Unprotecting releases output the replica lacks: make the replica useless first. Stop()
    // must stay bounded, so one attempt; on failure the output still leaves (the operator asked
    // for an unprotected guest), loudly.
    auto advanced =
        parts_.witness->AdvanceGeneration(parts_.open.instance_uuid, parts_.open.primary_host);
    if (!advanced.ok()) {
      InstanceLog(parts_.open.instance_uuid)
          .Error("unprotecting without advancing the witness generation ({}): the backup's "
                 "replica could still be resumed",
                 advanced.status().ToString());
    }
  }
  {
    std::lock_guard<std::mutex> gate_lock(gate_mu_);
    if (Status st = parts_.gate->ReleaseAll(); !st.ok()) {
      InstanceLog(parts_.open.instance_uuid).Error("cannot release held output: {}", st.ToString());
    }
  }
  parts_.capture->Stop();
  std::lock_guard<std::mutex> lock(mu_);
  state_ = PairState::kUnprotected;
  reason_ = "protection stopped";
  stream_.reset();
}

SessionStatus PrimarySession::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  SessionStatus s;
  s.state = state_;
  s.reason = reason_;
  s.last_checkpoint = last_checkpoint_;
  s.last_committed = last_committed_;
  s.reseeds = reseeds_;
  s.dirty_tracking = std::string(parts_.tracker->name());
  s.seed_time = seed_time_;
  s.seed_bytes = seed_bytes_;
  s.seed_basis_bytes = seed_basis_bytes_;
  s.steady_epochs = steady_epochs_;
  s.steady_pages = steady_pages_;
  s.steady_bytes = steady_bytes_;
  s.witness_generation = witness_generation_;
  s.fenced = fenced_;
  s.handing_over = handover_requested_ || handed_over_;
  s.taken_over = taken_over_;
  s.output_held_for_witness = release_pending_;
  if (!pauses_.empty()) {
    std::vector<Clock::Duration> sorted(pauses_.begin(), pauses_.end());
    std::sort(sorted.begin(), sorted.end());
    s.pause_p50 = sorted[sorted.size() / 2];
    s.pause_p99 = sorted[std::min(sorted.size() - 1, sorted.size() * 99 / 100)];
  }
  return s;
}

void PrimarySession::EncodeDeviceState(core::StagedEpoch& staged) {
  core::EncodedDeviceState e = device_states_.Encode(staged.device_state);
  staged.device_state = std::move(e.data);
  staged.device_state_encoding = e.encoding;
}

void PrimarySession::RecordPause(Clock::Duration d) {
  std::lock_guard<std::mutex> lock(mu_);
  pauses_.push_back(d);
  if (pauses_.size() > 1000) pauses_.pop_front();
}

void PrimarySession::Degrade(const std::string& reason) {
  std::shared_ptr<core::EpochStream> stream;
  {
    std::lock_guard<std::mutex> gate_lock(gate_mu_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_ || state_ == PairState::kDegraded || state_ == PairState::kUnprotected) return;
      state_ = PairState::kDegraded;
      reason_ = reason;
      unacked_.clear();
      stream = stream_;
      if (taken_over_) {
        reason_ += "; the backup runs the server now: nothing released, this copy stands down";
      } else if (parts_.witness && witness_generation_ > 0 && parts_.gate->holds_output()) {
        // The backup's replica may still be resumed: the output it lacks waits for the witness
        // (the watchdog advances the generation, then releases).
        release_pending_ = true;
        next_advance_attempt_ = clock_.Now();
        reason_ += "; output held until the witness advances the generation";
      }
    }
    // Availability first: whatever the backup has not confirmed leaves now.
    bool release_now;
    {
      std::lock_guard<std::mutex> lock(mu_);
      release_now = !release_pending_ && !taken_over_;
    }
    if (release_now) {
      if (Status st = parts_.gate->ReleaseAll(); !st.ok()) {
        InstanceLog(parts_.open.instance_uuid).Error("cannot release held output: {}", st.ToString());
      }
    }
  }
  InstanceLog(parts_.open.instance_uuid).Warn("protection degraded: {}", reason);
  if (stream) stream->Cancel();
  cv_.notify_all();
}

void PrimarySession::OnAck(uint64_t epoch) {
  std::lock_guard<std::mutex> gate_lock(gate_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ != PairState::kSeeding && state_ != PairState::kProtected) return;
  }
  // Stage VI on the primary: epoch `epoch` is durable on the backup; its frames may leave.
  if (Status st = parts_.gate->Release(epoch); !st.ok()) {
    InstanceLog(parts_.open.instance_uuid).Error("cannot release epoch {}: {}", epoch, st.ToString());
  }
  std::lock_guard<std::mutex> lock(mu_);
  last_committed_ = std::max(last_committed_, epoch);
  unacked_.erase(unacked_.begin(), unacked_.upper_bound(epoch));
  cv_.notify_all();  // a switchover's final epoch may be waiting for this
  if (state_ == PairState::kSeeding) {
    state_ = PairState::kProtected;
    reason_.clear();
    seed_time_ = clock_.Now() - seed_started_;
    InstanceLog(parts_.open.instance_uuid)
        .Info("protected: seeding took {} ms, sent {:.1f} MiB{}",
              std::chrono::duration_cast<std::chrono::milliseconds>(seed_time_).count(),
              seed_bytes_ / 1048576.0,
              seed_basis_bytes_ ? fmt::format(" ({:.1f} MiB were already on the backup)",
                                              seed_basis_bytes_ / 1048576.0)
                                : std::string());
  }
}

void PrimarySession::OnStreamDone(const Status& st, uint64_t generation) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (generation != generation_ || stopping_) return;
    if (core::IsTakenOverRefusal(st)) taken_over_ = true;
    // The backup's file system is full: seeding in place over the replica needs more room than
    // replacing it (a full seed frees the old replica first).
    if (absl::IsResourceExhausted(st)) full_seed_next_ = true;
  }
  Degrade(st.ok() ? "backup closed the replication stream"
                  : "replication stream ended: " + std::string(st.message()));
}

void PrimarySession::WatchdogThread() {
  const auto tick = std::min<Clock::Duration>(std::chrono::milliseconds(50), options_.degrade_after / 4);
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, tick);
    if (!stopping_ && release_pending_ && clock_.Now() >= next_advance_attempt_) {
      ReleaseHeldForWitness(lock);
    }
    if (stopping_ || unacked_.empty()) continue;
    if (state_ != PairState::kSeeding && state_ != PairState::kProtected) continue;
    const auto& [epoch, taken] = *unacked_.begin();
    if (clock_.Now() - taken <= options_.degrade_after) continue;
    const std::string reason = "backup did not acknowledge epoch " + std::to_string(epoch) +
                               " within " + std::to_string(options_.degrade_after.count()) + " ms";
    lock.unlock();
    Degrade(reason);
    lock.lock();
  }
}

void PrimarySession::ReleaseHeldForWitness(std::unique_lock<std::mutex>& lock) {
  const std::string& uuid = parts_.open.instance_uuid;
  lock.unlock();
  auto advanced = parts_.witness->AdvanceGeneration(uuid, parts_.open.primary_host);
  Status released;
  if (advanced.ok()) {
    std::lock_guard<std::mutex> gate_lock(gate_mu_);
    released = parts_.gate->ReleaseAll();
  }
  lock.lock();
  if (!advanced.ok()) {
    // Unreachable witness: retry; a claim that lapsed or moved means this copy is fenced and
    // its output must never leave (the agent stops the guest).
    next_advance_attempt_ = clock_.Now() + std::chrono::milliseconds(200);
    const std::string why = "output held: the witness did not advance the generation: " +
                            std::string(advanced.status().message());
    if (reason_.find(why) == std::string::npos) {
      InstanceLog(uuid).Warn("{}", why);
      const size_t cut = reason_.find("; output held");
      reason_ = reason_.substr(0, cut) + "; " + why;
    }
    return;
  }
  witness_generation_ = advanced->generation;
  if (!released.ok()) {
    InstanceLog(uuid).Error("cannot release held output: {}", released.ToString());
  }
  release_pending_ = false;
  const size_t cut = reason_.find("; output held");
  reason_ = reason_.substr(0, cut) + "; output released (witness generation " +
            std::to_string(witness_generation_) + ")";
  InstanceLog(uuid).Info("witness generation advanced to {}: held output released",
                         witness_generation_);
  cv_.notify_all();
}

StatusOr<int64_t> PrimarySession::ClaimOwnership() {
  const std::string& uuid = parts_.open.instance_uuid;
  for (;;) {
    auto claimed = parts_.witness->Claim(uuid, parts_.open.primary_host);
    if (claimed.ok()) return claimed->generation;
    if (!absl::IsUnavailable(claimed.status()) && !absl::IsDeadlineExceeded(claimed.status())) {
      return absl::FailedPreconditionError("the witness refuses this host's claim: " +
                                           std::string(claimed.status().message()));
    }
    std::unique_lock<std::mutex> lock(mu_);
    reason_ = "waiting for the witness: " + std::string(claimed.status().message());
    if (cv_.wait_for(lock, std::chrono::milliseconds(500), [this] { return stopping_; })) {
      return absl::CancelledError("stopped while waiting for the witness");
    }
  }
}

Status PrimarySession::Fence(const std::string& why) {
  std::lock_guard<std::mutex> gate_lock(gate_mu_);  // never inside a checkpoint's pause
  {
    std::lock_guard<std::mutex> lock(mu_);
    fence_requested_ = true;  // also when a switchover's pause fenced it already: it stays
    if (fenced_) return absl::OkStatus();
  }
  NOVA_DT_RETURN_IF_ERROR(
      QmpCall(*parts_.hypervisor, parts_.open.instance_uuid, {{"execute", "stop"}}).status());
  std::lock_guard<std::mutex> lock(mu_);
  fenced_ = true;
  InstanceLog(parts_.open.instance_uuid).Warn("guest fenced (paused): {}", why);
  return absl::OkStatus();
}

Status PrimarySession::Unfence() {
  std::lock_guard<std::mutex> gate_lock(gate_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    fence_requested_ = false;
    if (!fenced_) return absl::OkStatus();
    if (handed_over_ || handover_requested_) {
      return absl::FailedPreconditionError("guest paused for a switchover: not resumed here");
    }
  }
  return ResumeFencedGuest();
}

Status PrimarySession::ResumeFencedGuest() {
  NOVA_DT_RETURN_IF_ERROR(
      QmpCall(*parts_.hypervisor, parts_.open.instance_uuid, {{"execute", "cont"}}).status());
  std::lock_guard<std::mutex> lock(mu_);
  fenced_ = false;
  InstanceLog(parts_.open.instance_uuid).Info("guest unfenced (running)");
  return absl::OkStatus();
}

StatusOr<PrimarySession::HandOverResult> PrimarySession::HandOver() {
  std::unique_lock<std::mutex> lock(mu_);
  if (stopping_ || handed_over_) return absl::FailedPreconditionError("protection has ended");
  if (handover_requested_) return absl::FailedPreconditionError("a switchover is under way");
  if (state_ != PairState::kProtected) {
    return absl::FailedPreconditionError("the pair is " + std::string(PairStateName(state_)) +
                                         (reason_.empty() ? "" : ": " + reason_));
  }
  if (fenced_) return absl::FailedPreconditionError("the guest is fenced: " + reason_);
  handover_requested_ = true;
  handover_outcome_.reset();
  cv_.notify_all();
  // The epoch thread answers within one epoch interval, one checkpoint and the degrade bound.
  cv_.wait(lock, [this] { return handover_outcome_.has_value() || stopping_; });
  if (!handover_outcome_) return absl::CancelledError("protection stopped during the switchover");
  return *handover_outcome_;
}

Status PrimarySession::FinishHandOver(core::EpochStream& stream, uint64_t epoch) {
  const InstanceLog log(parts_.open.instance_uuid);
  Status st;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] {
      return stopping_ || state_ == PairState::kDegraded || last_committed_ >= epoch;
    });
    if (last_committed_ < epoch) {
      st = absl::AbortedError("final epoch " + std::to_string(epoch) + " not committed: " +
                              (stopping_ ? std::string("protection stopped") : reason_));
    }
  }
  if (st.ok()) {
    // Epoch `epoch`'s frames left with its ack; the next epoch's buffer (opened just before the
    // final pause) holds frames sent before it too, so the backup's copy has sent them as well:
    // they must leave. But frames released while the VM is stopped wait in QEMU's queue until
    // the VM runs (QEMU sends no packet of a stopped VM). So a last buffer, never released,
    // takes whatever the guest sends from now on; the held frames are released; the guest runs
    // for one QMP round trip, during which QEMU sends the queued frames as the VM starts; and
    // it is stopped again. Nothing it does meanwhile is ever seen (its output stays held and
    // this copy is destroyed); the backup resumes from `epoch`.
    std::lock_guard<std::mutex> gate_lock(gate_mu_);
    st = parts_.gate->Open(epoch + 2);
    if (st.ok()) st = parts_.gate->Release(epoch + 1);
    auto& hv = *parts_.hypervisor;
    const std::string& uuid = parts_.open.instance_uuid;
    if (st.ok()) st = QmpCall(hv, uuid, {{"execute", "cont"}}).status();
    if (st.ok()) {
      st = QmpCall(hv, uuid, {{"execute", "stop"}}).status();
      if (!st.ok()) st = absl::InternalError("cannot pause the guest again: " + st.ToString());
    }
  }
  if (st.ok()) {
    {
      // Before the stream ends: its end must not read as a degraded pair (which would release
      // the last buffer and, with a witness, advance the generation the backup takes over).
      std::lock_guard<std::mutex> lock(mu_);
      handed_over_ = true;
      state_ = PairState::kUnprotected;
      reason_ = "handed over at epoch " + std::to_string(epoch) + ": guest paused here";
    }
    if (Status fin = stream.Finish(std::chrono::seconds(2)); !fin.ok()) {
      log.Warn("final stream close: {}", fin.ToString());  // the replica is committed anyway
    }
    std::lock_guard<std::mutex> lock(mu_);
    handover_requested_ = false;
    handover_outcome_ = HandOverResult{epoch, handover_paused_at_};
    cv_.notify_all();
    log.Info("final epoch {} committed, all output released: ready to hand over", epoch);
    return absl::OkStatus();
  }
  FailHandOver(st);
  return st;
}

void PrimarySession::FailHandOver(const Status& why) {
  {
    // handover_requested_ stays set meanwhile, so no second switchover starts from the pause.
    std::lock_guard<std::mutex> gate_lock(gate_mu_);
    bool keep_fenced;
    {
      std::lock_guard<std::mutex> lock(mu_);
      keep_fenced = fence_requested_;
    }
    if (Status resumed = keep_fenced ? absl::OkStatus() : ResumeFencedGuest(); !resumed.ok()) {
      InstanceLog(parts_.open.instance_uuid)
          .Error("switchover failed and the guest cannot be resumed: {}", resumed.ToString());
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  handover_requested_ = false;
  handover_outcome_ = why;
  cv_.notify_all();
}

Status PrimarySession::PauseAndArm() {
  auto& hv = *parts_.hypervisor;
  const std::string& uuid = parts_.open.instance_uuid;
  std::lock_guard<std::mutex> gate_lock(gate_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (fenced_) return absl::AbortedError("guest fenced");
  }
  NOVA_DT_RETURN_IF_ERROR(QmpCall(hv, uuid, {{"execute", "stop"}}).status());
  Status armed = parts_.tracker->Reset();
  Status resumed = QmpCall(hv, uuid, {{"execute", "cont"}}).status();
  if (!resumed.ok()) return absl::InternalError("cannot resume the guest: " + resumed.ToString());
  return armed;
}

Status PrimarySession::Drain(core::EpochStream& stream) {
  uint64_t token;
  {
    std::lock_guard<std::mutex> lock(mu_);
    token = ++sync_sent_;
  }
  Status sent = stream.Sync(token);
  if (absl::IsUnimplemented(sent)) return absl::OkStatus();  // a link without barriers
  NOVA_DT_RETURN_IF_ERROR(sent);
  std::unique_lock<std::mutex> lock(mu_);
  const bool done = cv_.wait_for(lock, options_.seed_drain_timeout, [&] {
    return stopping_ || state_ == PairState::kDegraded || synced_ >= token;
  });
  if (stopping_) return absl::CancelledError("stopped while seeding");
  if (state_ == PairState::kDegraded) return absl::AbortedError(reason_);
  if (!done) {
    return absl::DeadlineExceededError(
        "the backup did not receive the seed within " +
        std::to_string(options_.seed_drain_timeout.count()) + " ms");
  }
  return absl::OkStatus();
}

StatusOr<std::optional<core::ReplicaBasis>> PrimarySession::FetchBasis() {
  const InstanceLog log(parts_.open.instance_uuid);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (std::exchange(full_seed_next_, false)) {
      log.Info("seeding in full: the backup ran out of space (a new replica replaces the old)");
      return std::nullopt;
    }
  }
  auto basis = parts_.link->Basis(parts_.backup_address, parts_.open, options_.basis_timeout);
  if (!basis.ok()) {
    if (core::IsTakenOverRefusal(basis.status())) return basis.status();
    if (!absl::IsUnimplemented(basis.status())) {
      log.Info("seeding in full: no basis from the backup ({})", basis.status().ToString());
    }
    return std::nullopt;
  }
  if (!basis->Fits(parts_.open.ram_size_bytes, parts_.open.disks)) {
    log.Info("seeding in full: the backup's replica has another geometry");
    return std::nullopt;
  }
  return std::optional<core::ReplicaBasis>(*std::move(basis));
}

namespace {

std::string_view PageBytes(const char* page) { return {page, core::kGuestPageSize}; }

}  // namespace

// What a seed has sent so far: the hash of every page as the replica holds it (sent in this
// epoch, or the basis's), and the disk filter, which must see every write in order.
struct PrimarySession::SeedCopy {
  SeedCopy(core::EpochStream& stream, uint64_t pages, const core::ReplicaBasis* basis,
           const std::vector<core::DiskGeometry>& disks)
      : epoch1(stream, 1), sent_hash(pages), basis(basis),
        filter(basis ? core::DiskBasisFilter(disks, basis->disk_blocks)
                     : core::DiskBasisFilter()) {}
  core::EpochWriter epoch1;
  std::vector<core::ContentHash> sent_hash;
  const core::ReplicaBasis* basis;  // may be null
  core::DiskBasisFilter filter;
  uint64_t sent_bytes = 0;    // page and disk payload
  uint64_t basis_pages = 0;   // left out: the basis holds them
};

Status PrimarySession::SendDiskWrites(SeedCopy& copy, std::vector<core::DiskWrite> writes) {
  std::vector<core::DiskWrite> out;
  out.reserve(writes.size());
  for (auto& w : writes) copy.filter.Filter(std::move(w), out);
  for (const auto& w : out) copy.sent_bytes += w.data.size();
  return copy.epoch1.DiskWrites(out);
}

Status PrimarySession::SendAllPages(SeedCopy& copy) {
  const uint64_t pages = copy.sent_hash.size();
  core::StagedEpoch slice, to_send;
  for (uint64_t first = 0; first < pages; first += options_.seed_slice_pages) {
    if (Stopping()) return absl::CancelledError("stopped while seeding");
    const uint64_t n = std::min(options_.seed_slice_pages, pages - first);
    NOVA_DT_RETURN_IF_ERROR(parts_.stager->StageRange(first, n, slice));
    // Hash the copy, not the live page: what is remembered as sent must be the bytes sent.
    for (uint64_t i = 0; i < n; ++i) {
      copy.sent_hash[first + i] =
          core::HashContent(PageBytes(slice.page_data.data() + i * core::kGuestPageSize));
    }
    if (copy.basis) {
      to_send.page_index.clear();
      to_send.page_data.clear();
      for (uint64_t i = 0; i < n; ++i) {
        if (copy.sent_hash[first + i] == copy.basis->ram_pages[first + i]) {
          ++copy.basis_pages;
          continue;
        }
        to_send.page_index.push_back(first + i);
        to_send.page_data.append(slice.page_data, i * core::kGuestPageSize,
                                 core::kGuestPageSize);
      }
    }
    const core::StagedEpoch& out = copy.basis ? to_send : slice;
    copy.sent_bytes += out.page_data.size();
    NOVA_DT_RETURN_IF_ERROR(copy.epoch1.Pages(out));
  }
  return absl::OkStatus();
}

StatusOr<uint64_t> PrimarySession::SendChangedPages(SeedCopy& copy) {
  core::StagedEpoch to_send;
  uint64_t sent = 0;
  const auto flush = [&]() -> Status {
    if (to_send.page_index.empty()) return absl::OkStatus();
    sent += to_send.page_data.size();
    Status st = copy.epoch1.Pages(to_send);
    to_send.page_index.clear();
    to_send.page_data.clear();
    return st;
  };
  for (uint64_t p = 0; p < copy.sent_hash.size(); ++p) {
    if (core::HashContent(PageBytes(parts_.stager->page(p))) == copy.sent_hash[p]) continue;
    if (Stopping()) return absl::CancelledError("stopped while seeding");
    to_send.page_index.push_back(p);
    to_send.page_data.append(parts_.stager->page(p), core::kGuestPageSize);
    copy.sent_hash[p] = core::HashContent(
        PageBytes(to_send.page_data.data() + to_send.page_data.size() - core::kGuestPageSize));
    if (to_send.page_index.size() >= options_.seed_slice_pages) NOVA_DT_RETURN_IF_ERROR(flush());
  }
  NOVA_DT_RETURN_IF_ERROR(flush());
  copy.sent_bytes += sent;
  return sent;
}

Status PrimarySession::Seed(core::EpochStream& stream, core::StagedEpoch& staged,
                            const core::ReplicaBasis* basis) {
  // Output is not held while seeding: without a committed replica there is nothing to fail
  // over to, so nothing the guest says could be lost by a failover. Holding starts with the
  // first checkpoint (which opens egress epoch 2).
  NOVA_DT_RETURN_IF_ERROR(checkpointer_.Prepare());
  NOVA_DT_RETURN_IF_ERROR(PauseAndArm());
  NOVA_DT_RETURN_IF_ERROR(parts_.capture->Start(options_.capture_ready_timeout));
  const InstanceLog log(parts_.open.instance_uuid);
  SeedCopy copy(stream, parts_.stager->page_count(), basis, parts_.open.disks);
  NOVA_DT_RETURN_IF_ERROR(copy.epoch1.Begin());
  // Everything before the first pause goes while the guest runs, and each pass ends with a
  // barrier (Drain): the next pass, and finally the pause, starts once the backup has all sent
  // so far — so what the pause sends, whose ack gates the first held output, is not queued
  // behind megabytes still in flight.
  //
  // 1. The disks' initial copy (buffered by the capture by now).
  NOVA_DT_RETURN_IF_ERROR(SendDiskWrites(copy, parts_.capture->TakeWrites()));
  NOVA_DT_RETURN_IF_ERROR(Drain(stream));
  // 2. All of RAM. The copy races with the guest: the dirty tracker knows what changed since it
  // was armed, not what the copy caught (a page changed and changed back while it was copied
  // would look clean but reach the replica half-way). Hence the hashes of what was sent.
  NOVA_DT_RETURN_IF_ERROR(SendAllPages(copy));
  NOVA_DT_RETURN_IF_ERROR(SendDiskWrites(copy, parts_.capture->TakeWrites()));
  NOVA_DT_RETURN_IF_ERROR(Drain(stream));
  // 3. Pre-copy rounds (as live migration's): what changed since it was sent, until a round
  // (sent and received) takes at most a quarter of the degrade bound. The first pause then
  // sends about what changed during that round, and its ack comes well within the bound.
  for (int round = 0; round < options_.seed_precopy_rounds; ++round) {
    const auto round_start = clock_.Now();
    auto sent = SendChangedPages(copy);
    if (!sent.ok()) return sent.status();
    NOVA_DT_RETURN_IF_ERROR(SendDiskWrites(copy, parts_.capture->TakeWrites()));
    NOVA_DT_RETURN_IF_ERROR(Drain(stream));
    const auto took = clock_.Now() - round_start;
    log.Info("seeding round {}: {:.1f} MiB changed since sent, received in {} ms", round + 1,
             *sent / 1048576.0,
             std::chrono::duration_cast<std::chrono::milliseconds>(took).count());
    if (took <= options_.degrade_after / 4) break;
  }
  // 4. The first pause: the replica lacks exactly the pages whose bytes differ from what it
  // got; that set replaces the tracker's (every page changed since it was armed, also those
  // the rounds sent again since).
  const uint64_t pages = copy.sent_hash.size();
  const auto what_the_replica_lacks = [&](dirty::DirtyPages& dirty) {
    dirty = dirty::DirtyPages(pages);
    for (uint64_t p = 0; p < pages; ++p) {
      if (core::HashContent(PageBytes(parts_.stager->page(p))) != copy.sent_hash[p]) {
        dirty.Insert(p);
      }
    }
  };
  {
    std::lock_guard<std::mutex> gate_lock(gate_mu_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (state_ != PairState::kSeeding) return absl::AbortedError(reason_);
      if (fenced_) return absl::AbortedError("guest fenced while seeding");
    }
    auto t = checkpointer_.Take(1, staged, what_the_replica_lacks);
    if (!t.ok()) return t.status();
    RecordPause(t->total);
    std::lock_guard<std::mutex> lock(mu_);
    unacked_[1] = clock_.Now();
    last_checkpoint_ = 1;
  }
  NOVA_DT_RETURN_IF_ERROR(copy.epoch1.Pages(staged));
  const uint64_t before_pause = copy.sent_bytes;
  copy.sent_bytes += staged.page_data.size();
  NOVA_DT_RETURN_IF_ERROR(SendDiskWrites(copy, std::move(staged.disk_writes)));
  log.Info("seeding: the first pause took {} pages and {:.1f} MiB in all, device state {} KiB",
           staged.page_index.size(), (copy.sent_bytes - before_pause) / 1048576.0,
           staged.device_state.size() / 1024);
  {
    std::lock_guard<std::mutex> lock(mu_);
    seed_bytes_ = copy.sent_bytes;
    seed_basis_bytes_ = copy.basis_pages * core::kGuestPageSize + copy.filter.skipped_bytes();
  }
  device_states_.Reset();  // a new stream: its first state goes whole
  EncodeDeviceState(staged);
  return copy.epoch1.End(staged.device_state, staged.device_state_encoding);
}

Status PrimarySession::Protect() {
  uint64_t generation;
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation = ++generation_;
    state_ = PairState::kSeeding;
    reason_ = "seeding the replica on " + parts_.backup_address;
    unacked_.clear();
    last_committed_ = 0;
    steady_epochs_ = steady_pages_ = steady_bytes_ = 0;
    seed_started_ = clock_.Now();
  }
  if (parts_.witness) {
    auto claimed = ClaimOwnership();
    if (!claimed.ok()) return claimed.status();
    std::lock_guard<std::mutex> lock(mu_);
    witness_generation_ = *claimed;
    parts_.open.witness_generation = *claimed;
    reason_ = "seeding the replica on " + parts_.backup_address;
  }
  core::EpochStreamCallbacks callbacks;
  callbacks.on_ack = [this, generation](const core::StreamAck& ack) {
    if (ack.kind == core::StreamAck::Kind::kHeartbeat) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (generation != generation_) return;
      if (ack.kind == core::StreamAck::Kind::kSynced) {
        synced_ = std::max(synced_, ack.epoch);
        cv_.notify_all();
        return;
      }
    }
    OnAck(ack.epoch);
  };
  callbacks.on_done = [this, generation](const Status& st) { OnStreamDone(st, generation); };
  // The boot files as they are now (what the stream declares is what it sends), first: one that
  // cannot be sent fails the seed before the backup is asked for anything.
  auto boot = BootFileSource::Open(parts_.instances_path, parts_.open.instance_uuid,
                                   parts_.boot_files, options_.max_boot_file_bytes);
  if (!boot.ok()) return boot.status();
  parts_.open.boot_files = boot->declared();
  // Before the stream opens (asking for a basis ends a stream of ours still open there).
  auto fetched = FetchBasis();
  if (!fetched.ok()) return fetched.status();
  const std::optional<core::ReplicaBasis> basis = *std::move(fetched);
  parts_.open.basis_id = basis ? basis->id : 0;
  // Without boot files the stream is one a backup before protocol 4 accepts too.
  parts_.open.protocol = parts_.open.boot_files.empty() ? core::kBasisProtocolVersion
                                                        : core::kBootFilesProtocolVersion;
  auto opened = parts_.link->Open(parts_.backup_address, parts_.open, std::move(callbacks));
  if (!opened.ok()) return opened.status();
  std::shared_ptr<core::EpochStream> stream = *std::move(opened);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stream_ = stream;
    if (stopping_) return absl::OkStatus();
  }
  if (!parts_.open.boot_files.empty()) {
    const auto sent_from = clock_.Now();
    NOVA_DT_RETURN_IF_ERROR(boot->Send(*stream));
    std::string what;
    for (const auto& f : parts_.open.boot_files) {
      what += fmt::format("{}{} ({:.1f} MiB)", what.empty() ? "" : ", ", f.name,
                          f.size_bytes / 1048576.0);
    }
    InstanceLog(parts_.open.instance_uuid)
        .Info("boot files sent to the backup in {} ms: {}",
              std::chrono::duration_cast<std::chrono::milliseconds>(clock_.Now() - sent_from)
                  .count(),
              what);
  }

  core::StagedEpoch staged;
  RamStager::Prefault(staged, std::min<uint64_t>(parts_.stager->page_count(), 16384));
  NOVA_DT_RETURN_IF_ERROR(Seed(*stream, staged, basis ? &*basis : nullptr));

  auto next_tick = clock_.Now() + options_.epoch;
  for (uint64_t epoch = 2;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      // The epoch clock is injected: wait in small real-time steps and re-check it.
      while (!stopping_ && state_ != PairState::kDegraded && !handover_requested_ &&
             clock_.Now() < next_tick) {
        cv_.wait_for(lock, std::min<Clock::Duration>(next_tick - clock_.Now(),
                                                     std::chrono::milliseconds(10)));
      }
      if (stopping_) return absl::OkStatus();
      if (state_ == PairState::kDegraded) return absl::AbortedError(reason_);
    }
    next_tick = clock_.Now() + options_.epoch;
    bool final = false;  // a switchover's last epoch: the guest stays paused
    {
      std::lock_guard<std::mutex> gate_lock(gate_mu_);
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (state_ == PairState::kDegraded) return absl::AbortedError(reason_);
        // A fenced guest stays paused: no checkpoint (its `cont` would resume it); the same
        // epoch is tried at the next tick. Unacknowledged epochs age, and the pair degrades if
        // the fence lasts.
        if (fenced_) {
          if (handover_requested_) {  // fenced meanwhile: no switchover from a paused guest
            handover_requested_ = false;
            handover_outcome_ = absl::FailedPreconditionError("the guest was fenced: " + reason_);
            cv_.notify_all();
          }
          continue;
        }
        final = handover_requested_;
      }
      auto t = checkpointer_.Take(epoch, staged, nullptr,
                                  final ? Checkpointer::After::kStayPaused
                                        : Checkpointer::After::kResume);
      if (!t.ok()) {
        Status failed = absl::InternalError("checkpoint " + std::to_string(epoch) +
                                            " failed: " + std::string(t.status().message()));
        if (final) {
          std::lock_guard<std::mutex> lock(mu_);
          handover_requested_ = false;
          handover_outcome_ = failed;
          cv_.notify_all();
        }
        return failed;
      }
      RecordPause(t->total);
      std::lock_guard<std::mutex> lock(mu_);
      if (final) {
        handover_paused_at_ = clock_.Now() - t->total;
        fenced_ = true;  // nothing resumes it here any more
        reason_ = "switchover: final epoch " + std::to_string(epoch) + " taken, guest paused";
      }
      unacked_[epoch] = clock_.Now();
      last_checkpoint_ = epoch++;
    }
    {
      EncodeDeviceState(staged);  // after `cont`: off the pause
      Status sent = core::SendEpoch(staged, *stream);
      if (!sent.ok() && final) FailHandOver(sent);
      if (!sent.ok()) return sent;
      uint64_t bytes = staged.page_data.size() + staged.device_state.size();
      for (const auto& w : staged.disk_writes) bytes += w.data.size();
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++steady_epochs_;
        steady_pages_ += staged.page_index.size();
        steady_bytes_ += bytes;
      }
      if (final) return FinishHandOver(*stream, epoch - 1);
    }
  }
}

void PrimarySession::EpochThread() {
  const InstanceLog log(parts_.open.instance_uuid);
  while (!Stopping()) {
    Status st = Protect();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (core::IsTakenOverRefusal(st)) taken_over_ = true;
      if (absl::IsResourceExhausted(st)) full_seed_next_ = true;  // see OnStreamDone
      if (handover_requested_) {  // the attempt ended before the final epoch was taken
        handover_requested_ = false;
        handover_outcome_ = st.ok() ? absl::AbortedError("protection ended") : st;
        cv_.notify_all();
      }
      if (handed_over_) break;  // the guest is paused for good; the agent hands it over
    }
    if (Stopping()) break;
    Degrade(st.ok() ? "protection ended" : std::string(st.message()));
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (taken_over_) break;  // no re-seed: the agent stands this copy down
    }
    std::shared_ptr<core::EpochStream> stream;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stream = std::move(stream_);
    }
    if (stream) stream->Cancel();
    stream.reset();
    parts_.capture->Stop();
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, options_.reseed_after, [this] { return stopping_; });
    // Output held for the witness must leave (or the guest be fenced for good) before a new
    // attempt opens egress epochs again.
    cv_.wait(lock, [this] { return stopping_ || !release_pending_; });
    if (stopping_) break;
    ++reseeds_;
    log.Info("re-seeding to {} (attempt {})", parts_.backup_address, reseeds_);
  }
}

}  // namespace novadt::engine
