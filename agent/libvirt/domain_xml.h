// Reading libvirt domain XML (libxml2), for the adapters of this folder.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <libxml/tree.h>

#include "agent/common/status.h"

namespace novadt::libvirt {

struct XmlDocFree {
  void operator()(xmlDoc* d) const { xmlFreeDoc(d); }
};
using XmlDocPtr = std::unique_ptr<xmlDoc, XmlDocFree>;

// Parses a domain definition without network access or libxml2's own error printing; null
// when it does not parse.
XmlDocPtr ParseDomainXml(std::string_view xml);

// A <disk device='disk'> of the domain: target dev, source file ("" when the disk is not a
// file), driver format ("raw", "qcow2", ...; "" when not given).
struct DiskSource {
  std::string target;
  std::string file;
  std::string format;
};
// The domain's <disk device='disk'> elements, in document order. InvalidArgument when the XML
// does not parse or a disk has no target.
StatusOr<std::vector<DiskSource>> DiskSources(std::string_view domain_xml);

// The guest memory size (<memory unit=...>, KiB by default) in bytes. InvalidArgument when it is
// missing or malformed.
StatusOr<uint64_t> MemoryBytes(std::string_view domain_xml);

// Target devs ("vda", ...) of the domain's <disk device='disk'> elements, in document order.
// InvalidArgument when the XML does not parse.
StatusOr<std::vector<std::string>> DiskTargets(std::string_view domain_xml);

}  // namespace novadt::libvirt
