#include "agent/libvirt/libvirt_launcher.h"

#include "agent/libvirt/domain_xml.h"
#include "agent/libvirt/errors.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>
#include <spdlog/spdlog.h>

#include <mutex>
#include <vector>

#include "agent/libvirt/handles.h"

namespace novadt::libvirt {
namespace {

constexpr char kQemuNsHref[] = "http://libvirt.org/schemas/domain/qemu/1.0";

// ---------------------------------------------------------------------------------------------
// Restore-XML derivation (libxml2).

const xmlChar* X(const char* s) { return reinterpret_cast<const xmlChar*>(s); }

bool Is(xmlNodePtr n, const char* name) {
  return n && n->type == XML_ELEMENT_NODE && n->ns == nullptr && xmlStrEqual(n->name, X(name));
}

std::vector<xmlNodePtr> Children(xmlNodePtr parent, const char* name) {
  std::vector<xmlNodePtr> out;
  for (xmlNodePtr c = parent ? parent->children : nullptr; c; c = c->next) {
    if (Is(c, name)) out.push_back(c);
  }
  return out;
}

xmlNodePtr Child(xmlNodePtr parent, const char* name) {
  auto all = Children(parent, name);
  return all.empty() ? nullptr : all.front();
}

// The attribute's value, "" when absent.
std::string Attr(xmlNodePtr n, const char* name) {
  xmlChar* v = n ? xmlGetNoNsProp(n, X(name)) : nullptr;
  if (!v) return {};
  std::string s(reinterpret_cast<const char*>(v));
  xmlFree(v);
  return s;
}

void Remove(xmlNodePtr n) {
  xmlUnlinkNode(n);
  xmlFreeNode(n);
}

// Removes every element named `name` in the subtree below `n` for which `pred` holds.
template <typename Pred>
void RemoveAll(xmlNodePtr n, const char* name, Pred pred) {
  for (xmlNodePtr c = n->children; c;) {
    xmlNodePtr next = c->next;
    if (Is(c, name) && pred(c)) {
      Remove(c);
    } else if (c->type == XML_ELEMENT_NODE) {
      RemoveAll(c, name, pred);
    }
    c = next;
  }
}

bool StartsWith(const std::string& s, std::string_view prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

Status Invalid(const std::string& what) {
  return absl::InvalidArgumentError("restore XML: " + what);
}

Status CheckSharedFileMemory(xmlNodePtr domain) {
  xmlNodePtr mb = Child(domain, "memoryBacking");
  if (Attr(Child(mb, "source"), "type") != "file" ||
      Attr(Child(mb, "access"), "mode") != "shared") {
    return Invalid(
        "guest RAM is not shared file-backed memory (<memoryBacking><source type='file'/>"
        "<access mode='shared'/>); the replica RAM file cannot become guest RAM");
  }
  if (Child(Child(domain, "cpu"), "numa")) {
    return Invalid("guests with NUMA cells (one RAM file per cell) are not supported");
  }
  return absl::OkStatus();
}

Status PointDisksAtReplica(xmlNodePtr devices,
                           const std::map<std::string, std::string>& disk_images) {
  size_t matched = 0;
  for (xmlNodePtr disk : Children(devices, "disk")) {
    const std::string device = Attr(disk, "device");
    if (!device.empty() && device != "disk") continue;  // cdrom, floppy, lun: left as they are
    const std::string dev = Attr(Child(disk, "target"), "dev");
    auto it = disk_images.find(dev);
    if (it == disk_images.end()) return Invalid("disk '" + dev + "' has no replica image");
    ++matched;
    xmlSetProp(disk, X("type"), X("file"));
    for (const char* drop : {"source", "backingStore", "mirror"}) {
      for (xmlNodePtr c : Children(disk, drop)) Remove(c);
    }
    xmlNodePtr driver = Child(disk, "driver");
    if (!driver) {
      driver = xmlNewChild(disk, nullptr, X("driver"), nullptr);
      xmlSetProp(driver, X("name"), X("qemu"));
    }
    xmlSetProp(driver, X("type"), X("raw"));  // replica images are raw (ReplicaStore)
    xmlNodePtr source = xmlNewChild(disk, nullptr, X("source"), nullptr);
    xmlSetProp(source, X("file"), X(it->second.c_str()));
  }
  if (matched != disk_images.size()) {
    return Invalid("replica images given for disks the domain does not have");
  }
  return absl::OkStatus();
}

// Drops what only a running domain's XML carries and the backup's libvirt must choose itself.
void DropRuntimeParts(xmlNodePtr domain) {
  xmlUnsetProp(domain, X("id"));
  for (xmlNodePtr s : Children(domain, "seclabel")) {
    if (Attr(s, "type") != "static") Remove(s);  // dynamic labels are per host and per start
  }
  RemoveAll(domain, "alias", [](xmlNodePtr a) { return !StartsWith(Attr(a, "name"), "ua-"); });
  xmlNodePtr devices = Child(domain, "devices");
  for (xmlNodePtr nic : Children(devices, "interface")) {
    for (xmlNodePtr t : Children(nic, "target")) {
      const std::string dev = Attr(t, "dev");
      if (StartsWith(dev, "vnet") || StartsWith(dev, "macvtap")) Remove(t);
    }
  }
  for (const char* kind : {"serial", "console", "parallel", "channel"}) {
    for (xmlNodePtr c : Children(devices, kind)) {
      if (Attr(c, "type") != "pty") continue;
      xmlUnsetProp(c, X("tty"));
      for (xmlNodePtr s : Children(c, "source")) Remove(s);  // the old host's /dev/pts/N
    }
  }
}

void AddIncomingDefer(xmlNodePtr domain) {
  xmlNsPtr ns = xmlSearchNsByHref(domain->doc, domain, X(kQemuNsHref));
  if (!ns) ns = xmlNewNs(domain, X(kQemuNsHref), X("qemu"));
  xmlNodePtr cmdline = nullptr;
  for (xmlNodePtr c = domain->children; c; c = c->next) {
    if (c->type == XML_ELEMENT_NODE && c->ns && xmlStrEqual(c->ns->href, X(kQemuNsHref)) &&
        xmlStrEqual(c->name, X("commandline"))) {
      cmdline = c;
    }
  }
  if (!cmdline) cmdline = xmlNewChild(domain, ns, X("commandline"), nullptr);
  for (const char* v : {"-incoming", "defer"}) {
    xmlNodePtr arg = xmlNewChild(cmdline, ns, X("arg"), nullptr);
    xmlSetProp(arg, X("value"), X(v));
  }
}

// The <uuid> of a domain XML.
StatusOr<std::string> DomainUuidOf(const std::string& xml) {
  XmlDocPtr doc = ParseDomainXml(xml);
  xmlNodePtr uuid = doc ? Child(xmlDocGetRootElement(doc.get()), "uuid") : nullptr;
  xmlChar* text = uuid ? xmlNodeGetContent(uuid) : nullptr;
  if (!text) return Invalid("domain XML has no <uuid>");
  std::string out(reinterpret_cast<const char*>(text));
  xmlFree(text);
  return out;
}

// ---------------------------------------------------------------------------------------------
// libvirt.

// libvirt's virDomainDefGetShortName(): the first 20 characters (not bytes) of the name.
std::string ShortName(const std::string& name) {
  size_t chars = 0, i = 0;
  for (; i < name.size(); ++i) {
    if ((static_cast<unsigned char>(name[i]) & 0xC0) != 0x80 && chars++ == 20) break;
  }
  return name.substr(0, i);
}

class LibvirtLauncher final : public core::DomainLauncher {
 public:
  LibvirtLauncher(const config::LibvirtSection& cfg, LauncherOptions options)
      : uri_(cfg.connection_uri), options_(std::move(options)) {}

  StatusOr<core::LaunchedDomain> StartPausedIncoming(const core::RestoreSpec& spec) override {
    auto xml = Derive(spec, /*incoming=*/true);
    if (!xml.ok()) return xml.status();
    auto xml_uuid = DomainUuidOf(*xml);
    if (!xml_uuid.ok()) return xml_uuid.status();
    auto conn = Conn();
    if (!conn.ok()) return conn.status();
    if (auto existing = Lookup(*xml_uuid);
        existing.ok() && virDomainIsActive(existing->get()) == 1) {
      return absl::AlreadyExistsError("domain " + *xml_uuid + " is already running here");
    }
    virDomainPtr raw = virDomainCreateXML(conn->get(), xml->c_str(), VIR_DOMAIN_START_PAUSED);
    if (!raw) {
      Status st = LastError("cannot start the restore domain (paused, -incoming defer)");
      return absl::IsInvalidArgument(st) ? st : absl::UnavailableError(st.message());
    }
    DomainPtr dom(raw);
    core::LaunchedDomain out;
    char uuid[VIR_UUID_STRING_BUFLEN] = {};
    virDomainGetUUIDString(dom.get(), uuid);
    out.uuid = uuid;
    const char* name = virDomainGetName(dom.get());
    out.name = name ? name : "";
    const unsigned id = virDomainGetID(dom.get());
    out.id = id == static_cast<unsigned>(-1) ? -1 : static_cast<int>(id);
    spdlog::info("libvirt: started {} ({}) paused for an incoming restore, id {}", out.name,
                 out.uuid, out.id);
    return out;
  }

  StatusOr<std::string> DomainRamFile(std::string_view uuid) override {
    auto dom = Lookup(uuid);
    if (!dom.ok()) return dom.status();
    const unsigned id = virDomainGetID(dom->get());
    if (id == static_cast<unsigned>(-1)) {
      return absl::NotFoundError("domain " + std::string(uuid) + " is not running");
    }
    const char* name = virDomainGetName(dom->get());
    return options_.host_root + options_.memory_backing_dir + "/" + std::to_string(id) + "-" +
           ShortName(name ? name : "") + "/pc.ram";
  }

  Status Resume(std::string_view uuid) override {
    auto dom = Lookup(uuid);
    if (!dom.ok()) return dom.status();
    if (virDomainResume(dom->get()) < 0) {
      return LastError("cannot resume domain " + std::string(uuid));
    }
    return absl::OkStatus();
  }

  Status MakePersistent(const core::RestoreSpec& spec) override {
    auto xml = Derive(spec, /*incoming=*/false);
    if (!xml.ok()) return xml.status();
    auto conn = Conn();
    if (!conn.ok()) return conn.status();
    virDomainPtr raw = virDomainDefineXML(conn->get(), xml->c_str());
    if (!raw) {
      Status st = LastError("cannot define the restored domain");
      return absl::IsInvalidArgument(st) ? st : absl::UnavailableError(st.message());
    }
    DomainPtr dom(raw);
    return absl::OkStatus();
  }

  Status Destroy(std::string_view uuid) override {
    auto dom = Lookup(uuid);
    if (absl::IsNotFound(dom.status())) return absl::OkStatus();
    if (!dom.ok()) return dom.status();
    if (virDomainDestroy(dom->get()) < 0) {
      Status st = LastError("cannot destroy domain " + std::string(uuid));
      if (absl::IsNotFound(st) || virDomainIsActive(dom->get()) == 0) return absl::OkStatus();
      return st;
    }
    return absl::OkStatus();
  }

 private:
  StatusOr<std::string> Derive(const core::RestoreSpec& spec, bool incoming) const {
    std::map<std::string, std::string> images;
    for (const auto& [dev, path] : spec.disk_images) {
      if (!StartsWith(path, options_.host_root)) {
        return absl::InvalidArgumentError("replica image " + path + " is not under " +
                                          options_.host_root);
      }
      images[dev] = path.substr(options_.host_root.size());
    }
    return DeriveRestoreXml(spec.domain_xml, images, incoming);
  }

  // A reference to a live connection, (re)opened when needed.
  StatusOr<ConnectPtr> Conn() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!conn_ || virConnectIsAlive(conn_.get()) != 1) {
      conn_.reset();
      virConnectPtr raw = virConnectOpen(uri_.c_str());
      if (!raw) return absl::UnavailableError(LastError("cannot connect to " + uri_).message());
      conn_.reset(raw);
    }
    virConnectRef(conn_.get());
    return ConnectPtr(conn_.get());
  }

  StatusOr<DomainPtr> Lookup(std::string_view uuid) {
    auto conn = Conn();
    if (!conn.ok()) return conn.status();
    const std::string u(uuid);
    virDomainPtr dom = virDomainLookupByUUIDString(conn->get(), u.c_str());
    if (!dom) return LastError("no domain with UUID " + u);
    return DomainPtr(dom);
  }

  const std::string uri_;
  const LauncherOptions options_;
  std::mutex mu_;
  ConnectPtr conn_;  // guarded by mu_
};

}  // namespace

StatusOr<std::string> DeriveRestoreXml(std::string_view domain_xml,
                                       const std::map<std::string, std::string>& disk_images,
                                       bool incoming) {
  XmlDocPtr doc(xmlReadMemory(
      domain_xml.data(), static_cast<int>(domain_xml.size()), "domain.xml", nullptr,
      XML_PARSE_NONET | XML_PARSE_NOBLANKS | XML_PARSE_NOERROR | XML_PARSE_NOWARNING));
  if (!doc) {
    const xmlError* e = xmlGetLastError();
    return Invalid(std::string("domain XML does not parse: ") +
                   (e && e->message ? e->message : "unknown error"));
  }
  xmlNodePtr domain = xmlDocGetRootElement(doc.get());
  if (!Is(domain, "domain")) return Invalid("root element is not <domain>");
  NOVA_DT_RETURN_IF_ERROR(CheckSharedFileMemory(domain));
  xmlNodePtr devices = Child(domain, "devices");
  if (!devices) return Invalid("no <devices>");
  NOVA_DT_RETURN_IF_ERROR(PointDisksAtReplica(devices, disk_images));
  DropRuntimeParts(domain);
  if (incoming) AddIncomingDefer(domain);

  xmlChar* buf = nullptr;
  int size = 0;
  xmlDocDumpFormatMemory(doc.get(), &buf, &size, 1);
  if (!buf) return absl::ResourceExhaustedError("restore XML: cannot serialize");
  std::string out(reinterpret_cast<const char*>(buf), static_cast<size_t>(size));
  xmlFree(buf);
  return out;
}

std::unique_ptr<core::DomainLauncher> MakeLibvirtLauncher(const config::LibvirtSection& cfg,
                                                          LauncherOptions options) {
  return std::make_unique<LibvirtLauncher>(cfg, std::move(options));
}

}  // namespace novadt::libvirt
