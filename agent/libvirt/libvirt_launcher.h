// core::DomainLauncher over libvirt's C API. The definitions it starts and defines are derived
// from the peer's domain XML by DeriveRestoreXml() (restore_xml.h), never taken as given.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "agent/common/status.h"
#include "agent/config/config.h"
#include "agent/core/domain_launcher.h"

namespace novadt::libvirt {

struct LauncherOptions {
  // libvirt's qemu.conf memory_backing_dir as the hypervisor host sees it; libvirt puts the
  // guest RAM of domain <id>-<name> at <dir>/<id>-<first 20 chars of name>/pc.ram. Nova hosts
  // that set it explicitly: "<their value>/libvirt/qemu" (libvirt appends that).
  std::string memory_backing_dir = "/var/lib/libvirt/qemu/ram";
  // Where the agent sees the hypervisor host's root file system: "" in production (the agent
  // runs on the compute host). Test rigs whose libvirtd runs in its own mount namespace pass
  // e.g. "/proc/<libvirtd pid>/root". Paths handed to libvirt (replica disk images) must lie
  // under it and have it stripped; paths returned (DomainRamFile) get it prepended.
  std::string host_root;
};

// Connects to `cfg.connection_uri` lazily: its own connection, opened at the first call and
// re-opened when libvirt reports it dead (no keepalive, events or back-off: a failover is a
// one-shot operation that its caller retries; LibvirtHypervisor keeps the long-lived one).
// Restore definitions follow cfg's allow-list options (instances_path, restore_file_dirs).
std::unique_ptr<core::DomainLauncher> MakeLibvirtLauncher(const config::LibvirtSection& cfg,
                                                          LauncherOptions options = {});

}  // namespace novadt::libvirt
