// oslo.messaging transport URLs ("rabbit://user:pass@host1:5672,user:pass@host2/vhost"),
// parsed exactly as oslo_messaging.transport.TransportURL.parse() and the rabbit driver do.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "agent/common/status.h"

namespace novadt::config {

struct TransportHost {
  std::string hostname;  // IPv6 literals without brackets
  uint16_t port = 0;     // 0: not given (the rabbit driver then uses 5672)
  std::string username;  // percent-decoded; empty: not given
  std::string password;  // percent-decoded; empty: not given
  bool operator==(const TransportHost&) const = default;
};

struct TransportUrl {
  std::string scheme;  // "rabbit" or "kombu" ("kombu" is an alias oslo accepts)
  std::vector<TransportHost> hosts;
  // Percent-decoded path after the first "/". Empty and not `has_virtual_host`: broker default.
  // Empty with `has_virtual_host` (".../") is the broker default too for the rabbit driver;
  // "...//" or ".../%2F" give "/".
  std::string virtual_host;
  bool has_virtual_host = false;
  std::map<std::string, std::string> query;  // parsed, unused by the rabbit driver
  bool operator==(const TransportUrl&) const = default;
};

// Parses `url`. Fails with InvalidArgument and a one-line reason for anything oslo would
// reject (no scheme, bad port, unbalanced IPv6 brackets...).
//
// Like oslo, any scheme is accepted here (LoadAgentConfig() then requires rabbit or kombu), a
// host keeps only its own credentials, and with brackets in the netloc the host after the last
// '@' must be an IP address (Python's urlsplit check, e.g. "rabbit://h1,[::1]/" is refused).
// Deviations: an empty `url` fails (oslo would parse its default "rabbit://"), and a port
// outside 0..65535 fails (oslo keeps e.g. -1 and fails only when dialing). Reasons never quote
// parts of the URL, so they cannot leak a password.
StatusOr<TransportUrl> ParseTransportUrl(std::string_view url);

// The effective AMQP host list as the rabbit driver would dial it: port 5672 filled in, and
// guest:guest@localhost when the URL names no host.
std::vector<TransportHost> EffectiveRabbitHosts(const TransportUrl& url);

// The URL with passwords replaced by "***", for logs and status. For a URL oslo cannot parse,
// or one with an '@' after its netloc (an unencoded '/', '?' or '#' in a password), everything
// between "scheme://" and the last '@' is hidden instead.
std::string RedactedTransportUrl(std::string_view url);

}  // namespace novadt::config
