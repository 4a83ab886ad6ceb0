// Stage VII's failure detector on the backup: a phi accrual detector (Hayashibara et al., as in
// Akka and Cassandra) over the arrival times of anything heard from the primary on the
// replication stream. Instead of a fixed timeout it learns the inter-arrival distribution, so a
// link with jitter and retransmissions (loss) does not look like a dead primary, while a really
// silent primary is suspected within a bounded time:
//
//   suspect  ⇔  silence ≥ min_silence  AND  phi(silence) ≥ phi_threshold
//              OR silence ≥ max_silence (whatever the history)
//
// phi = -log10(P(an arrival comes later than `silence`)) under a normal distribution fitted to the
// last `window` inter-arrival times (standard deviation floored at `min_stddev`).
//
// Not thread-safe: one detector per primary, used on the agent's loop thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>

#include "agent/common/clock.h"

namespace novadt::core {

struct FailureDetectorOptions {
  // Expected interval between arrivals; seeds the distribution before real samples exist.
  std::chrono::milliseconds heartbeat_interval{100};
  // Never suspect a shorter silence ([replication] heartbeat_timeout_ms).
  std::chrono::milliseconds min_silence{500};
  // Always suspect a longer silence, however erratic the link was.
  std::chrono::milliseconds max_silence{5000};
  double phi_threshold = 8.0;
  size_t window = 200;
  // Floor of the standard deviation: arrivals within this jitter of the mean are ordinary.
  std::chrono::milliseconds min_stddev{50};
};

class AccrualFailureDetector {
 public:
  explicit AccrualFailureDetector(FailureDetectorOptions options);

  // Something arrived at `now` (REQUIRES: `now` not before the previous call).
  void Heartbeat(Clock::TimePoint now);
  // False before the first Heartbeat().
  bool started() const { return started_; }
  Clock::Duration Silence(Clock::TimePoint now) const;
  // Suspicion level for the current silence; 0 before the first Heartbeat().
  double Phi(Clock::TimePoint now) const;
  bool Suspect(Clock::TimePoint now) const;

  // The fitted distribution, in milliseconds (for status and logs).
  double mean_ms() const;
  double stddev_ms() const;

 private:
  double PhiOf(double silence_ms) const;

  FailureDetectorOptions options_;
  bool started_ = false;
  Clock::TimePoint last_{};
  std::deque<double> intervals_ms_;  // the window
  double sum_ = 0;
  double sum_sq_ = 0;
};

}  // namespace novadt::core
