// core::Hypervisor over libvirt's C API (and libvirt-qemu's monitor pass-through).
#pragma once

#include <memory>

#include "agent/config/config.h"
#include "agent/core/hypervisor.h"

namespace novadt::libvirt {

// Creates the adapter and connects to `cfg.connection_uri` with keepalive. Never fails: when
// libvirt cannot be reached the adapter keeps retrying with exponential back-off (100 ms up to
// cfg.reconnect_max_backoff_ms) and reports connected() == false meanwhile; the same happens
// after a connection drops. Domain lifecycle events and connection changes go to `observer`,
// called on libvirt's event thread.
std::unique_ptr<core::Hypervisor> MakeLibvirtHypervisor(const config::LibvirtSection& cfg,
                                                        core::HypervisorObserver observer);

}  // namespace novadt::libvirt
