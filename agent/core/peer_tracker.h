// Which other agents this one has seen, when, and how far away they are. Pure bookkeeping on
// the loop thread; the greeting itself goes through PeerLink (see Agent).
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "agent/common/clock.h"
#include "agent/config/config.h"

namespace novadt::core {

struct PeerView {
  std::string host;
  std::string address;
  bool configured = false;
  // This agent's own greeting was answered by it within the stale bound. Only answers count: a
  // greeting from it proves nothing (anyone can claim a host name on the wire, and a failover
  // decision rests on this).
  bool reachable = false;
  std::optional<Clock::TimePoint> last_answered;  // our last greeting it answered
  std::optional<Clock::TimePoint> last_seen;      // answered us, or greeted us
  std::chrono::system_clock::time_point last_seen_wall{};
  std::chrono::microseconds rtt{0};
  std::string version;
  std::string last_error;  // why the last greeting failed, if it did
};

// Not thread-safe: used on the loop thread only.
class PeerTracker {
 public:
  // `stale_after`: a peer not heard from for this long is reported unreachable.
  PeerTracker(const Clock& clock, std::vector<config::PeerEndpoint> configured,
              Clock::Duration stale_after);

  const std::vector<config::PeerEndpoint>& configured() const { return configured_; }

  // Our greeting to a configured peer was answered. A reply from an agent that calls itself
  // differently from the configuration is recorded under its configured name, with an error.
  void OnHelloAnswered(const config::PeerEndpoint& peer, const std::string& reported_host,
                       const std::string& version, std::chrono::microseconds rtt);
  void OnHelloFailed(const config::PeerEndpoint& peer, const std::string& error);
  // A configured peer greeted us (shown in status; it does not make it reachable). Greetings
  // from hosts that are not configured peers are ignored: the tracker holds configured peers
  // only, so its size is bounded by the configuration.
  void OnHelloReceived(const std::string& host, const std::string& version);

  // Every configured peer, sorted by host, with `reachable` computed for now.
  std::vector<PeerView> Snapshot() const;

 private:
  PeerView& Entry(const std::string& host);

  const Clock& clock_;
  std::vector<config::PeerEndpoint> configured_;
  Clock::Duration stale_after_;
  std::map<std::string, PeerView> peers_;
};

}  // namespace novadt::core
