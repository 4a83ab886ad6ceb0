// Test certificates made with the openssl CLI: a CA ("ca"), an unrelated CA ("other-ca"), and per
// host a certificate (CN and DNS subjectAltName = the host, serverAuth + clientAuth) signed by
// "ca"; plus "rogue-<first host>" for the first host signed by "other-ca". Files live in a scratch
// directory removed with the object. Construction takes a few hundred milliseconds.
#pragma once

#include <string>
#include <vector>

#include "agent/config/config.h"
#include "tests/support/test_util.h"

namespace novadt::testing {

class TestPki {
 public:
  // Fails the current test (gtest ADD_FAILURE) when openssl fails.
  explicit TestPki(const std::vector<std::string>& hosts);
  // Certificate `name` for `host`, signed by CA `ca` ("ca" or "other-ca").
  void Issue(const std::string& host, const std::string& ca, std::string name = "");
  // [peer] TLS options for certificate `name` trusting CA `ca`.
  config::PeerSection Peer(const std::string& name, const std::string& ca = "ca") const;
  std::string Path(const std::string& file) const { return dir_.path() + "/" + file; }

 private:
  void Run(const std::vector<std::string>& argv);
  ScratchDir dir_;
};

}  // namespace novadt::testing
