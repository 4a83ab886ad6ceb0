#include "tests/support/test_pki.h"

#include <gtest/gtest.h>

namespace novadt::testing {
namespace {

const std::vector<std::string> kEcKey = {"-newkey", "ec", "-pkeyopt",
                                         "ec_paramgen_curve:prime256v1", "-nodes"};

}  // namespace

TestPki::TestPki(const std::vector<std::string>& hosts) : dir_("nova-dt-pki") {
  for (const char* ca : {"ca", "other-ca"}) {
    std::vector<std::string> argv = {"openssl", "req", "-x509"};
    argv.insert(argv.end(), kEcKey.begin(), kEcKey.end());
    argv.insert(argv.end(), {"-days", "2", "-subj", std::string("/CN=nova-dt test ") + ca,
                             "-keyout", Path(std::string(ca) + ".key"), "-out",
                             Path(std::string(ca) + ".pem")});
    Run(argv);
  }
  for (const auto& host : hosts) Issue(host, "ca");
  if (!hosts.empty()) Issue(hosts[0], "other-ca", "rogue-" + hosts[0]);
}

void TestPki::Issue(const std::string& host, const std::string& ca, std::string name) {
  if (name.empty()) name = host;
  dir_.Write(name + ".ext",
             "basicConstraints = CA:FALSE\nkeyUsage = digitalSignature, keyEncipherment\n"
             "extendedKeyUsage = serverAuth, clientAuth\nsubjectAltName = DNS:" +
                 host + "\n");
  std::vector<std::string> argv = {"openssl", "req"};
  argv.insert(argv.end(), kEcKey.begin(), kEcKey.end());
  argv.insert(argv.end(), {"-subj", "/CN=" + host, "-keyout", Path(name + ".key"), "-out",
                           Path(name + ".csr")});
  Run(argv);
  Run({"openssl", "x509", "-req", "-in", Path(name + ".csr"), "-CA", Path(ca + ".pem"), "-CAkey",
       Path(ca + ".key"), "-CAcreateserial", "-days", "2", "-out", Path(name + ".pem"),
       "-extfile", Path(name + ".ext")});
}

config::PeerSection TestPki::Peer(const std::string& name, const std::string& ca) const {
  config::PeerSection p;
  p.tls_cert_file = Path(name + ".pem");
  p.tls_key_file = Path(name + ".key");
  p.tls_ca_file = Path(ca + ".pem");
  return p;
}

void TestPki::Run(const std::vector<std::string>& argv) {
  std::string out;
  if (RunCommand(argv, &out) != 0) ADD_FAILURE() << argv[0] << " " << argv[1] << ": " << out;
}

}  // namespace novadt::testing
