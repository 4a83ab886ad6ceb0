// core::DomainLauncher over libvirt's C API, and the restore-XML derivation it uses (libxml2).
#pragma once

#include <map>
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
std::unique_ptr<core::DomainLauncher> MakeLibvirtLauncher(const config::LibvirtSection& cfg,
                                                          LauncherOptions options = {});

// Derives a definition from the primary's domain XML (core::RestoreSpec::domain_xml):
// same name, UUID, memory and devices; every disk (device='disk') becomes a raw file disk on
// `disk_images[target dev]` (backing chains dropped); runtime-only parts of a live XML are
// removed (domain id, <seclabel>s, libvirt-generated device <alias>es (user aliases "ua-*"
// stay), generated tap names (<target dev='vnet*'/>) of interfaces). With `incoming` true,
// <qemu:commandline> gets `-incoming defer` (namespace declared): the restore XML for
// virDomainCreateXML; false gives the clean XML for virDomainDefineXML.
// InvalidArgument when the XML does not parse or is not a <domain>, when its RAM is not shared
// file-backed memory, or when disks and `disk_images` do not match one to one.
StatusOr<std::string> DeriveRestoreXml(std::string_view domain_xml,
                                       const std::map<std::string, std::string>& disk_images,
                                       bool incoming);

}  // namespace novadt::libvirt
