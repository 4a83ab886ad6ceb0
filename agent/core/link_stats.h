// Figures of the replication links this agent sends on, for the scheduler's DTPairWeigher
// (nova-integration/nova_dt/scheduler/link_stats.py, which documents the file the controller
// builds from them): per backup host, the round-trip time of our last answered hello, the
// replication rate (payload bytes per second streamed to it over the last interval, all
// protected servers together) and the link capacity the operator configured. The weigher turns
// rate and capacity into an M/M/1 queueing delay.
//
// Pure bookkeeping on the loop thread; the agent publishes the result as `dt.link.stats`.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "agent/common/clock.h"
#include "agent/core/peer_tracker.h"

namespace novadt::core {

struct LinkFigures {
  std::string source;  // this host (the primary side)
  std::string target;  // the backup host
  int64_t rtt_us = 0;
  uint64_t rate_bytes_per_s = 0;
  uint64_t capacity_bytes_per_s = 0;
};

// What one protected server (primary side) has streamed so far in its current protection
// attempt. The count may restart from zero (re-seeding starts a new attempt).
struct StreamedBytes {
  std::string instance_uuid;
  std::string backup_host;
  uint64_t bytes = 0;
};

// Not thread-safe.
class LinkRateMeter {
 public:
  // `capacity_bytes_per_s` > 0: the configured capacity of every link of this host.
  LinkRateMeter(std::string host, uint64_t capacity_bytes_per_s)
      : host_(std::move(host)), capacity_(capacity_bytes_per_s) {}

  // One link per configured peer answering our hellos (`reachable`: RTT known) and per backup host
  // streamed to, sorted by target. The rate is what `servers` streamed since the previous
  // Sample(), divided by the time since it; the first sample (no interval yet) reports rate 0.
  // A count that went down restarted: all of it counts as new. A server gone since contributes
  // nothing. Links to a backup not among `peers` (not greeted) carry rtt_us -1: unknown.
  std::vector<LinkFigures> Sample(Clock::TimePoint now, const std::vector<PeerView>& peers,
                                  const std::vector<StreamedBytes>& servers);

 private:
  const std::string host_;
  const uint64_t capacity_;
  bool sampled_ = false;
  Clock::TimePoint last_{};
  std::map<std::string, uint64_t> last_bytes_;  // by instance UUID
};

}  // namespace novadt::core
