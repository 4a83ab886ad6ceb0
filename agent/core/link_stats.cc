#include "agent/core/link_stats.h"

#include <chrono>

namespace novadt::core {

std::vector<LinkFigures> LinkRateMeter::Sample(Clock::TimePoint now,
                                               const std::vector<PeerView>& peers,
                                               const std::vector<StreamedBytes>& servers) {
  std::map<std::string, uint64_t> streamed;  // by backup host, since the previous sample
  std::map<std::string, uint64_t> bytes_now;
  for (const auto& s : servers) {
    auto prev = last_bytes_.find(s.instance_uuid);
    const uint64_t delta =
        prev == last_bytes_.end() || s.bytes < prev->second ? s.bytes : s.bytes - prev->second;
    streamed[s.backup_host] += sampled_ ? delta : 0;
    bytes_now[s.instance_uuid] = s.bytes;
  }
  const double seconds = std::chrono::duration<double>(now - last_).count();

  std::map<std::string, LinkFigures> links;
  auto link = [&](const std::string& target) -> LinkFigures& {
    LinkFigures& l = links[target];
    l.source = host_;
    l.target = target;
    l.capacity_bytes_per_s = capacity_;
    return l;
  };
  for (const auto& p : peers) {
    if (!p.configured || !p.reachable) continue;  // only our own answered hellos time the link
    link(p.host).rtt_us = p.rtt.count();
  }
  for (const auto& [target, bytes] : streamed) {
    const bool greeted = links.count(target) > 0;
    LinkFigures& l = link(target);
    if (!greeted) l.rtt_us = -1;
    l.rate_bytes_per_s = seconds > 0 ? static_cast<uint64_t>(static_cast<double>(bytes) / seconds) : 0;
  }

  sampled_ = true;
  last_ = now;
  last_bytes_ = std::move(bytes_now);
  std::vector<LinkFigures> out;
  out.reserve(links.size());
  for (auto& [target, l] : links) out.push_back(std::move(l));
  return out;
}

}  // namespace novadt::core
