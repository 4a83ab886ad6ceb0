// Tests of ParseTransportUrl / EffectiveRabbitHosts / RedactedTransportUrl.
//
// The expectations in kCases were checked against oslo.messaging 14.0.3's TransportURL.parse
// (Debian bookworm's python3-oslo.messaging on its python3.11 3.11.2-6+deb12u6), by a script
// that runs the real library on the same table. Cases marked "deviation" are ones oslo accepts
// and nova-dt rejects on purpose (see transport_url.h).
#include "agent/config/transport_url.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace novadt::config {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct Case {
  std::string url;
  bool ok;
  std::string scheme;
  bool has_virtual_host;
  std::string virtual_host;
  std::vector<TransportHost> hosts;
  std::map<std::string, std::string> query;
};

TransportHost H(std::string hostname, uint16_t port, std::string user = "",
                std::string password = "") {
  return TransportHost{std::move(hostname), port, std::move(user), std::move(password)};
}

Case Ok(std::string url, std::string scheme, std::optional<std::string> vhost,
        std::vector<TransportHost> hosts, std::map<std::string, std::string> query = {}) {
  return Case{std::move(url),     true,
              std::move(scheme),  vhost.has_value(),
              vhost.value_or(""), std::move(hosts),
              std::move(query)};
}

Case Err(std::string url) { return Case{std::move(url), false, "", false, "", {}, {}}; }

const std::vector<Case>& Cases() {
  static const auto* cases = new std::vector<Case>{
      // Single host, several hosts, no user, user only.
      Ok("rabbit://dt:secret@ctl1:5672/", "rabbit", "", {H("ctl1", 5672, "dt", "secret")}),
      Ok("rabbit://dt:s1@ctl1:5672,dt:s2@ctl2:5673/nova", "rabbit", "nova",
         {H("ctl1", 5672, "dt", "s1"), H("ctl2", 5673, "dt", "s2")}),
      Ok("rabbit://ctl1:5672/", "rabbit", "", {H("ctl1", 5672)}),
      Ok("rabbit://dt@ctl1/", "rabbit", "", {H("ctl1", 0, "dt")}),
      // Credentials belong to their host only; oslo never copies them to the next one.
      Ok("rabbit://dt:secret@ctl1,ctl2:5673/", "rabbit", "",
         {H("ctl1", 0, "dt", "secret"), H("ctl2", 5673)}),
      // Percent-decoding of user and password; raw '@' in the user, raw ':' in the password.
      Ok("rabbit://us%40er:p%40ss%3Aw%2Ford@ctl1:5672/", "rabbit", "",
         {H("ctl1", 5672, "us@er", "p@ss:w/ord")}),
      Ok("rabbit://a@b:pw@ctl1/", "rabbit", "", {H("ctl1", 0, "a@b", "pw")}),
      Ok("rabbit://u:pa:ss@ctl1/", "rabbit", "", {H("ctl1", 0, "u", "pa:ss")}),
      // Invalid UTF-8 after decoding becomes U+FFFD, as Python's unquote() does.
      Ok("rabbit://u:%E2%82%AC%FF@ctl1/", "rabbit", "", {H("ctl1", 0, "u", "\u20ac\ufffd")}),
      // IPv6 with and without port; the hostname is not percent-decoded.
      Ok("rabbit://[::1]:5672/", "rabbit", "", {H("::1", 5672)}),
      Ok("rabbit://[fe80::1%25eth0]/", "rabbit", "", {H("fe80::1%25eth0", 0)}),
      Ok("rabbit://u:p@[::1]:5673,u:p@[::2]:5674/", "rabbit", "",
         {H("::1", 5673, "u", "p"), H("::2", 5674, "u", "p")}),
      Ok("rabbit://[::1]:5672,ctl2:5672/", "rabbit", "", {H("::1", 5672), H("ctl2", 5672)}),
      Ok("rabbit://dt:pw@[::1]:5673,ctl1/", "rabbit", "",
         {H("::1", 5673, "dt", "pw"), H("ctl1", 0)}),
      // Python's urlsplit (Debian's CVE-2024-11168 fix) checks the host after the last '@'
      // of the whole netloc when it holds brackets: these fail in oslo too.
      Err("rabbit://ctl1:5672,[::1]:5672/"), Err("rabbit://dt:pw@ctl1,[::1]:5673/"),
      Err("rabbit://u:p@[::1]:5672,u:p@ctl2:5672/"), Err("rabbit://[::1/"), Err("rabbit://[::1]x/"),
      Err("rabbit://[1.2.3.4]:5672/"),
      // Ports: none, empty, Python int() syntax, not an integer, and the deviations.
      Ok("rabbit://ctl1/", "rabbit", "", {H("ctl1", 0)}),
      Ok("rabbit://ctl1:/", "rabbit", "", {H("ctl1", 0)}),
      Ok("rabbit://ctl1: 5_672/", "rabbit", "", {H("ctl1", 5672)}), Err("rabbit://ctl1:abc/"),
      Err("rabbit://ctl1:5672:1/"),
      Err("rabbit://ctl1:99999/"),  // deviation: oslo keeps 99999
      Err("rabbit://ctl1:-1/"),     // deviation: oslo keeps -1
      // Virtual host: no path, empty path, '//', '/%2F', a name, a nested path.
      Ok("rabbit://ctl1", "rabbit", std::nullopt, {H("ctl1", 0)}),
      Ok("rabbit://ctl1//", "rabbit", "/", {H("ctl1", 0)}),
      Ok("rabbit://ctl1/%2F", "rabbit", "/", {H("ctl1", 0)}),
      Ok("rabbit://ctl1/vhost", "rabbit", "vhost", {H("ctl1", 0)}),
      Ok("rabbit://ctl1/a/b%20c", "rabbit", "a/b c", {H("ctl1", 0)}),
      // Query: parse_qs() drops blank values, joins repeated keys with ','; fragment dropped.
      Ok("rabbit://ctl1/v?ssl=1&a=x&a=y&b=&c&d=%2F+e#frag", "rabbit", "v", {H("ctl1", 0)},
         {{"ssl", "1"}, {"a", "x,y"}, {"d", "/ e"}}),
      // No host at all.
      Ok("rabbit://", "rabbit", std::nullopt, {}), Ok("rabbit:///", "rabbit", "", {}),
      Ok("rabbit://,/", "rabbit", "", {}),
      // Scheme: kombu alias, case folded, missing. "ctl1:5672" has scheme "ctl1" for urlsplit.
      Ok("kombu://ctl1/", "kombu", "", {H("ctl1", 0)}),
      Ok("RABBIT://ctl1/", "rabbit", "", {H("ctl1", 0)}), Err("//ctl1:5672/"),
      Ok("ctl1:5672", "ctl1", std::nullopt, {}), Err("5672://ctl1/"),
      Err(""),  // deviation: oslo would parse its default "rabbit://" instead
  };
  return *cases;
}

TEST(TransportUrlTest, MatchesOsloMessaging) {
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.url);
    const StatusOr<TransportUrl> got = ParseTransportUrl(c.url);
    if (!c.ok) {
      ASSERT_FALSE(got.ok());
      EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(std::string(got.status().message()), Not(HasSubstr("\n")));
      continue;
    }
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->scheme, c.scheme);
    EXPECT_EQ(got->has_virtual_host, c.has_virtual_host);
    EXPECT_EQ(got->virtual_host, c.virtual_host);
    EXPECT_EQ(got->hosts, c.hosts);
    EXPECT_EQ(got->query, c.query);
  }
}

TEST(TransportUrlTest, ErrorsDoNotEchoThePassword) {
  for (const std::string url :
       {"rabbit://dt:s3cr3t,x@ctl1/", "rabbit://dt:s3cr3t@[::1/", "rabbit://dt:s3cr3t@ctl1:x/"}) {
    const StatusOr<TransportUrl> got = ParseTransportUrl(url);
    ASSERT_FALSE(got.ok()) << url;
    EXPECT_THAT(std::string(got.status().message()), Not(HasSubstr("s3cr3t")));
  }
}

TEST(TransportUrlTest, EffectiveRabbitHostsFillsDriverDefaults) {
  StatusOr<TransportUrl> url = ParseTransportUrl("rabbit://dt:pw@[::1]:5673,ctl1/");
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ(EffectiveRabbitHosts(*url),
            (std::vector<TransportHost>{H("::1", 5673, "dt", "pw"), H("ctl1", 5672)}));

  url = ParseTransportUrl("rabbit:///");
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ(EffectiveRabbitHosts(*url),
            (std::vector<TransportHost>{H("localhost", 5672, "guest", "guest")}));
}

TEST(TransportUrlTest, RedactsPasswords) {
  EXPECT_EQ(RedactedTransportUrl("rabbit://dt:secret@ctl1:5672,dt:other@ctl2/nova?a=1"),
            "rabbit://dt:***@ctl1:5672,dt:***@ctl2/nova?a=1");
  EXPECT_EQ(RedactedTransportUrl("rabbit://dt@ctl1,ctl2:5672/"), "rabbit://dt@ctl1,ctl2:5672/");
  EXPECT_EQ(RedactedTransportUrl("rabbit://a@b:p%40w@[::1]:5672/"), "rabbit://a@b:***@[::1]:5672/");
  EXPECT_EQ(RedactedTransportUrl("rabbit://u:p@ss@ctl1/"), "rabbit://u:***@ctl1/");
  // A password with an unencoded '/' or a URL oslo rejects: everything before the last '@'.
  EXPECT_EQ(RedactedTransportUrl("rabbit://dt:se/cret@ctl1/"), "rabbit://***@ctl1/");
  EXPECT_EQ(RedactedTransportUrl("rabbit://dt:secret@ctl1:x/"), "rabbit://***@ctl1:x/");
  EXPECT_EQ(RedactedTransportUrl("dt:secret@ctl1"), "***@ctl1");
  EXPECT_EQ(RedactedTransportUrl("rabbit://ctl1/"), "rabbit://ctl1/");
}

}  // namespace
}  // namespace novadt::config
