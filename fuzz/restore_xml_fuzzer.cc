// A peer's domain XML (StreamOpen.domain_xml) as a backup takes it (agent/libvirt/restore_xml.h):
// the check made when a replication stream opens and, when that passes, the derivation of the
// definitions a failover starts. Fixed host options: Nova's instances_path and the test rig's
// restore_file_dirs. Properties: whatever passes the check derives, with replica images for the
// disks the agent replicates (DiskTargets, agent/libvirt/domain_xml.h), and the derived
// definition is a fixed point of the allow-list: it passes the check again (the UUID the same)
// and derives to itself.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "agent/config/config.h"
#include "agent/libvirt/domain_xml.h"
#include "agent/libvirt/restore_xml.h"
#include "fuzz/fuzz_check.h"

namespace {

using novadt::config::LibvirtSection;

const LibvirtSection& Host() {
  static const LibvirtSection* cfg = [] {
    auto* c = new LibvirtSection;
    c->restore_file_dirs = {"/opt/nova-dt/build/guest", "/var/log/libvirt"};
    return c;
  }();
  return *cfg;
}

// The UUIDs of the seeds (tests/unit/libvirt/domain_fixtures.h): Nova's server and the rig guest.
constexpr std::string_view kUuids[] = {"0f2a6b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b",
                                       "6a1f8a3e-0b7c-4e8d-9f10-2b3c4d5e6f70"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view xml(reinterpret_cast<const char*>(data), size);
  std::string_view uuid;
  for (std::string_view u : kUuids) {
    if (novadt::libvirt::CheckRestorableDomain(xml, u, Host()).ok()) uuid = u;
  }
  if (uuid.empty()) return 0;

  const auto targets = novadt::libvirt::DiskTargets(xml);
  FUZZ_CHECK(targets.ok(), "a restorable definition whose disks cannot be read: %s",
             std::string(targets.status().message()).c_str());
  std::map<std::string, std::string> images;
  for (const std::string& dev : *targets) images[dev] = "/var/lib/libvirt/qemu/ram/r/disk-" + dev;
  FUZZ_CHECK(images.size() == targets->size(), "two disks on one target passed the check");

  for (bool incoming : {true, false}) {
    const auto once = novadt::libvirt::DeriveRestoreXml(xml, images, incoming, Host());
    FUZZ_CHECK(once.ok(), "a restorable definition does not derive: %s",
               std::string(once.status().message()).c_str());
    const auto recheck = novadt::libvirt::CheckRestorableDomain(*once, uuid, Host());
    FUZZ_CHECK(recheck.ok(), "the derived definition is refused: %s\n%s",
               std::string(recheck.message()).c_str(), once->c_str());
    if (incoming) continue;
    const auto twice = novadt::libvirt::DeriveRestoreXml(*once, images, false, Host());
    FUZZ_CHECK(twice.ok(), "the derived definition does not derive: %s",
               std::string(twice.status().message()).c_str());
    FUZZ_CHECK(*twice == *once, "the derivation is not a fixed point:\n%s\n---\n%s",
               once->c_str(), twice->c_str());
  }
  return 0;
}
