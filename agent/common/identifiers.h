// Identifiers that arrive from outside the agent (peers, the message bus, the control API, Nova's
// notifications, files) and end up in paths, keys and logs: each is checked here, at the edge,
// before anything is built from it (docs/security.md). Pure functions; thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "agent/common/status.h"

namespace novadt {

// A Nova instance UUID in canonical form: 36 characters, lowercase hexadecimal digits in groups
// of 8-4-4-4-12 separated by '-' (what Nova and libvirt print). Upper case, braces, "urn:uuid:",
// missing dashes and anything longer are refused: one server has exactly one spelling, so a
// spelling can never alias another server's files. InvalidArgument naming the value (quoted
// with Printable()) otherwise.
Status ValidateInstanceUuid(std::string_view uuid);

// A compute host name as Nova knows it ([DEFAULT] host): 1..255 characters of [A-Za-z0-9._-],
// starting with a letter or digit. InvalidArgument otherwise.
Status ValidateHostName(std::string_view host);

// A guest disk name (libvirt target dev, e.g. "vda"): 1..64 characters of [A-Za-z0-9._-], not
// starting with '.'. InvalidArgument otherwise.
Status ValidateDiskName(std::string_view disk);

// `text` for a log line or an error message: at most `max` bytes, every byte outside printable
// ASCII shown as \xHH, cut values end in "...". Outside strings never reach a log raw.
std::string Printable(std::string_view text, size_t max = 64);

}  // namespace novadt
