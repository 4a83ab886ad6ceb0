#include "agent/libvirt/restore_xml.h"

#include "agent/common/identifiers.h"
#include "agent/core/replication_link.h"

#include <arpa/inet.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>

#include <cctype>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace novadt::libvirt {
namespace {

constexpr char kQemuNs[] = "http://libvirt.org/schemas/domain/qemu/1.0";
constexpr char kNovaNs[] = "http://openstack.org/xmlns/libvirt/nova/1.1";

const xmlChar* X(const char* s) { return reinterpret_cast<const xmlChar*>(s); }
std::string_view S(const xmlChar* s) {
  return s ? std::string_view(reinterpret_cast<const char*>(s)) : std::string_view();
}

struct DocFree {
  void operator()(xmlDoc* d) const { xmlFreeDoc(d); }
};
using DocPtr = std::unique_ptr<xmlDoc, DocFree>;
struct ParserCtxtFree {
  void operator()(xmlParserCtxt* c) const { xmlFreeParserCtxt(c); }
};

// A peer's value for an error message, quoted: at most 160 bytes (a whole path), anything
// outside printable ASCII as \xHH (Printable()).
std::string Quote(std::string_view v) { return "'" + Printable(v, 160) + "'"; }

Status Refused(const std::string& where, const std::string& why) {
  return absl::InvalidArgumentError("domain XML refused: " + where + ": " + why);
}

// ---------------------------------------------------------------------------------------------
// Values. A check says whether an allowed value is carried into the restore definition (kCopy)
// or tolerated and left out (kDrop: libvirt's runtime state, or something the backup chooses
// itself); a value it refuses yields InvalidArgument with the reason.

enum class Carry { kCopy, kDrop };

// What a check may look at besides the value.
struct Ctx {
  const config::LibvirtSection& cfg;
  const std::string& uuid;  // the domain's <uuid>, already checked canonical
  xmlNodePtr node;          // the element being checked
};

using Check = std::function<StatusOr<Carry>(std::string_view value, const Ctx& ctx)>;
// A check of an element as a whole (before its attributes and children).
using WholeCheck = StatusOr<Carry> (*)(const Ctx& ctx);

Status Bad(std::string why) { return absl::InvalidArgumentError(std::move(why)); }

bool AllOf(std::string_view v, std::string_view extra, size_t max) {
  if (v.empty() || v.size() > max) return false;
  for (char c : v) {
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && extra.find(c) == std::string_view::npos) return false;
  }
  return true;
}

bool IsDecimal(std::string_view v) {
  if (v.empty() || v.size() > 20) return false;
  for (char c : v) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

Check Copy() {
  return [](std::string_view, const Ctx&) -> StatusOr<Carry> { return Carry::kCopy; };
}
Check Drop() {
  return [](std::string_view, const Ctx&) -> StatusOr<Carry> { return Carry::kDrop; };
}
Check OneOf(std::vector<std::string_view> allowed) {
  return [allowed = std::move(allowed)](std::string_view v, const Ctx&) -> StatusOr<Carry> {
    for (std::string_view a : allowed) {
      if (v == a) return Carry::kCopy;
    }
    std::string list;
    for (std::string_view a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
    return Bad(Quote(v) + " is not one of the allowed values (" + list + ")");
  };
}
Check YesNo() { return OneOf({"yes", "no"}); }
Check MemoryUnit() {
  return OneOf(
      {"b", "bytes", "KB", "k", "KiB", "MB", "M", "MiB", "GB", "G", "GiB", "TB", "T", "TiB"});
}
Check OnOff() { return OneOf({"on", "off"}); }
// An unsigned decimal number.
Check Uint() {
  return [](std::string_view v, const Ctx&) -> StatusOr<Carry> {
    if (IsDecimal(v)) return Carry::kCopy;
    return Bad(Quote(v) + " is not an unsigned decimal number");
  };
}
// A decimal number, possibly negative (CPU quotas: -1 is "no limit").
Check Int() {
  return [](std::string_view v, const Ctx&) -> StatusOr<Carry> {
    if (IsDecimal(v.substr(!v.empty() && v[0] == '-' ? 1 : 0))) return Carry::kCopy;
    return Bad(Quote(v) + " is not a decimal number");
  };
}
// A device address number: decimal or 0x-prefixed hexadecimal (USB ports: dotted, "1.2").
Check AddressNumber() {
  return [](std::string_view v, const Ctx&) -> StatusOr<Carry> {
    if (v.size() > 2 && v.size() <= 18 && v[0] == '0' && (v[1] == 'x' || v[1] == 'X') &&
        AllOf(v.substr(2), "", 16) &&
        v.substr(2).find_first_not_of("0123456789abcdefABCDEF") == std::string_view::npos) {
      return Carry::kCopy;
    }
    if (AllOf(v, ".", 20) && v.find_first_not_of("0123456789.") == std::string_view::npos) {
      return Carry::kCopy;
    }
    return Bad(Quote(v) + " is not a device address number");
  };
}
// A name libvirt or QEMU knows (machine type, CPU model or feature, controller model...).
Check Token() {
  return [](std::string_view v, const Ctx&) -> StatusOr<Carry> {
    if (AllOf(v, "_.:+-", 64)) return Carry::kCopy;
    return Bad(Quote(v) + " is not a name of 1..64 characters of [A-Za-z0-9_.:+-]");
  };
}
// Text the guest sees (SMBIOS strings, disk serials): printable, at most 256 bytes.
Check GuestText() {
  return [](std::string_view v, const Ctx&) -> StatusOr<Carry> {
    if (v.size() > 256) return Bad("text longer than 256 bytes");
    for (char c : v) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
        return Bad(Quote(v) + " holds control characters");
      }
    }
    return Carry::kCopy;
  };
}
Check Mac() {
  return [](std::string_view v, const Ctx&) -> StatusOr<Carry> {
    bool ok = v.size() == 17;
    for (size_t i = 0; ok && i < v.size(); ++i) {
      ok = i % 3 == 2 ? v[i] == ':' : std::isxdigit(static_cast<unsigned char>(v[i])) != 0;
    }
    if (ok) return Carry::kCopy;
    return Bad(Quote(v) + " is not a MAC address");
  };
}
// A guest disk name (libvirt target dev, e.g. "vda"), also part of replica file names: the
// agent's own rule for disk names (ValidateDiskName).
Check DiskName() {
  return [](std::string_view v, const Ctx&) -> StatusOr<Carry> {
    if (ValidateDiskName(v).ok()) return Carry::kCopy;
    return Bad(Quote(v) + " is not a disk name (1..64 of [A-Za-z0-9_.-], not starting with '.')");
  };
}
// A host network interface name (bridge): at most 15 characters (IFNAMSIZ).
Check IfName() {
  return [](std::string_view v, const Ctx&) -> StatusOr<Carry> {
    if (AllOf(v, "_.-", 15)) return Carry::kCopy;
    return Bad(Quote(v) + " is not a network interface name (1..15 of [A-Za-z0-9_.-])");
  };
}
// A listen address of a graphics console. The wildcard and loopback addresses mean the same on
// every host and are carried; any other address is the primary host's own (nova.conf [vnc]
// server_listen there), which the backup cannot bind: it is left out, and the backup's libvirt
// listens where its qemu.conf says. Host names and sockets are refused.
Check ListenAddress() {
  return [](std::string_view v, const Ctx&) -> StatusOr<Carry> {
    const std::string s(v);
    unsigned char buf[sizeof(in6_addr)];
    if (inet_pton(AF_INET, s.c_str(), buf) != 1 && inet_pton(AF_INET6, s.c_str(), buf) != 1) {
      return Bad(Quote(v) + " is not an IP address");
    }
    if (s == "0.0.0.0" || s == "::" || s == "127.0.0.1" || s == "::1") return Carry::kCopy;
    return Carry::kDrop;
  };
}

// A path as libvirtd sees it that may name a file: absolute, without empty, '.' or '..'
// components, no trailing '/', no control characters.
bool IsCleanAbsolutePath(std::string_view p) {
  if (p.size() < 2 || p.size() > 4096 || p[0] != '/' || p.back() == '/') return false;
  for (char c : p) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
  }
  size_t start = 1;
  while (start <= p.size()) {
    size_t end = p.find('/', start);
    if (end == std::string_view::npos) end = p.size();
    const std::string_view part = p.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

// Host files a restored domain may name: Nova's own name in the instance's directory
// (nova/virt/libvirt/driver.py: _set_guest_for_inst_kernel, _get_console_log_path), or any file
// below a directory the operator lists in [libvirt] restore_file_dirs.
enum class HostFile { kKernel, kInitrd, kConsole };

Check HostFilePath(HostFile use) {
  return [use](std::string_view v, const Ctx& ctx) -> StatusOr<Carry> {
    if (!IsCleanAbsolutePath(v)) {
      return Bad(Quote(v) + " is not an absolute path without '.', '..' or empty components");
    }
    for (const std::string& dir : ctx.cfg.restore_file_dirs) {
      if (v.size() > dir.size() + 1 && v.substr(0, dir.size()) == dir && v[dir.size()] == '/') {
        return Carry::kCopy;
      }
    }
    const char* name = use == HostFile::kKernel   ? "kernel"
                       : use == HostFile::kInitrd ? "ramdisk"
                                                  : "console.log";
    const std::string own = ctx.cfg.instances_path + "/" + ctx.uuid + "/" + name;
    if (v == own) return Carry::kCopy;
    return Bad("host file " + Quote(v) + " is neither " + own +
               " (the instance's own, [libvirt] instances_path) nor below a [libvirt] "
               "restore_file_dirs directory");
  };
}

// The type attribute of the element's parent ("" when none).
std::string ParentType(const Ctx& ctx) {
  xmlChar* t = ctx.node->parent ? xmlGetNoNsProp(ctx.node->parent, X("type")) : nullptr;
  std::string out(S(t));
  xmlFree(t);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Element-specific checks (values that decide on more than themselves).

StatusOr<Carry> DiskDevice(std::string_view v, const Ctx&) {
  if (v == "disk") return Carry::kCopy;
  if (v == "cdrom" || v == "floppy") {
    return Bad("a " + std::string(v) +
               " (e.g. Nova's config drive disk.config) is not replicated, so the backup would "
               "open the primary's host path as given; only device='disk' is restorable (use the "
               "metadata service instead of config drives)");
  }
  if (v == "lun") return Bad("a lun disk passes a host SCSI device through to the guest");
  return Bad(Quote(v) + " is not device='disk'");
}

// Any storage of a device='disk' is restorable: the replica's raw image replaces it, and nothing
// of the primary's storage (source, host, auth) is carried — so a Cinder volume or Ceph RBD disk
// becomes a file disk on the backup like a local instance disk (ReplicaDisk sets type='file').
StatusOr<Carry> DiskType(std::string_view v, const Ctx&) {
  if (v == "file" || v == "block" || v == "network" || v == "volume") return Carry::kDrop;
  return Bad("a disk of type " + Quote(v) + " is not restorable");
}

// <emulator>: libvirt's live XML always names it; the backup never takes it over (its libvirt
// picks its own QEMU for the arch and machine), but a non-standard binary on the primary means a
// guest the backup's stock QEMU may not restore, and is refused.
StatusOr<Carry> Emulator(std::string_view v, const Ctx&) {
  constexpr std::string_view kSystem = "/usr/bin/qemu-system-";
  if ((v.substr(0, kSystem.size()) == kSystem && AllOf(v.substr(kSystem.size()), "_", 32)) ||
      v == "/usr/libexec/qemu-kvm" || v == "/usr/bin/qemu-kvm" || v == "/usr/bin/kvm") {
    return Carry::kDrop;
  }
  return Bad("a custom emulator " + Quote(v) +
             " is not restorable (the backup starts its libvirt's standard QEMU)");
}

// <seclabel>: a dynamic label is the primary's per-start label and is left out (the backup's
// libvirt labels the restored QEMU itself); a static label or 'none' would let the peer choose the
// confinement of a QEMU on this host.
StatusOr<Carry> SecLabel(const Ctx& ctx) {
  xmlChar* t = xmlGetNoNsProp(ctx.node, X("type"));
  const std::string type(S(t));
  xmlFree(t);
  if (type == "dynamic") return Carry::kDrop;
  return Bad("a <seclabel type=" + Quote(type) +
             "> would set the confinement (sVirt/DAC label) of a QEMU on this host: only "
             "dynamic labels, which the backup chooses itself, are restorable");
}

// A disk's <source>: the primary's storage, never carried (ReplicaDisk rebuilds it on the replica
// image) and otherwise unread. Its one <seclabel> may be exactly what ReplicaDisk writes,
// <seclabel model='dac' relabel='no'/> (a domain a backup restored is protected again from its
// live XML); any other per-disk label is refused like a static domain label.
std::string Attribute(xmlNodePtr n, const char* name);  // below, with the walk's helpers

StatusOr<Carry> DiskSource(const Ctx& ctx) {
  for (xmlNodePtr c = ctx.node->children; c; c = c->next) {
    if (c->type != XML_ELEMENT_NODE || !xmlStrEqual(c->name, X("seclabel"))) continue;
    size_t attrs = 0;
    for (xmlAttrPtr a = c->properties; a; a = a->next) ++attrs;
    const bool exact = !c->ns && !c->children && attrs == 2 &&
                       xmlHasNsProp(c, X("model"), nullptr) &&
                       xmlHasNsProp(c, X("relabel"), nullptr) && Attribute(c, "model") == "dac" &&
                       Attribute(c, "relabel") == "no";
    if (!exact) {
      return Bad("a disk <source><seclabel> other than <seclabel model='dac' relabel='no'/> "
                 "would set the label of an image on this host: not restorable");
    }
  }
  return Carry::kDrop;
}

// Aliases: libvirt's generated ones are runtime state (libvirt makes the same again); user
// aliases ("ua-" prefix) name the device for QEMU and are carried.
StatusOr<Carry> Alias(const Ctx& ctx) {
  xmlChar* n = xmlGetNoNsProp(ctx.node, X("name"));
  const std::string name(S(n));
  xmlFree(n);
  if (name.substr(0, 3) == "ua-" && AllOf(name, "_-", 64)) return Carry::kCopy;
  return Carry::kDrop;
}

// An interface's <target dev>: names libvirt generated (vnetN, macvtapN) are runtime state; Nova
// names its taps ("tap" + port id)[:14] (nova/network/model.py NIC_NAME_LEN; os-vif alike): "tap"
// and the first 11 characters of the Neutron port UUID, 8 hex digits, '-', 2 hex digits, e.g.
// tap3c1d2e4f-5a. Exactly that is carried; anything else could name another interface of this
// host.
bool IsNovaTapName(std::string_view dev) {
  if (dev.size() != 14 || dev.substr(0, 3) != "tap") return false;
  for (size_t i = 3; i < dev.size(); ++i) {
    const char c = dev[i];
    const bool ok = i == 11 ? c == '-' : (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
    if (!ok) return false;
  }
  return true;
}

StatusOr<Carry> InterfaceTarget(const Ctx& ctx) {
  xmlChar* d = xmlGetNoNsProp(ctx.node, X("dev"));
  const std::string dev(S(d));
  xmlFree(d);
  if (dev.empty() || dev.substr(0, 4) == "vnet" || dev.substr(0, 7) == "macvtap") {
    return Carry::kDrop;
  }
  if (IsNovaTapName(dev)) return Carry::kCopy;
  return Bad("tap name " + Quote(dev) +
             " is neither libvirt's (vnet*) nor Nova's ('tap' + the first 11 characters of the "
             "port UUID)");
}

StatusOr<Carry> InterfaceType(std::string_view v, const Ctx&) {
  if (v == "bridge" || v == "ethernet") return Carry::kCopy;
  if (v == "network") {
    return Bad("an interface of type 'network' is whatever the libvirt network of that name is on "
               "this host: its forward mode can make it host device (hostdev) or macvtap "
               "passthrough; Nova (os-vif) never generates it, only bridge and ethernet NICs are "
               "restorable");
  }
  if (v == "hostdev" || v == "direct" || v == "vdpa") {
    return Bad("an interface of type " + Quote(v) +
               " hands a device of this host to the guest (SR-IOV, macvtap, vDPA)");
  }
  if (v == "vhostuser") return Bad("a vhost-user interface uses a socket at a host path");
  return Bad("an interface of type " + Quote(v) + " is not restorable");
}

// <interface><source bridge>: the bridge of a bridge NIC (an ethernet NIC has none: os-vif plugs
// its tap).
StatusOr<Carry> InterfaceSourceBridge(std::string_view v, const Ctx& ctx) {
  const std::string type = ParentType(ctx);
  if (type == "bridge") return IfName()(v, ctx);
  return Bad("source bridge of an interface of type " + Quote(type));
}

// <virtualport><parameters interfaceid>: the Neutron port UUID Nova (os-vif) writes for OVS, in
// canonical lowercase form (OVS's external-ids:iface-id; nothing else belongs there).
StatusOr<Carry> OvsInterfaceId(std::string_view v, const Ctx&) {
  if (ValidateInstanceUuid(v).ok()) return Carry::kCopy;
  return Bad(Quote(v) +
             " is not a Neutron port UUID in canonical lowercase form "
             "(xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)");
}

// <watchdog action>: what QEMU does when the guest stops feeding it. 'dump' makes libvirtd, as
// root, write a core of the guest's memory to qemu.conf's auto_dump_path on this host; Nova
// never generates it (nova/objects/fields.py WatchdogAction: none, pause, poweroff, reset).
StatusOr<Carry> WatchdogAction(std::string_view v, const Ctx& ctx) {
  if (v == "dump") {
    return Bad("a watchdog action 'dump' makes libvirtd (root) write guest memory cores to a "
               "host directory (qemu.conf auto_dump_path); Nova never generates it");
  }
  return OneOf({"reset", "shutdown", "poweroff", "pause", "none", "inject-nmi"})(v, ctx);
}

StatusOr<Carry> CharType(std::string_view v, const Ctx&) {
  if (v == "pty" || v == "file") return Carry::kCopy;
  if (v == "tcp" || v == "udp") {
    return Bad("a " + std::string(v) +
               " console binds or connects to a network address of the primary host "
               "(nova.conf [serial_console] enabled)");
  }
  if (v == "unix") return Bad("a unix socket console at a host path");
  return Bad("a console of type " + Quote(v) + " (host device, pipe, ...) is not restorable");
}

// A console's <source path>: a pty's is the primary's /dev/pts/N (runtime state); a file
// console's is a host file the restored QEMU writes.
StatusOr<Carry> CharSourcePath(std::string_view v, const Ctx& ctx) {
  const std::string type = ParentType(ctx);
  if (type == "pty") return Carry::kDrop;
  if (type == "file") return HostFilePath(HostFile::kConsole)(v, ctx);
  return Bad("a source path for a console of type " + Quote(type));
}

StatusOr<Carry> ChannelType(std::string_view v, const Ctx&) {
  if (v == "unix" || v == "spicevmc") return Carry::kCopy;
  return Bad("a channel of type " + Quote(v) +
             " is not restorable (only the QEMU guest agent's "
             "unix channel and SPICE's spicevmc are)");
}

// <rng><backend>: the guest reads the host's /dev/urandom (model 'random', Nova's default), or
// QEMU's own getrandom() (model 'builtin', no text); no other host device or EGD socket.
StatusOr<Carry> RngBackend(std::string_view v, const Ctx& ctx) {
  xmlChar* m = xmlGetNoNsProp(ctx.node, X("model"));
  const std::string model(S(m));
  xmlFree(m);
  if (model == "random" && v == "/dev/urandom") return Carry::kCopy;
  if (model == "builtin" && v.empty()) return Carry::kCopy;
  return Bad("an rng backend " + Quote(model) + " on " + Quote(v) +
             " (only /dev/urandom or QEMU's builtin source are restorable)");
}

// ---------------------------------------------------------------------------------------------
// The allow-list. One row per element path below <domain> (namespaced elements: see Walk);
// whatever it does not name is refused. `attrs`: the attributes allowed and what their values may
// be; `text`: the element's text (none when null); `many`: may repeat in its parent; `drop`: the
// element is accepted and never carried, its content unread (libvirt's runtime state, or what the
// derivation rebuilds); `whole`: decides on the element as a whole before anything else (its
// value argument is empty); `replica_disk`: the derivation points it at the replica image.

struct Attr {
  std::string_view name;
  Check check;
  // Not null: the attribute is required, and this says why when it is missing.
  const char* required = nullptr;
};

struct Rule {
  std::string path;
  std::vector<Attr> attrs;
  Check text;
  bool many = false;
  bool drop = false;
  WholeCheck whole = nullptr;
  bool replica_disk = false;
  bool nova_metadata = false;
};

// Reasons for elements the allow-list leaves out on purpose, for clearer refusals.
const std::unordered_map<std::string_view, std::string_view>& KnownRefusals() {
  static const auto* reasons = new std::unordered_map<std::string_view, std::string_view>{
      {"domain/devices/hostdev",
       "host device passthrough (PCI, USB, SCSI or mediated devices of this host)"},
      {"domain/devices/filesystem", "a directory of this host shared with the guest"},
      {"domain/devices/smartcard", "a smartcard of this host"},
      {"domain/devices/redirdev", "USB redirection"},
      {"domain/devices/tpm", "a TPM (host device, or an emulated TPM's state on this host)"},
      {"domain/devices/shmem", "shared memory with this host"},
      {"domain/devices/memory", "a memory device backed by a host file (vPMEM)"},
      {"domain/devices/parallel", "a parallel port (host device or file)"},
      {"domain/devices/iommu", "a virtual IOMMU"},
      {"domain/devices/interface/script", "a host script run as root when the tap is created"},
      {"domain/devices/interface/rom", "an option ROM from a host file"},
      {"domain/devices/interface/filterref", "an nwfilter of this host"},
      {"domain/os/loader", "UEFI firmware and NVRAM files of the primary host"},
      {"domain/os/nvram", "UEFI firmware and NVRAM files of the primary host"},
      {"domain/os/dtb", "a device tree file of the primary host"},
      {"domain/os/acpi", "ACPI tables from host files"},
      {"domain/os/init", "a container init (not QEMU)"},
      {"domain/cpu/numa", "NUMA cells (one RAM file per cell; the replica holds one RAM file)"},
      {"domain/numatune", "NUMA placement on the primary host's nodes"},
      {"domain/cputune/vcpupin", "CPU pinning to the primary host's CPUs"},
      {"domain/cputune/emulatorpin", "CPU pinning to the primary host's CPUs"},
      {"domain/cputune/vcpusched", "real-time scheduling on the primary host's CPUs"},
      {"domain/memoryBacking/hugepages",
       "huge pages (guest RAM must be shared file-backed memory)"},
      {"domain/launchSecurity", "SEV memory encryption (the replica cannot read guest RAM)"},
      {"domain/idmap", "container id maps (not QEMU)"},
      {"domain/perf", "host perf events"},
  };
  return *reasons;
}

// Devices with libvirt's <alias> and <address> children (added to their rows below).
constexpr std::string_view kAddressedDevices[] = {
    "disk",       "interface", "serial",   "console",    "channel",  "input", "video",
    "memballoon", "rng",       "watchdog", "controller", "graphics", "audio"};

std::vector<Rule> MakeAllowList() {
  std::vector<Rule> rules = {
      {.path = "domain",
       .attrs = {{"type", OneOf({"kvm", "qemu"}), "the domain type (kvm or qemu) is required"},
                 {"id", Drop()}}},
      // name and uuid: checked before the walk (Walk::Domain); carried as they are.
      {.path = "domain/name", .text = Copy()},
      {.path = "domain/uuid", .text = Copy()},
      {.path = "domain/metadata", .nova_metadata = true},
      {.path = "domain/memory", .attrs = {{"unit", MemoryUnit()}}, .text = Uint()},
      {.path = "domain/currentMemory", .attrs = {{"unit", MemoryUnit()}}, .text = Uint()},
      // Guest RAM: shared file-backed memory only (also required after the walk).
      {.path = "domain/memoryBacking"},
      {.path = "domain/memoryBacking/source", .attrs = {{"type", OneOf({"file"})}}},
      {.path = "domain/memoryBacking/access", .attrs = {{"mode", OneOf({"shared"})}}},
      {.path = "domain/memoryBacking/allocation",
       .attrs = {{"mode", OneOf({"immediate", "ondemand"})}, {"threads", Uint()}}},
      {.path = "domain/memoryBacking/discard"},
      {.path = "domain/memoryBacking/locked"},
      {.path = "domain/memoryBacking/nosharepages"},
      // vCPUs; a cpuset is the primary host's CPU list ([compute] cpu_shared_set): left out.
      {.path = "domain/vcpu",
       .attrs = {{"placement", OneOf({"static", "auto"})}, {"current", Uint()}, {"cpuset", Drop()}},
       .text = Uint()},
      {.path = "domain/cputune"},
      {.path = "domain/cputune/shares", .text = Uint()},
      {.path = "domain/cputune/period", .text = Uint()},
      {.path = "domain/cputune/quota", .text = Int()},
      {.path = "domain/cputune/global_period", .text = Uint()},
      {.path = "domain/cputune/global_quota", .text = Int()},
      {.path = "domain/cputune/emulator_period", .text = Uint()},
      {.path = "domain/cputune/emulator_quota", .text = Int()},
      // SMBIOS strings Nova sets (driver.py _get_guest_config_sysinfo).
      {.path = "domain/sysinfo", .attrs = {{"type", OneOf({"smbios"})}}},
      {.path = "domain/sysinfo/bios"},
      {.path = "domain/sysinfo/bios/entry",
       .attrs = {{"name", OneOf({"vendor", "version", "date", "release"})}},
       .text = GuestText(),
       .many = true},
      {.path = "domain/sysinfo/system"},
      {.path = "domain/sysinfo/system/entry",
       .attrs = {{"name", OneOf({"manufacturer", "product", "version", "serial", "uuid", "sku",
                                 "family"})}},
       .text = GuestText(),
       .many = true},
      // Boot: BIOS, or a direct kernel boot from Nova's instance directory.
      {.path = "domain/os"},
      {.path = "domain/os/type",
       .attrs = {{"arch", Token()}, {"machine", Token()}},
       .text = OneOf({"hvm"})},
      {.path = "domain/os/kernel", .text = HostFilePath(HostFile::kKernel)},
      {.path = "domain/os/initrd", .text = HostFilePath(HostFile::kInitrd)},
      {.path = "domain/os/cmdline", .text = Copy()},  // the guest kernel's, seen by the guest only
      {.path = "domain/os/boot",
       .attrs = {{"dev", OneOf({"hd", "cdrom", "network", "fd"})}},
       .many = true},
      {.path = "domain/os/bootmenu", .attrs = {{"enable", YesNo()}, {"timeout", Uint()}}},
      {.path = "domain/os/smbios", .attrs = {{"mode", OneOf({"sysinfo", "emulate"})}}},
      {.path = "domain/features"},
      {.path = "domain/features/acpi"},
      {.path = "domain/features/apic", .attrs = {{"eoi", OnOff()}}},
      {.path = "domain/features/pae"},
      {.path = "domain/features/vmcoreinfo", .attrs = {{"state", OnOff()}}},
      {.path = "domain/features/pmu", .attrs = {{"state", OnOff()}}},
      {.path = "domain/features/smm", .attrs = {{"state", OnOff()}}},
      {.path = "domain/features/vmport", .attrs = {{"state", OnOff()}}},
      {.path = "domain/features/ioapic", .attrs = {{"driver", OneOf({"kvm", "qemu"})}}},
      {.path = "domain/features/kvm"},
      {.path = "domain/features/kvm/hidden", .attrs = {{"state", OnOff()}}},
      {.path = "domain/features/kvm/hint-dedicated", .attrs = {{"state", OnOff()}}},
      {.path = "domain/features/kvm/poll-control", .attrs = {{"state", OnOff()}}},
      {.path = "domain/features/kvm/pv-ipi", .attrs = {{"state", OnOff()}}},
      {.path = "domain/features/hyperv", .attrs = {{"mode", OneOf({"custom", "passthrough"})}}},
      {.path = "domain/features/hyperv/spinlocks",
       .attrs = {{"state", OnOff()}, {"retries", Uint()}}},
      {.path = "domain/features/hyperv/vendor_id",
       .attrs = {{"state", OnOff()}, {"value", Token()}}},
      {.path = "domain/features/hyperv/stimer", .attrs = {{"state", OnOff()}}},
      {.path = "domain/features/hyperv/stimer/direct", .attrs = {{"state", OnOff()}}},
      // CPU model (libvirt's live XML expands host-model into a custom model with features).
      {.path = "domain/cpu",
       .attrs = {{"mode", OneOf({"host-model", "host-passthrough", "custom", "maximum"})},
                 {"match", OneOf({"exact", "minimum", "strict"})},
                 {"check", OneOf({"none", "partial", "full"})},
                 {"migratable", OnOff()}}},
      {.path = "domain/cpu/model",
       .attrs = {{"fallback", OneOf({"allow", "forbid"})}, {"vendor_id", Token()}},
       .text = Token()},
      {.path = "domain/cpu/vendor", .text = Token()},
      {.path = "domain/cpu/topology",
       .attrs = {{"sockets", Uint()},
                 {"dies", Uint()},
                 {"clusters", Uint()},
                 {"cores", Uint()},
                 {"threads", Uint()}}},
      {.path = "domain/cpu/feature",
       .attrs = {{"policy", OneOf({"force", "require", "optional", "disable", "forbid"})},
                 {"name", Token()}},
       .many = true},
      {.path = "domain/cpu/cache",
       .attrs = {{"mode", OneOf({"emulate", "passthrough", "disable"})}, {"level", Uint()}}},
      {.path = "domain/cpu/maxphysaddr",
       .attrs = {{"mode", OneOf({"emulate", "passthrough"})}, {"bits", Uint()}, {"limit", Uint()}}},
      {.path = "domain/clock", .attrs = {{"offset", OneOf({"utc", "localtime"})}}},
      {.path = "domain/clock/timer",
       .attrs = {{"name", OneOf({"pit", "rtc", "hpet", "tsc", "kvmclock", "hypervclock"})},
                 {"tickpolicy", OneOf({"delay", "catchup", "merge", "discard"})},
                 {"present", YesNo()},
                 {"track", OneOf({"boot", "guest", "wall", "realtime"})},
                 {"frequency", Uint()},
                 {"mode", OneOf({"auto", "native", "emulate", "paravirt", "smpsafe"})}},
       .many = true},
      {.path = "domain/on_poweroff", .text = OneOf({"destroy", "restart", "preserve"})},
      {.path = "domain/on_reboot", .text = OneOf({"destroy", "restart", "preserve"})},
      {.path = "domain/on_crash", .text = OneOf({"destroy", "restart", "preserve"})},
      // Runtime state of the primary: its cgroup partition and its per-start labels.
      {.path = "domain/resource", .drop = true},
      {.path = "domain/seclabel", .many = true, .whole = SecLabel},

      {.path = "domain/devices"},
      {.path = "domain/devices/emulator", .text = Emulator},
      // Disks: device='disk' only, of any storage; each is rebuilt as a file disk on the
      // replica's raw image (replica_disk). The primary's source, credentials, backing chain and
      // block-copy mirror are never carried.
      {.path = "domain/devices/disk",
       .attrs = {{"type", DiskType},
                 {"device", DiskDevice,
                  "a disk without device='disk' (Nova always writes it) is not restorable: the "
                  "agent replicates only disks that name device='disk'"}},
       .many = true,
       .replica_disk = true},
      {.path = "domain/devices/disk/driver",
       .attrs = {{"name", OneOf({"qemu"})},
                 {"type", Drop()},  // the replica image is raw
                 {"cache",
                  OneOf({"default", "none", "writethrough", "writeback", "directsync", "unsafe"})},
                 {"io", OneOf({"native", "threads", "io_uring"})},
                 {"discard", OneOf({"unmap", "ignore"})},
                 {"detect_zeroes", OneOf({"off", "on", "unmap"})},
                 {"error_policy", OneOf({"stop", "report", "ignore", "enospace"})},
                 {"rerror_policy", OneOf({"stop", "report", "ignore"})},
                 {"queues", Uint()},
                 {"iommu", OnOff()}}},
      {.path = "domain/devices/disk/source", .whole = DiskSource},
      {.path = "domain/devices/disk/auth", .drop = true},  // a network disk's credentials
      {.path = "domain/devices/disk/backingStore", .drop = true},
      {.path = "domain/devices/disk/mirror", .drop = true},
      {.path = "domain/devices/disk/target",
       .attrs = {{"dev", DiskName()}, {"bus", OneOf({"virtio", "scsi", "sata", "ide", "usb"})}}},
      {.path = "domain/devices/disk/boot", .attrs = {{"order", Uint()}}},
      {.path = "domain/devices/disk/serial", .text = GuestText()},
      {.path = "domain/devices/disk/blockio",
       .attrs = {{"logical_block_size", Uint()}, {"physical_block_size", Uint()}}},
      {.path = "domain/devices/disk/iotune"},
      // NICs: bridge (Linux bridge or OVS with a virtualport), ethernet (os-vif plugs the tap);
      // never a libvirt network. Nova's tap name, MAC, model, MTU, queues, QoS are carried.
      {.path = "domain/devices/interface",
       .attrs = {{"type", InterfaceType, "an interface without a type is not restorable"}},
       .many = true},
      {.path = "domain/devices/interface/mac", .attrs = {{"address", Mac()}}},
      {.path = "domain/devices/interface/source",
       .attrs = {{"bridge", InterfaceSourceBridge}, {"portid", Drop()}}},
      {.path = "domain/devices/interface/target",
       .attrs = {{"dev", Copy()}, {"managed", OneOf({"yes"})}},
       .whole = InterfaceTarget},
      {.path = "domain/devices/interface/model",
       .attrs = {{"type", OneOf({"virtio", "virtio-transitional", "virtio-non-transitional",
                                 "e1000", "e1000e", "rtl8139", "ne2k_pci", "pcnet"})}}},
      {.path = "domain/devices/interface/driver",
       .attrs = {{"name", OneOf({"qemu", "vhost"})},
                 {"queues", Uint()},
                 {"rx_queue_size", Uint()},
                 {"tx_queue_size", Uint()},
                 {"iommu", OnOff()}}},
      {.path = "domain/devices/interface/mtu", .attrs = {{"size", Uint()}}},
      {.path = "domain/devices/interface/virtualport", .attrs = {{"type", OneOf({"openvswitch"})}}},
      {.path = "domain/devices/interface/virtualport/parameters",
       .attrs = {{"interfaceid", OvsInterfaceId}}},  // no profileid: Nova never writes one
      {.path = "domain/devices/interface/bandwidth"},
      {.path = "domain/devices/interface/link", .attrs = {{"state", OneOf({"up", "down"})}}},
      {.path = "domain/devices/interface/boot", .attrs = {{"order", Uint()}}},
      // Serial consoles: pty (Nova's, with a log file) or a file.
      {.path = "domain/devices/serial", .attrs = {{"type", CharType}}, .many = true},
      {.path = "domain/devices/console",
       .attrs = {{"type", CharType}, {"tty", Drop()}},  // tty: the primary's /dev/pts/N
       .many = true},
      // QEMU guest agent channel: libvirt makes the socket in its own directory when no path is
      // given, so the primary's path is left out.
      {.path = "domain/devices/channel", .attrs = {{"type", ChannelType}}, .many = true},
      {.path = "domain/devices/channel/source",
       .attrs = {{"mode", OneOf({"bind"})}, {"path", Drop()}}},
      {.path = "domain/devices/channel/target",
       .attrs = {{"type", OneOf({"virtio"})},
                 {"name", OneOf({"org.qemu.guest_agent.0", "com.redhat.spice.0"})},
                 {"state", Drop()}}},
      {.path = "domain/devices/input",
       .attrs = {{"type", OneOf({"tablet", "mouse", "keyboard"})},
                 {"bus", OneOf({"usb", "ps2", "virtio"})}},
       .many = true},
      // Graphics: automatic ports only (a port number is the primary's, picked at its start).
      {.path = "domain/devices/graphics",
       .attrs = {{"type", OneOf({"vnc", "spice"})},
                 {"autoport", OneOf({"yes"})},
                 {"port", Drop()},
                 {"tlsPort", Drop()},
                 {"websocket", Drop()},
                 {"listen", ListenAddress()},
                 {"keymap", Token()}},
       .many = true},
      {.path = "domain/devices/graphics/listen",
       .attrs = {{"type", OneOf({"address", "none"})}, {"address", ListenAddress()}},
       .many = true},
      {.path = "domain/devices/graphics/image",
       .attrs = {{"compression", OneOf({"auto_glz", "auto_lz", "quic", "glz", "lz", "off"})}}},
      {.path = "domain/devices/audio",
       .attrs = {{"id", Uint()}, {"type", OneOf({"none", "spice"})}},
       .many = true},
      {.path = "domain/devices/video", .many = true},
      {.path = "domain/devices/video/model",
       .attrs = {{"type", OneOf({"virtio", "cirrus", "vga", "qxl", "bochs", "ramfb", "none"})},
                 {"vram", Uint()},
                 {"ram", Uint()},
                 {"vgamem", Uint()},
                 {"vram64", Uint()},
                 {"heads", Uint()},
                 {"primary", YesNo()}}},
      {.path = "domain/devices/video/driver", .attrs = {{"iommu", OnOff()}}},
      {.path = "domain/devices/memballoon",
       .attrs = {{"model",
                  OneOf({"virtio", "virtio-transitional", "virtio-non-transitional", "none"})},
                 {"autodeflate", OnOff()},
                 {"freePageReporting", OnOff()}}},
      {.path = "domain/devices/memballoon/stats", .attrs = {{"period", Uint()}}},
      {.path = "domain/devices/memballoon/driver", .attrs = {{"iommu", OnOff()}}},
      {.path = "domain/devices/rng",
       .attrs = {{"model", OneOf({"virtio", "virtio-transitional", "virtio-non-transitional"})}},
       .many = true},
      {.path = "domain/devices/rng/backend",
       .attrs = {{"model", OneOf({"random", "builtin"})}},
       .text = RngBackend},
      {.path = "domain/devices/rng/rate", .attrs = {{"period", Uint()}, {"bytes", Uint()}}},
      {.path = "domain/devices/rng/driver", .attrs = {{"iommu", OnOff()}}},
      {.path = "domain/devices/watchdog",
       .attrs = {{"model", OneOf({"i6300esb", "ib700", "itco"})},
                 {"action", WatchdogAction}},
       .many = true},
      {.path = "domain/devices/controller",
       .attrs = {{"type", OneOf({"usb", "pci", "ide", "sata", "scsi", "virtio-serial", "fdc"})},
                 {"index", Uint()},
                 {"model", Token()},
                 {"ports", Uint()},
                 {"vectors", Uint()}},
       .many = true},
      {.path = "domain/devices/controller/model", .attrs = {{"name", Token()}}},
      {.path = "domain/devices/controller/target",
       .attrs = {{"chassisNr", Uint()},
                 {"chassis", Uint()},
                 {"port", AddressNumber()},
                 {"busNr", Uint()},
                 {"index", Uint()},
                 {"hotplug", OnOff()}}},
      {.path = "domain/devices/controller/driver",
       .attrs = {{"queues", Uint()}, {"iommu", OnOff()}}},
      {.path = "domain/devices/controller/master", .attrs = {{"startport", Uint()}}},
  };
  for (const char* limit :
       {"total_bytes_sec", "read_bytes_sec", "write_bytes_sec", "total_iops_sec", "read_iops_sec",
        "write_iops_sec", "total_bytes_sec_max", "read_bytes_sec_max", "write_bytes_sec_max",
        "total_iops_sec_max", "read_iops_sec_max", "write_iops_sec_max", "size_iops_sec"}) {
    rules.push_back({.path = std::string("domain/devices/disk/iotune/") + limit, .text = Uint()});
  }
  for (const char* dir : {"inbound", "outbound"}) {
    rules.push_back(
        {.path = std::string("domain/devices/interface/bandwidth/") + dir,
         .attrs = {{"average", Uint()}, {"peak", Uint()}, {"burst", Uint()}, {"floor", Uint()}}});
  }
  for (const char* kind : {"serial", "console"}) {
    const std::string base = std::string("domain/devices/") + kind;
    rules.push_back(
        {.path = base + "/source", .attrs = {{"path", CharSourcePath}, {"append", OnOff()}}});
    rules.push_back({.path = base + "/log",
                     .attrs = {{"file", HostFilePath(HostFile::kConsole)}, {"append", OnOff()}}});
    rules.push_back({.path = base + "/target",
                     .attrs = {{"type", OneOf({"isa-serial", "usb-serial", "pci-serial",
                                               "system-serial", "serial", "virtio"})},
                               {"port", Uint()}}});
    rules.push_back({.path = base + "/target/model", .attrs = {{"name", Token()}}});
  }
  for (const char* name : {"relaxed", "vapic", "vpindex", "runtime", "synic", "reset",
                           "frequencies", "reenlightenment", "tlbflush", "ipi", "evmcs", "avic"}) {
    rules.push_back(
        {.path = std::string("domain/features/hyperv/") + name, .attrs = {{"state", OnOff()}}});
  }
  for (std::string_view device : kAddressedDevices) {
    const std::string base = "domain/devices/" + std::string(device);
    rules.push_back({.path = base + "/alias", .attrs = {{"name", Copy()}}, .whole = Alias});
    rules.push_back({.path = base + "/address",
                     .attrs = {{"type", OneOf({"pci", "drive", "usb", "virtio-serial", "isa"})},
                               {"domain", AddressNumber()},
                               {"bus", AddressNumber()},
                               {"slot", AddressNumber()},
                               {"function", AddressNumber()},
                               {"multifunction", OnOff()},
                               {"controller", AddressNumber()},
                               {"target", AddressNumber()},
                               {"unit", AddressNumber()},
                               {"port", AddressNumber()},
                               {"iobase", AddressNumber()},
                               {"irq", AddressNumber()}}});
  }
  return rules;
}

// The allow-list by path, built once.
const std::unordered_map<std::string, Rule>& AllowList() {
  static const auto* table = [] {
    auto* t = new std::unordered_map<std::string, Rule>;
    for (Rule& r : MakeAllowList()) {
      std::string path = r.path;
      t->emplace(std::move(path), std::move(r));
    }
    return t;
  }();
  return *table;
}

// ---------------------------------------------------------------------------------------------
// The walk: checks every node of the peer's document against the allow-list and, when deriving,
// builds the new document from what it carries.

std::string TextOf(xmlNodePtr n) {
  std::string text;
  for (xmlNodePtr c = n->children; c; c = c->next) {
    if (c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) text += S(c->content);
  }
  return text;
}

bool IsBlank(std::string_view s) {
  return s.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

xmlNodePtr FirstChild(xmlNodePtr parent, const char* name) {
  for (xmlNodePtr c = parent ? parent->children : nullptr; c; c = c->next) {
    if (c->type == XML_ELEMENT_NODE && !c->ns && xmlStrEqual(c->name, X(name))) return c;
  }
  return nullptr;
}

std::string Attribute(xmlNodePtr n, const char* name) {
  xmlChar* v = n ? xmlGetNoNsProp(n, X(name)) : nullptr;
  std::string out(S(v));
  xmlFree(v);
  return out;
}

// <qemu:commandline> holding exactly <qemu:arg value='-incoming'/><qemu:arg value='defer'/>
// (what AddIncomingDefer() writes) and nothing else: no other argument, attribute or text.
bool IsOwnIncomingDefer(xmlNodePtr n) {
  if (!n->ns || !xmlStrEqual(n->ns->href, X(kQemuNs)) || !xmlStrEqual(n->name, X("commandline")) ||
      n->properties) {
    return false;
  }
  std::vector<std::string> args;
  for (xmlNodePtr c = n->children; c; c = c->next) {
    if (c->type == XML_TEXT_NODE && IsBlank(S(c->content))) continue;
    if (c->type != XML_ELEMENT_NODE || !c->ns || !xmlStrEqual(c->ns->href, X(kQemuNs)) ||
        !xmlStrEqual(c->name, X("arg")) || c->children || !c->properties ||
        c->properties->next || !xmlStrEqual(c->properties->name, X("value"))) {
      return false;
    }
    args.push_back(Attribute(c, "value"));
  }
  return args == std::vector<std::string>{"-incoming", "defer"};
}

bool IsCanonicalUuid(std::string_view u) { return ValidateInstanceUuid(u).ok(); }

// libvirt's <name>: also a file name on the backup (logs, the guest-RAM directory).
bool IsSaneDomainName(std::string_view n) {
  return AllOf(n, "_.+-", 64) && n[0] != '_' && n[0] != '.' && n[0] != '+' && n[0] != '-';
}

// Nova's <metadata><nova:instance>: informational only (libvirt and QEMU never read it), carried
// as a whole when it holds nothing but Nova's own elements. Other metadata is left out.
bool IsNovaInstance(xmlNodePtr n) {
  if (!n->ns || !xmlStrEqual(n->ns->href, X(kNovaNs)) || !xmlStrEqual(n->name, X("instance"))) {
    return false;
  }
  std::function<bool(xmlNodePtr)> only_nova = [&](xmlNodePtr e) {
    for (xmlAttrPtr a = e->properties; a; a = a->next) {
      if (a->ns) return false;
    }
    for (xmlNodePtr c = e->children; c; c = c->next) {
      if (c->type == XML_ELEMENT_NODE) {
        if (!c->ns || !xmlStrEqual(c->ns->href, X(kNovaNs)) || !only_nova(c)) return false;
      } else if (c->type != XML_TEXT_NODE && c->type != XML_CDATA_SECTION_NODE &&
                 c->type != XML_COMMENT_NODE) {
        return false;
      }
    }
    return true;
  };
  return only_nova(n);
}

class Walk {
 public:
  // `out` null: check only. `images` null: disks are not matched to replica images.
  Walk(const config::LibvirtSection& cfg, xmlDoc* out,
       const std::map<std::string, std::string>* images)
      : cfg_(cfg), out_(out), images_(images) {}

  Status Domain(xmlNodePtr root) {
    if (!root || root->ns || !xmlStrEqual(root->name, X("domain"))) {
      return Refused("/", "the root element is not <domain>");
    }
    NOVA_DT_RETURN_IF_ERROR(Identity(root));
    NOVA_DT_RETURN_IF_ERROR(Element(root, "domain", "/domain", nullptr));
    xmlNodePtr mb = FirstChild(root, "memoryBacking");
    if (Attribute(FirstChild(mb, "source"), "type") != "file" ||
        Attribute(FirstChild(mb, "access"), "mode") != "shared") {
      return Refused("/domain/memoryBacking",
                     "guest RAM is not shared file-backed memory (<memoryBacking><source "
                     "type='file'/><access mode='shared'/>, nova.conf [libvirt] "
                     "file_backed_memory): the replica RAM file cannot become guest RAM");
    }
    for (const char* required : {"memory", "os", "devices"}) {
      if (!FirstChild(root, required)) {
        return Refused("/domain", std::string("no <") + required + ">");
      }
    }
    if (!FirstChild(FirstChild(root, "os"), "type")) {
      return Refused("/domain/os", "no <type>hvm</type> (a full virtualization guest)");
    }
    if (images_ && matched_ != images_->size()) {
      return absl::InvalidArgumentError(
          "restore XML: replica images given for disks the domain does not have");
    }
    return absl::OkStatus();
  }

  const std::string& uuid() const { return uuid_; }

 private:
  // <name> and <uuid>: exactly one each, sane (before the walk: host file rules use the UUID).
  Status Identity(xmlNodePtr root) {
    for (const char* what : {"name", "uuid"}) {
      int count = 0;
      for (xmlNodePtr c = root->children; c; c = c->next) {
        if (c->type == XML_ELEMENT_NODE && !c->ns && xmlStrEqual(c->name, X(what))) ++count;
      }
      if (count != 1) {
        return Refused(
            "/domain/" + std::string(what),
            "expected exactly one <" + std::string(what) + ">, found " + std::to_string(count));
      }
    }
    uuid_ = TextOf(FirstChild(root, "uuid"));
    if (!IsCanonicalUuid(uuid_)) {
      return Refused("/domain/uuid", Quote(uuid_) +
                                         " is not a UUID in canonical lowercase form "
                                         "(xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)");
    }
    const std::string name = TextOf(FirstChild(root, "name"));
    if (!IsSaneDomainName(name)) {
      return Refused("/domain/name",
                     Quote(name) +
                         " is not a domain name of 1..64 characters of [A-Za-z0-9_.+-] "
                         "starting with a letter or digit");
    }
    return absl::OkStatus();
  }

  Status RefuseElement(xmlNodePtr n, const std::string& rule_path, const std::string& where) {
    if (n->ns) {
      const std::string prefix = n->ns->prefix ? std::string(S(n->ns->prefix)) + ":" : "";
      const std::string element = "<" + prefix + std::string(S(n->name)) + ">";
      if (xmlStrEqual(n->ns->href, X(kQemuNs))) {
        return Refused(where, element +
                                  " is QEMU pass-through (command-line arguments, capabilities or "
                                  "property overrides run as given by QEMU on this host), which "
                                  "is not restorable");
      }
      return Refused(where, element + " (namespace " + Quote(S(n->ns->href)) +
                                ") is outside libvirt's domain schema and not restorable");
    }
    const auto& known = KnownRefusals();
    if (auto it = known.find(rule_path); it != known.end()) {
      return Refused(where, std::string(it->second) + " is not restorable");
    }
    return Refused(where, "<" + std::string(S(n->name)) +
                              "> is not on the restore allow-list (agent/libvirt/restore_xml.cc)");
  }

  // Checks `in` (an element at `rule_path`, shown as `where`) and, when deriving, adds what it
  // carries to `out_parent` (the document itself for the root).
  Status Element(xmlNodePtr in, const std::string& rule_path, const std::string& where,
                 xmlNodePtr out_parent) {
    const auto& rules = AllowList();
    auto found = rules.find(rule_path);
    if (found == rules.end()) return RefuseElement(in, rule_path, where);
    const Rule& rule = found->second;
    if (rule.drop) return absl::OkStatus();
    const Ctx ctx{cfg_, uuid_, in};
    if (rule.whole) {
      auto carry = rule.whole(ctx);
      if (!carry.ok()) return Refused(where, std::string(carry.status().message()));
      if (*carry == Carry::kDrop) return absl::OkStatus();
    }

    xmlNodePtr out = nullptr;
    if (out_) {
      out = xmlNewDocNode(out_, nullptr, in->name, nullptr);
      if (out_parent) {
        xmlAddChild(out_parent, out);
      } else {
        xmlDocSetRootElement(out_, out);
      }
    }

    for (xmlAttrPtr a = in->properties; a; a = a->next) {
      const std::string at = where + "/@" + std::string(S(a->name));
      if (a->ns) {
        return Refused(at, "attribute in namespace " + Quote(S(a->ns->href)) + " not restorable");
      }
      const Attr* allowed = nullptr;
      for (const Attr& r : rule.attrs) {
        if (S(a->name) == r.name) allowed = &r;
      }
      if (!allowed) {
        return Refused(at, "attribute '" + std::string(S(a->name)) + "' of <" +
                               std::string(S(in->name)) + "> is not on the restore allow-list");
      }
      const std::string value = Attribute(in, reinterpret_cast<const char*>(a->name));
      auto carry = allowed->check(value, ctx);
      if (!carry.ok()) return Refused(at, std::string(carry.status().message()));
      if (out && *carry == Carry::kCopy) xmlSetProp(out, a->name, X(value.c_str()));
    }
    for (const Attr& r : rule.attrs) {
      if (r.required && !xmlHasNsProp(in, X(std::string(r.name).c_str()), nullptr)) {
        return Refused(where + "/@" + std::string(r.name), r.required);
      }
    }

    std::string text;
    std::unordered_map<std::string, int> seen;
    for (xmlNodePtr c = in->children; c; c = c->next) {
      switch (c->type) {
        case XML_TEXT_NODE:
        case XML_CDATA_SECTION_NODE:
          text += S(c->content);
          continue;
        case XML_COMMENT_NODE:
        case XML_PI_NODE:
          continue;  // never carried
        case XML_ELEMENT_NODE:
          break;
        case XML_ENTITY_REF_NODE:
          return Refused(where, "an entity reference is not allowed");
        default:
          return Refused(where, "unexpected XML node type " + std::to_string(c->type));
      }
      const std::string name(S(c->name));
      if (rule.nova_metadata) {
        if (out && IsNovaInstance(c)) {
          xmlAddChild(out, xmlDocCopyNode(c, out_, 1));
        }
        continue;
      }
      const std::string child_path = rule_path + "/" + name;
      // A domain a backup restored carries the agent's own `-incoming defer` in its live XML
      // (the restore started it so): that, exactly, is accepted and never carried.
      if (rule_path == "domain" && IsOwnIncomingDefer(c)) continue;
      if (c->ns) {
        const std::string prefix = c->ns->prefix ? std::string(S(c->ns->prefix)) + ":" : "";
        return RefuseElement(c, child_path, where + "/" + prefix + name);
      }
      const int index = ++seen[name];
      auto child_rule = rules.find(child_path);
      const bool many = child_rule != rules.end() && child_rule->second.many;
      const std::string child_where =
          where + "/" + name + (many ? "[" + std::to_string(index) + "]" : "");
      if (!many && index > 1) return Refused(child_where, "<" + name + "> given more than once");
      NOVA_DT_RETURN_IF_ERROR(Element(c, child_path, child_where, out));
    }

    if (rule.text) {
      auto carry = rule.text(text, ctx);
      if (!carry.ok()) return Refused(where, std::string(carry.status().message()));
      if (out && *carry == Carry::kCopy) xmlNodeAddContentLen(out, X(text.c_str()), text.size());
      if (out && *carry == Carry::kDrop) {
        xmlUnlinkNode(out);
        xmlFreeNode(out);
        out = nullptr;
      }
    } else if (!IsBlank(text)) {
      return Refused(where, "<" + std::string(S(in->name)) + "> holds text " + Quote(text));
    }
    // An element left with nothing of what it had (a pty console's <source path>): not carried.
    if (out && in->properties && !out->properties && !out->children) {
      xmlUnlinkNode(out);
      xmlFreeNode(out);
      out = nullptr;
    }
    if (rule.replica_disk) return ReplicaDisk(in, where, out);
    return absl::OkStatus();
  }

  // A disk of the derived definition: a raw file disk on the replica image of its target dev.
  Status ReplicaDisk(xmlNodePtr in, const std::string& where, xmlNodePtr out) {
    const std::string dev = Attribute(FirstChild(in, "target"), "dev");
    if (dev.empty()) return Refused(where, "a disk without <target dev>");
    if (!disks_.insert(dev).second) return Refused(where, "a second disk '" + dev + "'");
    if (!images_) return absl::OkStatus();
    auto image = images_->find(dev);
    if (image == images_->end()) {
      return absl::InvalidArgumentError("restore XML: disk '" + dev + "' has no replica image");
    }
    ++matched_;
    if (!out) return absl::OkStatus();
    {  // type='file' first, as libvirt writes it, then the disk's other attributes
      std::vector<std::pair<std::string, std::string>> kept;
      for (xmlAttrPtr a = out->properties; a; a = a->next) {
        kept.emplace_back(S(a->name), Attribute(out, reinterpret_cast<const char*>(a->name)));
      }
      while (out->properties) xmlRemoveProp(out->properties);
      xmlSetProp(out, X("type"), X("file"));
      for (const auto& [name, value] : kept) xmlSetProp(out, X(name.c_str()), X(value.c_str()));
    }
    // <driver name='qemu' type='raw' ...the primary's other driver attributes>: replica images
    // are raw (ReplicaStore).
    xmlNodePtr driver = FirstChild(out, "driver");
    if (!driver) driver = xmlNewChild(out, nullptr, X("driver"), nullptr);
    std::vector<std::pair<std::string, std::string>> others;
    for (xmlAttrPtr a = driver->properties; a; a = a->next) {
      const std::string name(S(a->name));
      if (name != "name" && name != "type")
        others.emplace_back(name, Attribute(driver, name.c_str()));
    }
    while (driver->properties) xmlRemoveProp(driver->properties);
    xmlSetProp(driver, X("name"), X("qemu"));
    xmlSetProp(driver, X("type"), X("raw"));
    for (const auto& [name, value] : others) xmlSetProp(driver, X(name.c_str()), X(value.c_str()));
    // <source file='<replica image>'><seclabel model='dac' relabel='no'/></source>: the agent has
    // given the image to QEMU's user already (mode 0600), in a directory below libvirt's RAM
    // directory that QEMU's user owns; libvirtd (root) must not chown by a path a compromised
    // QEMU could have swapped for a symbolic link (docs/security.md).
    xmlNodePtr source = xmlNewDocNode(out_, nullptr, X("source"), nullptr);
    xmlSetProp(source, X("file"), X(image->second.c_str()));
    xmlNodePtr label = xmlNewChild(source, nullptr, X("seclabel"), nullptr);
    xmlSetProp(label, X("model"), X("dac"));
    xmlSetProp(label, X("relabel"), X("no"));
    xmlAddNextSibling(driver, source);
    return absl::OkStatus();
  }

  const config::LibvirtSection& cfg_;
  xmlDoc* const out_;
  const std::map<std::string, std::string>* const images_;
  std::string uuid_;
  std::set<std::string> disks_;  // target devs seen
  size_t matched_ = 0;
};

// Parses a peer's domain XML: bounded, UTF-8, no DTD, no network, no entity substitution.
StatusOr<DocPtr> ParsePeerXml(std::string_view xml) {
  static const bool initialized = (xmlInitParser(), true);  // once, before any thread parses
  (void)initialized;
  if (xml.size() > kMaxDomainXmlBytes) {
    return Refused("/", "the domain XML is " + std::to_string(xml.size()) +
                            " bytes, more than the " + std::to_string(kMaxDomainXmlBytes) +
                            " a restorable definition may have");
  }
  if (xml.find("<!DOCTYPE") != std::string_view::npos ||
      xml.find("<!ENTITY") != std::string_view::npos) {
    return Refused("/", "a DOCTYPE (DTD or entity declarations) is not allowed");
  }
  std::unique_ptr<xmlParserCtxt, ParserCtxtFree> ctxt(xmlNewParserCtxt());
  if (!ctxt) return absl::ResourceExhaustedError("domain XML: no memory for a parser");
  DocPtr doc(xmlCtxtReadMemory(ctxt.get(), xml.data(), static_cast<int>(xml.size()), "domain.xml",
                               "UTF-8", XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING));
  if (!doc) {
    const xmlError* e = xmlCtxtGetLastError(ctxt.get());
    std::string why = e && e->message ? e->message : "unknown error";
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    return Refused("/", "does not parse as XML: " + why);
  }
  if (doc->intSubset || doc->extSubset) {
    return Refused("/", "a DOCTYPE (DTD or entity declarations) is not allowed");
  }
  return doc;
}

void AddIncomingDefer(xmlNodePtr domain) {
  xmlNsPtr ns = xmlNewNs(domain, X(kQemuNs), X("qemu"));
  xmlNodePtr cmdline = xmlNewChild(domain, ns, X("commandline"), nullptr);
  for (const char* v : {"-incoming", "defer"}) {
    xmlNodePtr arg = xmlNewChild(cmdline, ns, X("arg"), nullptr);
    xmlSetProp(arg, X("value"), X(v));
  }
}

}  // namespace

Status CheckRestorableDomain(std::string_view domain_xml, std::string_view instance_uuid,
                             const config::LibvirtSection& cfg) {
  if (!IsCanonicalUuid(instance_uuid)) {
    return absl::InvalidArgumentError("instance UUID " + Quote(instance_uuid) +
                                      " is not in canonical lowercase form");
  }
  auto doc = ParsePeerXml(domain_xml);
  if (!doc.ok()) return doc.status();
  Walk walk(cfg, /*out=*/nullptr, /*images=*/nullptr);
  NOVA_DT_RETURN_IF_ERROR(walk.Domain(xmlDocGetRootElement(doc->get())));
  if (walk.uuid() != instance_uuid) {
    return Refused("/domain/uuid", "the domain's UUID " + walk.uuid() + " is not the server's " +
                                       std::string(instance_uuid));
  }
  return absl::OkStatus();
}

StatusOr<InstanceDirUse> InstanceDirFiles(std::string_view domain_xml,
                                          std::string_view instance_uuid,
                                          const config::LibvirtSection& cfg) {
  auto doc = ParsePeerXml(domain_xml);
  if (!doc.ok()) return doc.status();
  xmlNodePtr root = xmlDocGetRootElement(doc->get());
  const std::string own = cfg.instances_path + "/" + std::string(instance_uuid) + "/";
  InstanceDirUse use;
  // True when `path` is a file of the instance directory (and not the operator's).
  const auto in_instance_dir = [&](const std::string& path) {
    for (const std::string& dir : cfg.restore_file_dirs) {
      if (path.size() > dir.size() + 1 && path.compare(0, dir.size(), dir) == 0 &&
          path[dir.size()] == '/') {
        return false;
      }
    }
    const bool inside = path.size() > own.size() && path.compare(0, own.size(), own) == 0;
    use.any = use.any || inside;
    return inside;
  };
  xmlNodePtr os = FirstChild(root, "os");
  if (xmlNodePtr k = FirstChild(os, "kernel"); k && in_instance_dir(TextOf(k))) {
    use.kernel = TextOf(k) == own + std::string(core::kBootFileKernel);
  }
  if (xmlNodePtr i = FirstChild(os, "initrd"); i && in_instance_dir(TextOf(i))) {
    use.ramdisk = TextOf(i) == own + std::string(core::kBootFileRamdisk);
  }
  xmlNodePtr devices = FirstChild(root, "devices");
  for (xmlNodePtr c = devices ? devices->children : nullptr; c; c = c->next) {
    if (c->type != XML_ELEMENT_NODE || c->ns ||
        !(xmlStrEqual(c->name, X("serial")) || xmlStrEqual(c->name, X("console")))) {
      continue;
    }
    in_instance_dir(Attribute(FirstChild(c, "log"), "file"));
    if (Attribute(c, "type") == "file") in_instance_dir(Attribute(FirstChild(c, "source"), "path"));
  }
  return use;
}

StatusOr<std::string> DeriveRestoreXml(std::string_view domain_xml,
                                       const std::map<std::string, std::string>& disk_images,
                                       bool incoming, const config::LibvirtSection& cfg) {
  auto in = ParsePeerXml(domain_xml);
  if (!in.ok()) return in.status();
  DocPtr out(xmlNewDoc(X("1.0")));
  if (!out) return absl::ResourceExhaustedError("restore XML: no memory for a document");
  Walk walk(cfg, out.get(), &disk_images);
  NOVA_DT_RETURN_IF_ERROR(walk.Domain(xmlDocGetRootElement(in->get())));
  if (incoming) AddIncomingDefer(xmlDocGetRootElement(out.get()));

  xmlChar* buf = nullptr;
  int size = 0;
  xmlDocDumpFormatMemoryEnc(out.get(), &buf, &size, "UTF-8", 1);
  if (!buf) return absl::ResourceExhaustedError("restore XML: cannot serialize");
  std::string xml(reinterpret_cast<const char*>(buf), static_cast<size_t>(size));
  xmlFree(buf);
  return xml;
}

}  // namespace novadt::libvirt
