// The backup cannot take the replica (issue 6's fault table, the rows that were unit-tested only):
// on the rig, with the witness as in production. Each case prints a "fault-row:" line.
//
//   - backup disk full: b's replica file system fills up while protected; a degrades with a
//     reason naming it, keeps serving (values consecutive, output released after the witness
//     advanced the generation), and is protected again once b has room.
//   - peer with a bad certificate: b presents a certificate for another host name, then one
//     from another CA; a refuses to replicate to it (never protected, no replica on b), says why,
//     and keeps serving; with b's right certificate the pair is protected.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <thread>

#include "nova_dt/v1/control.grpc.pb.h"
#include "tests/support/fault_report.h"
#include "tests/support/pair_rig_test.h"
#include "tests/support/test_pki.h"

namespace novadt {
namespace {

using novadt::testing::FaultRow;
using novadt::testing::Ms;
using novadt::testing::MsSince;
using novadt::testing::PairRigOptions;
using novadt::testing::TestPki;
using novadt::testing::WaitFor;
using std::chrono::milliseconds;
using std::chrono::seconds;
using SteadyClock = std::chrono::steady_clock;

constexpr char kGuestUuid[] = "9e4b1c27-5a3d-4f86-b0c9-d1e2f3a4b5c6";
constexpr char kRamDir[] = "/var/lib/libvirt/qemu/ram";  // b's replica file system (tmpfs)

class BackupFaultTest : public novadt::testing::PairRigTest {
 protected:
  BackupFaultTest() : PairRigTest(kGuestUuid) {}

  // Runs a shell command in `host`; its output on failure.
  void Sh(const std::string& host, const std::string& script) {
    std::string out;
    ASSERT_EQ(rig_->Exec(host, {"sh", "-c", script}, &out), 0) << script << ": " << out;
  }
  bool Counting(std::chrono::milliseconds for_how_long) const {
    const int64_t before = rig_->ObserverValues().back();
    std::this_thread::sleep_for(for_how_long);
    return rig_->ObserverValues().back() >= before + for_how_long.count() / 20 / 2;
  }
  // Waits until `host`'s agent reports the pair degraded; returns the reason ("" on timeout).
  std::string WaitForDegraded(const std::string& host) const {
    std::string reason;
    WaitFor(
        [&] {
          auto s = Server(host);
          if (!s || s->state() != "degraded") return false;
          reason = s->reason();
          return true;
        },
        seconds(20));
    return reason;
  }
  std::vector<std::string> Tls(const TestPki& pki, const std::string& cert) const {
    const config::PeerSection tls = pki.Peer(cert);
    return {"peer.tls_cert_file=" + tls.tls_cert_file, "peer.tls_key_file=" + tls.tls_key_file,
            "peer.tls_ca_file=" + tls.tls_ca_file};
  }
};

TEST_F(BackupFaultTest, BackupDiskFullDegradesWithAClearReasonAndThePrimaryKeepsServing) {
  ASSERT_NO_FATAL_FAILURE(BringUp([] {
    PairRigOptions o;
    o.rig_name = "bf1";
    return o;
  }()));
  const size_t seen = rig_->ObserverValues().size();
  // Shrink b's tmpfs to what it holds and fill the rest: the next epoch cannot be stored.
  const auto filled = SteadyClock::now();
  ASSERT_NO_FATAL_FAILURE(Sh(
      "b", std::string("used=$(df -k --output=used ") + kRamDir + " | tail -1); " +
               "mount -o remount,size=$((used + 256))k " + kRamDir + " && " +
               "(dd if=/dev/zero of=" + kRamDir + "/fill bs=4k 2>/dev/null; true) && " +
               "df -k " + kRamDir));
  const std::string reason = WaitForDegraded("a");
  ASSERT_FALSE(reason.empty()) << Log("a") << "\n" << Log("b");
  const double degraded_ms = MsSince(filled);
  std::printf("backup disk full: a degraded %.0f ms after the fill: %s\n", degraded_ms,
              reason.c_str());
  EXPECT_NE(reason.find("No space left"), std::string::npos) << reason;
  EXPECT_TRUE(Counting(seconds(3))) << "the primary must keep serving";
  // The re-seed replaces the replica (the old one's space is freed first), so the pair comes
  // back by itself when a whole replica fits again — here it does, the fill took only the rest.
  ASSERT_TRUE(WaitForProtected("a", "b", 1, seconds(120))) << Log("a") << "\n" << Log("b");
  const double protected_ms = MsSince(filled);
  ExpectOneCountingGuest("disk full", seen > 0 ? seen - 1 : 0);
  ASSERT_NO_FATAL_FAILURE(
      Sh("b", std::string("rm -f ") + kRamDir + "/fill && mount -o remount,size=2g " + kRamDir));
  FaultRow("backup disk full", "degraded with a clear reason; primary keeps serving",
           "a degraded " + Ms(degraded_ms) + " after b's replica file system filled (\"" +
               reason.substr(0, reason.find("; output")) +
               "\"), kept serving, values consecutive; the re-seed (which replaces the replica) "
               "protected the pair again " + Ms(protected_ms) + " after the fill");
}

TEST_F(BackupFaultTest, BackupWithABadCertificateIsRefused) {
  TestPki pki({"rig-a", "rig-b"});
  pki.Issue("rig-x", "ca");                   // right CA, another host's name
  pki.Issue("rig-b", "other-ca", "rogue-b");  // b's name, unrelated CA
  PairRigOptions o;
  o.rig_name = "bf2";
  o.protect = false;
  o.host_settings["a"] = Tls(pki, "rig-a");
  o.host_settings["b"] = Tls(pki, "rig-x");
  ASSERT_NO_FATAL_FAILURE(BringUp(o));

  auto protect = [&] {
    grpc::ClientContext ctx;
    nova_dt::v1::ProtectRequest req;
    req.set_instance_uuid(kGuestUuid);
    req.set_backup_host("rig-b");
    nova_dt::v1::ProtectReply reply;
    return Control("a")->Protect(&ctx, req, &reply);
  };
  const size_t seen = rig_->ObserverValues().size();
  std::string measured;
  for (const char* cert : {"rig-x", "rogue-b"}) {
    SCOPED_TRACE(std::string("b presents ") + cert);
    if (std::string(cert) != "rig-x") {
      // b with the next certificate; a restarted too, so that its channel to b starts afresh
      // (gRPC reports a channel's last connection error).
      grpc::ClientContext ctx;
      nova_dt::v1::UnprotectRequest req;
      req.set_instance_uuid(kGuestUuid);
      nova_dt::v1::UnprotectReply reply;
      (void)Control("a")->Unprotect(&ctx, req, &reply);
      for (const char* host : {"a", "b"}) ASSERT_TRUE(rig_->StopAgent(host).ok());
      std::vector<std::string> b_settings = settings_;
      for (const auto& s : Tls(pki, cert)) b_settings.push_back(s);
      for (const char* host : {"a", "b"}) {
        Status started = rig_->StartAgent(host, *host == 'a' ? AgentSettings("a") : b_settings);
        ASSERT_TRUE(started.ok()) << started << "\n" << Log(host);
      }
    }
    grpc::Status st = protect();
    ASSERT_TRUE(st.ok()) << st.error_message();  // protection starts; the stream is refused
    const std::string reason = WaitForDegraded("a");
    ASSERT_FALSE(reason.empty()) << Log("a");
    EXPECT_TRUE(Counting(seconds(4))) << "the primary must keep serving";
    auto a = Server("a");
    ASSERT_TRUE(a);
    EXPECT_NE(a->state(), "protected") << a->reason();
    EXPECT_FALSE(Server("b")) << "b must hold no replica";
    std::printf("b with certificate %s: a %s: %s\n", cert, a->state().c_str(), reason.c_str());
    measured += std::string(measured.empty() ? "" : "; ") + "b with " +
                (std::string(cert) == "rig-x" ? "a certificate for rig-x" : "one from another CA") +
                ": refused (\"…" + reason.substr(reason.size() > 80 ? reason.size() - 80 : 0) +
                "\")";
  }
  // The right certificate: protected.
  ASSERT_TRUE(rig_->StopAgent("b").ok());
  std::vector<std::string> b_settings = settings_;
  for (const auto& s : Tls(pki, "rig-b")) b_settings.push_back(s);
  Status started = rig_->StartAgent("b", b_settings);
  ASSERT_TRUE(started.ok()) << started << "\n" << Log("b");
  ASSERT_TRUE(WaitForProtected("a", "b", 1, seconds(120))) << Log("a") << "\n" << Log("b");
  ExpectOneCountingGuest("bad certificate", seen > 0 ? seen - 1 : 0);
  FaultRow("peer with a bad certificate", "refused",
           measured + "; never protected meanwhile, primary kept serving; protected once b had "
                      "its own certificate");
}

}  // namespace
}  // namespace novadt
