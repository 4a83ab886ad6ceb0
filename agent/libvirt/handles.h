// RAII owners for libvirt's C handles. Declared once here; raw pointers never leave agent/libvirt.
#pragma once

#include <memory>

#include <libvirt/libvirt.h>

namespace novadt::libvirt {

struct ConnectCloser {
  void operator()(virConnectPtr c) const { virConnectClose(c); }
};
// Owns one reference to a connection (virConnectRef() to share it).
using ConnectPtr = std::unique_ptr<virConnect, ConnectCloser>;

struct DomainFreer {
  void operator()(virDomainPtr d) const { virDomainFree(d); }
};
using DomainPtr = std::unique_ptr<virDomain, DomainFreer>;

// A string libvirt allocated with malloc().
struct FreeDeleter {
  void operator()(char* p) const { free(p); }
};
using CString = std::unique_ptr<char, FreeDeleter>;

}  // namespace novadt::libvirt
