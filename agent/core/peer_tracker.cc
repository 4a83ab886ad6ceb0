#include "agent/core/peer_tracker.h"

namespace novadt::core {

PeerTracker::PeerTracker(const Clock& clock, std::vector<config::PeerEndpoint> configured,
                         Clock::Duration stale_after)
    : clock_(clock), configured_(std::move(configured)), stale_after_(stale_after) {
  for (const auto& p : configured_) {
    PeerView& v = Entry(p.host);
    v.address = p.address;
    v.configured = true;
  }
}

PeerView& PeerTracker::Entry(const std::string& host) {
  auto [it, inserted] = peers_.try_emplace(host);
  if (inserted) it->second.host = host;
  return it->second;
}

void PeerTracker::OnHelloAnswered(const config::PeerEndpoint& peer,
                                  const std::string& reported_host, const std::string& version,
                                  std::chrono::microseconds rtt) {
  PeerView& v = Entry(peer.host);
  if (reported_host != peer.host) {
    // A mis-wired configuration must not make us believe the right peer is up.
    v.last_error = "agent at " + peer.address + " says it is '" + reported_host + "'";
    return;
  }
  v.last_answered = v.last_seen = clock_.Now();
  v.last_seen_wall = clock_.WallNow();
  v.rtt = rtt;
  v.version = version;
  v.last_error.clear();
}

void PeerTracker::OnHelloFailed(const config::PeerEndpoint& peer, const std::string& error) {
  Entry(peer.host).last_error = error;
}

void PeerTracker::OnHelloReceived(const std::string& host, const std::string& version) {
  auto it = peers_.find(host);
  if (it == peers_.end() || !it->second.configured) return;
  PeerView& v = it->second;
  v.last_seen = clock_.Now();
  v.last_seen_wall = clock_.WallNow();
  v.version = version;
}

std::vector<PeerView> PeerTracker::Snapshot() const {
  std::vector<PeerView> out;
  const auto now = clock_.Now();
  for (const auto& [host, v] : peers_) {
    PeerView copy = v;
    copy.reachable = v.last_answered.has_value() && now - *v.last_answered <= stale_after_;
    out.push_back(std::move(copy));
  }
  return out;
}

}  // namespace novadt::core
