#include "agent/libvirt/libvirt_launcher.h"

#include "agent/libvirt/domain_xml.h"
#include "agent/libvirt/errors.h"
#include "agent/libvirt/restore_xml.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <libxml/tree.h>
#include <spdlog/spdlog.h>

#include <mutex>
#include <vector>

#include "agent/libvirt/handles.h"

namespace novadt::libvirt {
namespace {

const xmlChar* X(const char* s) { return reinterpret_cast<const xmlChar*>(s); }

bool StartsWith(const std::string& s, std::string_view prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

// The <uuid> of a domain XML (one DeriveRestoreXml() made).
StatusOr<std::string> DomainUuidOf(const std::string& xml) {
  XmlDocPtr doc = ParseDomainXml(xml);
  xmlNodePtr root = doc ? xmlDocGetRootElement(doc.get()) : nullptr;
  for (xmlNodePtr c = root ? root->children : nullptr; c; c = c->next) {
    if (c->type != XML_ELEMENT_NODE || c->ns || !xmlStrEqual(c->name, X("uuid"))) continue;
    xmlChar* text = xmlNodeGetContent(c);
    std::string out(text ? reinterpret_cast<const char*>(text) : "");
    xmlFree(text);
    return out;
  }
  return absl::InvalidArgumentError("restore XML: domain XML has no <uuid>");
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
      : cfg_(cfg), options_(std::move(options)) {}

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
    return DeriveRestoreXml(spec.domain_xml, images, incoming, cfg_);
  }

  // A reference to a live connection, (re)opened when needed.
  StatusOr<ConnectPtr> Conn() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!conn_ || virConnectIsAlive(conn_.get()) != 1) {
      conn_.reset();
      virConnectPtr raw = virConnectOpen(cfg_.connection_uri.c_str());
      if (!raw) {
        return absl::UnavailableError(
            LastError("cannot connect to " + cfg_.connection_uri).message());
      }
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

  const config::LibvirtSection cfg_;  // connection_uri; the restore allow-list's host file rules
  const LauncherOptions options_;
  std::mutex mu_;
  ConnectPtr conn_;  // guarded by mu_
};

}  // namespace

std::unique_ptr<core::DomainLauncher> MakeLibvirtLauncher(const config::LibvirtSection& cfg,
                                                          LauncherOptions options) {
  return std::make_unique<LibvirtLauncher>(cfg, std::move(options));
}

}  // namespace novadt::libvirt
