#include "agent/libvirt/domain_xml.h"

#include <memory>

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

}  // namespace

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
