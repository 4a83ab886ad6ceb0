#include "agent/engine/egress_gate.h"

#include <algorithm>
#include <map>
#include <optional>
#include <utility>

#include <nlohmann/json.hpp>

#include "agent/common/numbers.h"
#include "agent/engine/qmp.h"

namespace novadt::engine {
namespace {

// filter-buffer's interval is a uint32 in microseconds and must be positive; its timer would
// release frames on its own, so take (nearly) the largest: ~66 minutes, far beyond any epoch.
constexpr uint32_t kNeverIntervalUs = 4'000'000'000u;

}  // namespace

StatusOr<std::unique_ptr<EgressGate>> EgressGate::Create(core::Hypervisor& hv,
                                                         std::string instance_uuid) {
  auto filters = QmpCall(hv, instance_uuid, {{"execute", "query-rx-filter"}});
  if (!filters.ok()) return filters.status();
  std::vector<std::string> netdevs;
  for (const auto& nic : *filters) {
    const std::string device = nic.value("name", "");
    auto netdev = QmpCall(hv, instance_uuid,
                          {{"execute", "qom-get"},
                           {"arguments", {{"path", "/machine/peripheral/" + device},
                                          {"property", "netdev"}}}});
    if (!netdev.ok()) return netdev.status();
    if (!netdev->is_string() || netdev->get<std::string>().empty()) {
      return absl::FailedPreconditionError("NIC '" + device + "' has no netdev to filter");
    }
    netdevs.push_back(netdev->get<std::string>());
  }
  if (netdevs.empty()) {
    return absl::FailedPreconditionError("domain " + instance_uuid + " has no NIC");
  }
  return std::unique_ptr<EgressGate>(
      new EgressGate(hv, std::move(instance_uuid), std::move(netdevs)));
}

std::string EgressGate::BufferId(const std::string& netdev, uint64_t epoch,
                                 uint64_t incarnation) {
  return "dt-egress-" + netdev + "-" +
         (incarnation == 0 ? "" : "r" + std::to_string(incarnation) + "-") +
         std::to_string(epoch);
}

StatusOr<size_t> EgressGate::AdoptLeftovers() {
  if (!held_.empty() || !adopted_.empty()) {
    return absl::FailedPreconditionError("egress buffers adopted after the gate opened epochs");
  }
  auto objects = QmpCall(hv_, uuid_, {{"execute", "qom-list"}, {"arguments", {{"path", "/objects"}}}});
  if (!objects.ok()) return objects.status();
  // (incarnation, epoch) -> ids, ordered oldest first.
  std::map<std::pair<uint64_t, uint64_t>, std::vector<std::string>> found;
  auto number = [](const std::string& s, uint64_t* out) {
    const std::optional<uint64_t> v = ParseInteger<uint64_t>(s);
    if (v) *out = *v;
    return v.has_value();
  };
  for (const auto& netdev : netdevs_) {  // within an epoch, in the gate's NIC order
    for (const auto& o : *objects) {
      const std::string name = o.value("name", "");
      const std::string prefix = "dt-egress-" + netdev + "-";
      if (name.rfind(prefix, 0) != 0) continue;
      std::string rest = name.substr(prefix.size());
      uint64_t inc = 0, epoch = 0;
      if (!rest.empty() && rest[0] == 'r') {
        const auto dash = rest.find('-');
        if (dash == std::string::npos || !number(rest.substr(1, dash - 1), &inc)) continue;
        rest = rest.substr(dash + 1);
      }
      if (!number(rest, &epoch)) continue;
      found[{inc, epoch}].push_back(name);
    }
  }
  for (auto& [key, ids] : found) {
    adopted_.push_back(std::move(ids));
    incarnation_ = std::max(incarnation_, key.first + 1);
  }
  return adopted_.size();
}

Status EgressGate::DeleteIds(const std::vector<std::string>& ids) {
  for (const auto& id : ids) {
    auto deleted = QmpCall(hv_, uuid_, {{"execute", "object-del"}, {"arguments", {{"id", id}}}});
    // A buffer already gone (a retry after a partial release) has released its frames. QEMU
    // 7.2 reports an unknown object as GenericError "object '<id>' not found".
    if (!deleted.ok() && !absl::IsNotFound(deleted.status()) &&
        deleted.status().message().find("not found") == absl::string_view::npos) {
      return deleted.status();
    }
  }
  return absl::OkStatus();
}

Status EgressGate::ReleaseAdopted() {
  while (!adopted_.empty()) {
    NOVA_DT_RETURN_IF_ERROR(DeleteIds(adopted_.front()));
    adopted_.pop_front();
  }
  return absl::OkStatus();
}

Status EgressGate::Open(uint64_t epoch) {
  if (!held_.empty() && epoch <= held_.back()) {
    return absl::FailedPreconditionError("egress epoch " + std::to_string(epoch) +
                                         " opened after epoch " + std::to_string(held_.back()));
  }
  for (size_t i = 0; i < netdevs_.size(); ++i) {
    auto added = QmpCall(hv_, uuid_,
                         {{"execute", "object-add"},
                          {"arguments", {{"qom-type", "filter-buffer"},
                                         {"id", BufferId(netdevs_[i], epoch, incarnation_)},
                                         {"netdev", netdevs_[i]},
                                         {"queue", "rx"},
                                         {"interval", kNeverIntervalUs}}}});
    if (!added.ok()) {
      // Undo the NICs already done, so the gate's view (held_) stays true.
      for (size_t j = 0; j < i; ++j) {
        (void)QmpCall(hv_, uuid_,
                      {{"execute", "object-del"},
                       {"arguments", {{"id", BufferId(netdevs_[j], epoch, incarnation_)}}}});
      }
      return added.status();
    }
  }
  held_.push_back(epoch);
  return absl::OkStatus();
}

Status EgressGate::Delete(uint64_t epoch) {
  std::vector<std::string> ids;
  for (const auto& netdev : netdevs_) ids.push_back(BufferId(netdev, epoch, incarnation_));
  return DeleteIds(ids);
}

Status EgressGate::Release(uint64_t epoch) {
  NOVA_DT_RETURN_IF_ERROR(ReleaseAdopted());
  while (!held_.empty() && held_.front() <= epoch) {
    NOVA_DT_RETURN_IF_ERROR(Delete(held_.front()));
    held_.pop_front();
  }
  return absl::OkStatus();
}

Status EgressGate::Cancel(uint64_t epoch) {
  if (held_.empty() || held_.back() != epoch) {
    return absl::FailedPreconditionError("egress epoch " + std::to_string(epoch) +
                                         " is not the newest held epoch");
  }
  // QEMU flushes a deleted buffer into the next filter towards the NIC: the older buffer.
  NOVA_DT_RETURN_IF_ERROR(Delete(epoch));
  held_.pop_back();
  return absl::OkStatus();
}

Status EgressGate::ReleaseAll() {
  NOVA_DT_RETURN_IF_ERROR(ReleaseAdopted());
  return held_.empty() ? absl::OkStatus() : Release(held_.back());
}

std::vector<uint64_t> EgressGate::held_epochs() const { return {held_.begin(), held_.end()}; }

}  // namespace novadt::engine
