#include "agent/core/failure_detector.h"

#include <algorithm>
#include <cmath>

namespace novadt::core {
namespace {

double Ms(Clock::Duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

}  // namespace

AccrualFailureDetector::AccrualFailureDetector(FailureDetectorOptions options)
    : options_(options) {
  // Seed with the expected interval (as Akka's first-heartbeat estimate): two samples at
  // interval ± interval/4 give that mean and a plausible spread until real ones arrive.
  const double i = static_cast<double>(options_.heartbeat_interval.count());
  for (double seed : {i - i / 4, i + i / 4}) {
    intervals_ms_.push_back(seed);
    sum_ += seed;
    sum_sq_ += seed * seed;
  }
}

void AccrualFailureDetector::Heartbeat(Clock::TimePoint now) {
  if (started_) {
    const double interval = Ms(now - last_);
    intervals_ms_.push_back(interval);
    sum_ += interval;
    sum_sq_ += interval * interval;
    while (intervals_ms_.size() > std::max<size_t>(options_.window, 2)) {
      sum_ -= intervals_ms_.front();
      sum_sq_ -= intervals_ms_.front() * intervals_ms_.front();
      intervals_ms_.pop_front();
    }
  }
  started_ = true;
  last_ = now;
}

Clock::Duration AccrualFailureDetector::Silence(Clock::TimePoint now) const {
  return started_ ? now - last_ : Clock::Duration(0);
}

double AccrualFailureDetector::mean_ms() const {
  return sum_ / static_cast<double>(intervals_ms_.size());
}

double AccrualFailureDetector::stddev_ms() const {
  const double n = static_cast<double>(intervals_ms_.size());
  const double mean = sum_ / n;
  const double variance = std::max(0.0, sum_sq_ / n - mean * mean);
  return std::max(std::sqrt(variance), static_cast<double>(options_.min_stddev.count()));
}

double AccrualFailureDetector::PhiOf(double silence_ms) const {
  // P(arrival later than t) for a normal distribution, with the logistic approximation of the
  // CDF that Akka uses (accurate to ~1e-4, and finite far into the tail).
  const double y = (silence_ms - mean_ms()) / stddev_ms();
  const double e = std::exp(-y * (1.5976 + 0.070566 * y * y));
  if (silence_ms > mean_ms()) return -std::log10(e / (1.0 + e));
  return -std::log10(1.0 - 1.0 / (1.0 + e));
}

double AccrualFailureDetector::Phi(Clock::TimePoint now) const {
  return started_ ? PhiOf(Ms(now - last_)) : 0.0;
}

bool AccrualFailureDetector::Suspect(Clock::TimePoint now) const {
  if (!started_) return false;
  const Clock::Duration silence = now - last_;
  if (silence >= options_.max_silence) return true;
  return silence >= options_.min_silence && Phi(now) >= options_.phi_threshold;
}

}  // namespace novadt::core
