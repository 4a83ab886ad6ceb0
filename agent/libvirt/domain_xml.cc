#include "agent/libvirt/domain_xml.h"

#include "agent/common/identifiers.h"
#include "agent/common/numbers.h"

#include <limits>
#include <memory>
#include <string>
#include <utility>

#include <libxml/parser.h>
#include <libxml/xpath.h>

namespace novadt::libvirt {
namespace {

struct XPathContextFree {
  void operator()(xmlXPathContext* c) const { xmlXPathFreeContext(c); }
};
struct XPathObjectFree {
  void operator()(xmlXPathObject* o) const { xmlXPathFreeObject(o); }
};

// The string value of `expr` (an XPath string expression) in `doc`.
std::string Eval(xmlDoc* doc, xmlNode* node, const char* expr) {
  std::unique_ptr<xmlXPathContext, XPathContextFree> ctx(xmlXPathNewContext(doc));
  if (node) ctx->node = node;
  std::unique_ptr<xmlXPathObject, XPathObjectFree> v(
      xmlXPathEvalExpression(reinterpret_cast<const xmlChar*>(expr), ctx.get()));
  if (!v || v->type != XPATH_STRING || !v->stringval) return "";
  return reinterpret_cast<const char*>(v->stringval);
}

}  // namespace

StatusOr<std::vector<DiskSource>> DiskSources(std::string_view domain_xml) {
  XmlDocPtr doc = ParseDomainXml(domain_xml);
  if (!doc) return absl::InvalidArgumentError("domain XML does not parse");
  std::unique_ptr<xmlXPathContext, XPathContextFree> ctx(xmlXPathNewContext(doc.get()));
  std::unique_ptr<xmlXPathObject, XPathObjectFree> found(xmlXPathEvalExpression(
      reinterpret_cast<const xmlChar*>("/domain/devices/disk[@device='disk']"), ctx.get()));
  std::vector<DiskSource> disks;
  if (found && found->nodesetval) {
    for (int i = 0; i < found->nodesetval->nodeNr; ++i) {
      xmlNode* disk = found->nodesetval->nodeTab[i];
      DiskSource d;
      d.target = Eval(doc.get(), disk, "string(target/@dev)");
      if (d.target.empty()) return absl::InvalidArgumentError("a disk of the domain has no target");
      if (Eval(doc.get(), disk, "string(@type)") == "file") {
        d.file = Eval(doc.get(), disk, "string(source/@file)");
      }
      d.format = Eval(doc.get(), disk, "string(driver/@type)");
      disks.push_back(std::move(d));
    }
  }
  return disks;
}

StatusOr<uint64_t> MemoryBytes(std::string_view domain_xml) {
  XmlDocPtr doc = ParseDomainXml(domain_xml);
  if (!doc) return absl::InvalidArgumentError("domain XML does not parse");
  const std::string value = Eval(doc.get(), nullptr, "normalize-space(/domain/memory)");
  std::string unit = Eval(doc.get(), nullptr, "string(/domain/memory/@unit)");
  const std::optional<uint64_t> parsed = ParseInteger<uint64_t>(value);
  if (!parsed) {
    return absl::InvalidArgumentError("domain XML has no valid <memory>: '" + Printable(value) +
                                      "'");
  }
  const uint64_t n = *parsed;
  if (unit.empty()) unit = "KiB";
  static const std::pair<const char*, uint64_t> kUnits[] = {
      {"b", 1},          {"bytes", 1},        {"KB", 1000},       {"k", 1024},
      {"KiB", 1024},     {"MB", 1000000},     {"M", 1 << 20},     {"MiB", 1 << 20},
      {"GB", 1000000000}, {"G", 1ull << 30}, {"GiB", 1ull << 30}, {"TB", 1000000000000ull},
      {"T", 1ull << 40}, {"TiB", 1ull << 40}};
  for (const auto& [name, factor] : kUnits) {
    if (unit != name) continue;
    if (n > std::numeric_limits<uint64_t>::max() / factor) {
      return absl::InvalidArgumentError("domain XML <memory> " + value + " " + unit +
                                        " does not fit 64 bits of bytes");
    }
    return n * factor;
  }
  return absl::InvalidArgumentError("domain XML <memory> has an unknown unit '" + unit + "'");
}

XmlDocPtr ParseDomainXml(std::string_view xml) {
  return XmlDocPtr(xmlReadMemory(xml.data(), static_cast<int>(xml.size()), "domain.xml", nullptr,
                                 XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING));
}

StatusOr<std::vector<std::string>> DiskTargets(std::string_view domain_xml) {
  XmlDocPtr doc = ParseDomainXml(domain_xml);
  if (!doc) return absl::InvalidArgumentError("domain XML does not parse");
  std::unique_ptr<xmlXPathContext, XPathContextFree> ctx(xmlXPathNewContext(doc.get()));
  std::unique_ptr<xmlXPathObject, XPathObjectFree> found(xmlXPathEvalExpression(
      reinterpret_cast<const xmlChar*>("/domain/devices/disk[@device='disk']/target/@dev"),
      ctx.get()));
  std::vector<std::string> targets;
  if (found && found->nodesetval) {
    for (int i = 0; i < found->nodesetval->nodeNr; ++i) {
      xmlChar* v = xmlNodeGetContent(found->nodesetval->nodeTab[i]);
      if (v) targets.emplace_back(reinterpret_cast<char*>(v));
      xmlFree(v);
    }
  }
  return targets;
}

}  // namespace novadt::libvirt
