// The fencing witness (ARCHITECTURE.md invariant 3): who owns each protected server, and the
// deadline by which an owner that can no longer prove its ownership must have paused its guest.
//
// Model. Every protected server has one owner host at a time and a fencing generation that grows
// whenever ownership moves to another host. An owner's claim lives only as long as its lease:
// the witness renews the lease in the background, and if renewals stop (crash, partition from
// the witness) the claim lapses after the lease TTL. The owner learns its *fence deadline* = the
// send time of the last successful renewal + TTL - fence margin, which always comes before the
// witness can let the claim lapse; an owner that has not renewed by then pauses its guests
// (self-fences). Another host moves ownership only with TakeOver(), which succeeds only once the
// old owner's claim has lapsed (so the old owner has self-fenced) and only for the caller that
// names the current owner and generation: of several contenders exactly one wins.
// See docs/witness.md; implemented over etcd by agent/witness/etcd_witness.h.
//
// This header knows no C library (STYLE.md rule 1): the engine sees only this interface.
//
// Thread safety: every method may be called from any thread, concurrently. Methods block on the
// witness (a few round trips, each bounded by the configured request timeout per endpoint), so
// call them from a worker thread, not from the event loop. Events are delivered in order on the
// witness's own keep-alive thread ("witness-renew") and must only be posted to the caller's
// event loop.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "agent/common/clock.h"
#include "agent/common/status.h"

namespace novadt::witness {

// The witness's record of one protected server.
struct Ownership {
  // The host that owns the server (live) or last owned it (not live).
  std::string owner;
  // Fencing generation: 1 on the first claim, +1 whenever ownership moves to another host (or
  // is claimed again after a Release()). Never decreases while the record exists.
  int64_t generation = 0;
  // True while the owner's lease keeps its claim alive. False once it lapsed (the owner stopped
  // renewing and has self-fenced) or was released.
  bool live = false;
  // The owner gave the server up with Release(); anyone may Claim() it.
  bool released = false;
  // The witness's lease that keeps a live claim (0 when not live). For logs and tests.
  int64_t lease_id = 0;
  bool operator==(const Ownership&) const = default;
};

// What the keep-alive thread tells the owner.
struct WitnessEvent {
  enum class Type {
    // A renewal succeeded: fence_deadline moved forward. Sent after every renewal (about every
    // TTL/3); an owner that paused only because its deadline passed may resume the guests it
    // still owns.
    kRenewed,
    // The witness says the lease is gone (it expired or was revoked): every claim of this host
    // lapsed. Pause every owned guest now (fence_deadline is already in the past) and keep each
    // one paused until kReclaimed names it.
    kLeaseLost,
    // After a kLeaseLost, instance_uuid is owned by this host again under a new lease, with the
    // same generation (nobody else owned it in between): its guest may resume. (Not sent for a
    // server the caller re-claimed itself with Claim() first: that call's result says so.)
    kReclaimed,
    // instance_uuid is no longer this host's: another host took it over (or the record was
    // removed). Its guest must stay paused; `ownership` is what the witness holds now (owner
    // empty when it holds nothing) and `reason` says why.
    kOwnershipLost,
  };
  Type type = Type::kRenewed;
  // FenceDeadline() right after the event.
  Clock::TimePoint fence_deadline = Clock::TimePoint::min();
  // kReclaimed, kOwnershipLost.
  std::string instance_uuid;
  // kReclaimed: this host's record; kOwnershipLost: the witness's record now.
  Ownership ownership;
  // kLeaseLost, kOwnershipLost: why.
  Status reason;
};

// Called on the keep-alive thread; must not block (post to the event loop and return).
using WitnessListener = std::function<void(const WitnessEvent&)>;

// The witness. All ownership changes are atomic on the witness's side; a method that fails with
// Unavailable or DeadlineExceeded may or may not have taken effect (Read() tells; retrying the
// same call is safe: every call is idempotent for its caller).
class Witness {
 public:
  virtual ~Witness() = default;

  // Makes `host` the live owner of the server, under this witness's lease. Succeeds when the
  // server has no record (generation 1), is already `host`'s (live, possibly under an older
  // lease of the same host, e.g. before an agent restart: moved to this witness's lease, same
  // generation), lapsed while `host` owned it (same generation: nobody else owned it since), or
  // was released (generation + 1). Returns the record.
  // FailedPrecondition: another host owns it (live) or last owned it and its claim lapsed —
  //   only TakeOver() may move it; the message names the owner and generation.
  // Unavailable / DeadlineExceeded: the witness could not be reached; DataLoss: a record that
  //   is not the witness's format.
  // REQUIRES: instance_uuid and host are not empty.
  virtual StatusOr<Ownership> Claim(const std::string& instance_uuid, const std::string& host) = 0;

  // Failover: moves ownership from `expected_owner` to `new_host` (under this witness's lease)
  // and bumps the generation to expected_generation + 1, atomically, only if the record still
  // names `expected_owner` at `expected_generation` and that owner's claim is not live (lapsed
  // or released). Of several callers with the same expectations exactly one succeeds. Returns
  // the new record; repeating a call that already won returns it again.
  // FailedPrecondition: the expected owner's claim is still live (it renews its lease, or its
  //   lease has not run out yet): not safe to take over; may succeed later (the message gives
  //   the lease's remaining TTL when known).
  // Aborted: the record no longer names expected_owner at expected_generation (someone else
  //   took over, or the expectation was stale); retrying with the same expectations cannot
  //   succeed. NotFound: no record for this server.
  // Unavailable / DeadlineExceeded / DataLoss: as for Claim().
  // REQUIRES: new_host != expected_owner, both not empty; expected_generation >= 1.
  virtual StatusOr<Ownership> TakeOver(const std::string& instance_uuid,
                                       const std::string& new_host,
                                       const std::string& expected_owner,
                                       int64_t expected_generation) = 0;

  // Makes every copy taken at an older generation useless for a failover: bumps the generation
  // of `host`'s live claim by one, atomically, keeping it live and `host`'s. A primary calls it
  // before it releases output that its backup's replica does not hold (the pair degraded): the
  // backup's TakeOver() naming the old generation then fails with Aborted, so it can never
  // resume the guest from before that output. Returns the new record.
  // FailedPrecondition: `host` holds no live claim on the server (another host owns it, or the
  //   claim lapsed or was released: Claim() first). NotFound: no record.
  // Unavailable / DeadlineExceeded / DataLoss: as for Claim(); the bump may or may not have
  //   happened (Read() tells) — the caller must not release the output yet.
  virtual StatusOr<Ownership> AdvanceGeneration(const std::string& instance_uuid,
                                                const std::string& host) = 0;

  // Gives up `host`'s ownership (planned failback, unprotect): the claim ends at once and the
  // record is marked released, keeping its generation, so any host may Claim() it (generation
  // + 1) or TakeOver(.., host, generation) it. OK also when already released by `host`. The
  // witness stops re-claiming the server even when the call fails.
  // FailedPrecondition: another host owns it or last owned it. NotFound: no record.
  // REQUIRES: `host`'s copy of the guest is paused or gone: another host may take over as soon
  // as this returns.
  virtual Status Release(const std::string& instance_uuid, const std::string& host) = 0;

  // Removes every trace of the server (its instance was deleted). Allowed when `host` owns or
  // last owned it, or it was released; OK when there is no record. Generations restart at 1
  // afterwards, so only for instances that are gone for good.
  // FailedPrecondition: another host owns or last owned it.
  virtual Status Forget(const std::string& instance_uuid, const std::string& host) = 0;

  // The witness's current record (a linearizable read). NotFound: no record.
  virtual StatusOr<Ownership> Read(const std::string& instance_uuid) = 0;

  // The time (on the injected Clock) by which this host must have paused every guest it owns
  // through this witness, unless a later renewal moves it: last successful renewal's send time
  // + lease TTL - fence margin. Clock::TimePoint::min() while this witness holds no lease (before
  // the first Claim()/TakeOver(), or after kLeaseLost until a new lease is granted). Does not
  // block. Not a substitute for kLeaseLost/kOwnershipLost: a guest that was not re-claimed stays
  // paused even though the deadline moved on.
  virtual Clock::TimePoint FenceDeadline() const = 0;
};

}  // namespace novadt::witness
