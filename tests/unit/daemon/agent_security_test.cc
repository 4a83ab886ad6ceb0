// The agent's peer API as an attacker on the same network meets it (security issue #11): the real
// nova-dt-agent binary as a backup ("rig-b", libvirt's in-process test driver) with mutual TLS
// from a test CA, and callers made with the project's own gRPC links — its owner "rig-a", another
// configured peer "rig-c" with a valid certificate, and callers without one. Every case checks
// what was refused AND that nothing was made, changed or lost.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <sys/stat.h>

#include <filesystem>
#include <future>
#include <mutex>

#include "agent/rpc/grpc_peer_link.h"
#include "agent/rpc/grpc_replication.h"
#include "nova_dt/v1/peer.grpc.pb.h"
#include "tests/support/agent_control.h"
#include "tests/support/fake_replica_sink.h"
#include "tests/support/test_pki.h"
#include "tests/support/test_util.h"
#include "tests/unit/libvirt/domain_fixtures.h"

namespace novadt {
namespace {

using novadt::testing::ReadFile;
using novadt::testing::RunCommand;
using novadt::testing::ScratchDir;
using novadt::testing::Subprocess;
using novadt::testing::TestPki;
using novadt::testing::WaitFor;
using std::chrono::milliseconds;
using std::chrono::seconds;

const std::string kAgent = std::string(NOVA_DT_BINARY_DIR) + "/agent/daemon/nova-dt-agent";
const std::string kUuid = libvirt::fixtures::kNovaUuid;

// What rig-a streams: the Nova fixture server, its epochs from the fake sink's SmallEpoch().
core::StreamOpen NovaOpen(const std::string& primary = "rig-a") {
  core::StreamOpen o = novadt::testing::TestOpen();
  o.instance_uuid = kUuid;
  o.primary_host = primary;
  o.domain_xml = libvirt::fixtures::kNovaGeneratedXml;
  return o;
}

// One stream's outcome as the primary sees it.
struct Stream {
  std::mutex mu;
  std::vector<uint64_t> acked;
  std::promise<Status> done;
  std::shared_future<Status> ended = done.get_future().share();
  std::unique_ptr<core::EpochStream> stream;
  core::EpochStreamCallbacks Callbacks() {
    return {[this](const core::StreamAck& a) {
              std::lock_guard<std::mutex> lock(mu);
              if (a.kind == core::StreamAck::Kind::kCommitted) acked.push_back(a.epoch);
            },
            [this](const Status& st) { done.set_value(st); }};
  }
  size_t Acked() {
    std::lock_guard<std::mutex> lock(mu);
    return acked.size();
  }
  // The backup's refusal (or OK), once the stream ended.
  Status Refusal() {
    return ended.wait_for(seconds(10)) == std::future_status::ready
               ? ended.get()
               : absl::DeadlineExceededError("the stream did not end");
  }
};

class AgentSecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { pki_ = new TestPki({"rig-a", "rig-b", "rig-c"}); }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }

  // The backup rig-b, its peers rig-a and rig-c (nothing listens at their addresses).
  void StartB(const std::string& extra = "", bool tls = true) {
    port_ = novadt::testing::FreeTcpPort();
    const config::PeerSection cert = pki_->Peer("rig-b");
    std::string conf =
        "[DEFAULT]\nhost = rig-b\nstate_path = " + dir_.path() + "/b\ncontrol_address = unix:" +
        dir_.path() + "/b.sock\n[libvirt]\nconnection_uri = test:///default\n"
        "[replication]\nreplica_path = " + replicas_ + "\n" + extra +
        "\n[peer]\nlisten_address = 127.0.0.1:" + std::to_string(port_) +
        "\npeers = rig-a=127.0.0.1:1, rig-c=127.0.0.1:2\nhello_interval_ms = 100\n";
    if (tls) {
      conf += "tls_cert_file = " + cert.tls_cert_file + "\ntls_key_file = " + cert.tls_key_file +
              "\ntls_ca_file = " + cert.tls_ca_file + "\n";
    } else {
      conf += "allow_insecure = true\n";
    }
    b_ = std::make_unique<Subprocess>(
        std::vector<std::string>{kAgent, "--config-file", dir_.Write("b.conf", conf)},
        dir_.path() + "/b.log");
    ASSERT_TRUE(WaitFor([&] { return BackupStatus().has_value(); }, seconds(15))) << Log();
  }
  std::string Sock() const { return dir_.path() + "/b.sock"; }
  // rig-b's status; nullopt while it does not answer.
  std::optional<nova_dt::v1::AgentStatus> BackupStatus() const {
    return novadt::testing::AgentStatusAt("unix:" + Sock());
  }
  std::string Address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string Log() const { return ReadFile(dir_.path() + "/b.log"); }

  // Credentials of certificate `cert` (a name of the test PKI).
  static std::shared_ptr<const rpc::PeerCredentials> Cert(const std::string& cert) {
    config::PeerSection p = pki_->Peer(cert);
    auto c = rpc::PeerCredentials::Load(p);
    EXPECT_TRUE(c.ok()) << c.status();
    return *c;
  }
  std::unique_ptr<core::ReplicationLink> LinkAs(const std::string& cert) {
    return rpc::MakeGrpcReplicationLink(Cert(cert), {{Address(), "rig-b"}});
  }
  // Opens `open` as certificate `cert`; the stream (possibly already refused) in *s.
  void Open(Stream& s, const std::string& cert, const core::StreamOpen& open) {
    links_.push_back(LinkAs(cert));
    auto opened = links_.back()->Open(Address(), open, s.Callbacks());
    if (opened.ok()) s.stream = *std::move(opened);
  }
  // rig-a streams epochs 1..n of the Nova server and waits for their acks.
  void OwnerStreams(Stream& s, uint64_t n) {
    Open(s, "rig-a", NovaOpen());
    ASSERT_TRUE(s.stream) << s.Refusal();
    for (uint64_t e = 1; e <= n; ++e) {
      for (const auto& item : novadt::testing::SmallEpoch(e)) ASSERT_TRUE(s.stream->Send(item).ok());
    }
    ASSERT_TRUE(WaitFor([&] { return s.Acked() == n; }, seconds(10))) << Log();
  }
  std::string ReplicaRam() { return ReadFile(replicas_ + "/" + kUuid + "/ram.img").substr(0, 4096); }
  // Entries of the replica root.
  std::vector<std::string> ReplicaRoot() {
    std::vector<std::string> names;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(replicas_, ec)) {
      names.push_back(e.path().filename());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  static TestPki* pki_;
  ScratchDir dir_;
  const std::string replicas_ = dir_.path() + "/b/replicas";
  int port_ = 0;
  std::unique_ptr<Subprocess> b_;
  std::vector<std::unique_ptr<core::ReplicationLink>> links_;
};
TestPki* AgentSecurityTest::pki_ = nullptr;

TEST_F(AgentSecurityTest, WithoutCertificatesTheAgentStartsOnlyWhenAllowedInsecureAndSaysSo) {
  const std::string conf = dir_.Write(
      "plain.conf", "[DEFAULT]\nhost = rig-b\nstate_path = " + dir_.path() +
                        "/p\ncontrol_address = unix:" + dir_.path() +
                        "/p.sock\n[libvirt]\nconnection_uri = test:///default\n[peer]\n"
                        "listen_address = 127.0.0.1:0\n");
  std::string out;
  EXPECT_EQ(RunCommand({kAgent, "--config-file", conf}, &out), 2);
  EXPECT_NE(out.find("[peer] has no TLS certificates"), std::string::npos) << out;
  EXPECT_NE(out.find("allow_insecure"), std::string::npos) << out;

  StartB("", /*tls=*/false);
  auto s = BackupStatus();
  ASSERT_TRUE(s);
  ASSERT_GE(s->security_warnings_size(), 1);
  EXPECT_NE(s->security_warnings(0).find("allow_insecure"), std::string::npos);
  EXPECT_NE(Log().find("INSECURE SETTING"), std::string::npos);
}

// rig-c is a configured peer with a valid certificate, but the replica is rig-a's: it can neither
// replace it (a later failover would restore what it sent), nor end rig-a's stream with a Basis
// call and read hashes of guest RAM, nor make rig-b run the server with a TakeOver.
TEST_F(AgentSecurityTest, APeerThatIsNotTheOwnerCannotOpenReplaceDescribeOrTakeOverAReplica) {
  StartB();
  Stream owner;
  ASSERT_NO_FATAL_FAILURE(OwnerStreams(owner, 2));
  const std::string ram = ReplicaRam();

  Stream replace;
  Open(replace, "rig-c", NovaOpen("rig-c"));
  EXPECT_TRUE(absl::IsPermissionDenied(replace.Refusal())) << replace.Refusal();
  EXPECT_NE(std::string(replace.Refusal().message()).find("belongs to primary rig-a"),
            std::string::npos);

  auto basis = LinkAs("rig-c")->Basis(Address(), NovaOpen("rig-c"), seconds(5));
  EXPECT_TRUE(absl::IsPermissionDenied(basis.status())) << basis.status();

  auto peer = rpc::MakeGrpcPeerLink({"rig-c", "1", ""}, Cert("rig-c"), {{Address(), "rig-b"}});
  auto taken = peer->TakeOver(Address(), kUuid, 2, seconds(5));
  // (The link reports every "did not start" refusal as FailedPrecondition: the caller's cue.)
  EXPECT_TRUE(absl::IsFailedPrecondition(taken.status())) << taken.status();
  EXPECT_NE(std::string(taken.status().message()).find("belongs to primary rig-a"),
            std::string::npos)
      << taken.status();

  // rig-c's certificate claiming to be rig-a: refused by the certificate check.
  Stream forged;
  Open(forged, "rig-c", NovaOpen("rig-a"));
  EXPECT_TRUE(absl::IsPermissionDenied(forged.Refusal())) << forged.Refusal();

  // Nothing of it reached the replica, and rig-a's stream goes on.
  EXPECT_EQ(ReplicaRam(), ram);
  for (const auto& item : novadt::testing::SmallEpoch(3)) ASSERT_TRUE(owner.stream->Send(item).ok());
  EXPECT_TRUE(WaitFor([&] { return owner.Acked() == 3; }, seconds(10))) << Log();
  auto s = BackupStatus();
  ASSERT_TRUE(s);
  ASSERT_EQ(s->protected_servers_size(), 1);
  EXPECT_EQ(s->protected_servers(0).state(), "protected");
  EXPECT_EQ(s->protected_servers(0).peer_host(), "rig-a");
}

TEST_F(AgentSecurityTest, ADomainThatIsNotRestorableAsNovaMadeItIsRefusedAndNothingIsMade) {
  StartB();
  const std::string nova = libvirt::fixtures::kNovaGeneratedXml;
  const std::string devices = "<devices>";
  ASSERT_NE(nova.find(devices), std::string::npos);
  std::vector<std::pair<std::string, std::string>> evil;
  {
    std::string x = nova;
    x.replace(0, std::string("<domain type=\"kvm\">").size(),
              "<domain type=\"kvm\" xmlns:qemu=\"http://libvirt.org/schemas/domain/qemu/1.0\">");
    x.insert(x.rfind("</domain>"),
             "<qemu:commandline><qemu:arg value=\"-run-with\"/><qemu:arg value=\"/bin/sh\"/>"
             "</qemu:commandline>");
    evil.emplace_back("qemu:commandline", x);
  }
  {
    std::string x = nova;
    x.insert(x.find(devices) + devices.size(),
             "<hostdev mode=\"subsystem\" type=\"pci\"><source><address domain=\"0x0000\" "
             "bus=\"0x00\" slot=\"0x1f\" function=\"0x2\"/></source></hostdev>");
    evil.emplace_back("hostdev", x);
  }
  {
    std::string x = nova;
    x.insert(x.rfind("</domain>"),
             "<seclabel type=\"static\" model=\"dac\" relabel=\"no\"><label>+0:+0</label>"
             "</seclabel>");
    evil.emplace_back("seclabel", x);
  }
  for (const auto& [what, xml] : evil) {
    SCOPED_TRACE(what);
    core::StreamOpen open = NovaOpen();
    open.domain_xml = xml;
    Stream s;
    Open(s, "rig-a", open);
    EXPECT_TRUE(absl::IsInvalidArgument(s.Refusal())) << s.Refusal();
    EXPECT_NE(std::string(s.Refusal().message()).find(what == "qemu:commandline" ? "qemu" : what),
              std::string::npos)
        << s.Refusal();
  }
  EXPECT_TRUE(ReplicaRoot().empty()) << "no replica directory was made";
  auto s = BackupStatus();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->protected_servers_size(), 0);
}

// Boot files (protocol 4): a stream carries exactly the files its domain boots from in Nova's
// instance directory, each within [replication] max_boot_file_bytes; the backup checks that when
// the stream opens, before anything is made. An older primary's stream (protocol 3) is accepted
// as before (and said to be unrestorable here).
TEST_F(AgentSecurityTest, AStreamCarriesExactlyTheBootFilesItsDomainBootsFrom) {
  StartB("max_boot_file_bytes = 1048576\n");
  const std::string dir = "/var/lib/nova/instances/" + kUuid;
  std::string boots = libvirt::fixtures::kNovaGeneratedXml;
  const std::string boot_dev = "<boot dev=\"hd\"/>";
  ASSERT_NE(boots.find(boot_dev), std::string::npos);
  boots.replace(boots.find(boot_dev), boot_dev.size(),
                "<kernel>" + dir + "/kernel</kernel><initrd>" + dir + "/ramdisk</initrd>");
  const auto with = [&](std::string xml, std::vector<core::BootFile> files, uint32_t protocol) {
    core::StreamOpen open = NovaOpen();
    open.domain_xml = std::move(xml);
    open.boot_files = std::move(files);
    open.protocol = protocol;
    return open;
  };
  const uint32_t v4 = core::kBootFilesProtocolVersion;
  struct Case {
    std::string what;
    core::StreamOpen open;
    absl::StatusCode code;
    std::string error;
  };
  const std::vector<Case> refused = {
      {"ramdisk missing", with(boots, {{"kernel", 10}}, v4), absl::StatusCode::kInvalidArgument,
       "the domain boots from " + dir + "/ramdisk but the stream carries no copy of it"},
      {"a file it does not boot from",
       with(libvirt::fixtures::kNovaGeneratedXml, {{"kernel", 10}}, v4),
       absl::StatusCode::kInvalidArgument,
       "the stream carries boot file 'kernel' but the domain does not boot from " + dir +
           "/kernel"},
      {"too large", with(boots, {{"kernel", (1 << 20) + 1}, {"ramdisk", 10}}, v4),
       absl::StatusCode::kResourceExhausted, "max_boot_file_bytes = 1048576"},
      {"another name", with(boots, {{"kernel", 10}, {"ramdisk", 10}, {"../../x", 10}}, v4),
       absl::StatusCode::kInvalidArgument, "is neither kernel nor ramdisk"},
  };
  for (const Case& c : refused) {
    SCOPED_TRACE(c.what);
    Stream s;
    Open(s, "rig-a", c.open);
    EXPECT_EQ(s.Refusal().code(), c.code) << s.Refusal();
    EXPECT_NE(std::string(s.Refusal().message()).find(c.error), std::string::npos)
        << s.Refusal();
  }
  EXPECT_TRUE(ReplicaRoot().empty()) << "no replica directory was made";

  {  // An older primary: accepted, replicated, but it cannot be failed over here.
    Stream s;
    Open(s, "rig-a", with(boots, {}, core::kBasisProtocolVersion));
    ASSERT_TRUE(s.stream) << s.Refusal();
    for (const auto& item : novadt::testing::SmallEpoch(1)) ASSERT_TRUE(s.stream->Send(item).ok());
    ASSERT_TRUE(WaitFor([&] { return s.Acked() == 1; }, seconds(10))) << Log();
    EXPECT_NE(Log().find("cannot be failed over to this host: its domain boots from " + dir +
                         "/kernel and that agent (replication protocol 3) sends no boot files"),
              std::string::npos)
        << Log();
    s.stream->Cancel();
    s.Refusal();
  }
  {  // Exactly its boot files: kept with the replica, the agent's own, 0600.
    Stream s;
    Open(s, "rig-a", with(boots, {{"kernel", 5000}, {"ramdisk", 7}}, v4));
    ASSERT_TRUE(s.stream) << s.Refusal();
    ASSERT_TRUE(s.stream->Send(core::BootFileChunk{"kernel", 0, std::string(5000, 'k')}).ok());
    ASSERT_TRUE(s.stream->Send(core::BootFileChunk{"ramdisk", 0, "ramdisk"}).ok());
    for (const auto& item : novadt::testing::SmallEpoch(1)) ASSERT_TRUE(s.stream->Send(item).ok());
    ASSERT_TRUE(WaitFor([&] { return s.Acked() == 1; }, seconds(10))) << Log();
    const std::string replica = replicas_ + "/" + kUuid;
    EXPECT_EQ(ReadFile(replica + "/boot-kernel"), std::string(5000, 'k'));
    EXPECT_EQ(ReadFile(replica + "/boot-ramdisk"), "ramdisk");
    struct stat st {};
    ASSERT_EQ(::stat((replica + "/boot-kernel").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    EXPECT_EQ(st.st_uid, ::geteuid());
  }
}

// A server this host runs cannot be replicated here: a restore would replace the running
// domain's definition (or the files it runs on, if it runs on a replica taken over here).
// libvirt's test driver runs the domain "test" at start.
TEST_F(AgentSecurityTest, AStreamForAServerRunningOnTheBackupIsRefused) {
  StartB();
  const std::string running = "6695eb01-f6a4-8304-79aa-97f2502e193f";
  core::StreamOpen open = NovaOpen();
  open.instance_uuid = running;
  for (size_t at; (at = open.domain_xml.find(kUuid)) != std::string::npos;) {
    open.domain_xml.replace(at, kUuid.size(), running);
  }
  Stream s;
  Open(s, "rig-a", open);
  EXPECT_TRUE(absl::IsFailedPrecondition(s.Refusal())) << s.Refusal();
  EXPECT_NE(std::string(s.Refusal().message()).find("runs on this host"), std::string::npos)
      << s.Refusal();
  EXPECT_TRUE(ReplicaRoot().empty());
}

TEST_F(AgentSecurityTest, MalformedInstanceUuidsAreRefusedAndNoPathOutsideTheReplicaRootIsMade) {
  StartB();
  Stream owner;
  ASSERT_NO_FATAL_FAILURE(OwnerStreams(owner, 1));
  std::string upper = kUuid;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (const std::string& bad : {std::string("../../escaped"), std::string("../") + kUuid,
                                 "./" + kUuid, "{" + kUuid + "}", upper, kUuid + "0",
                                 std::string(4000, 'a')}) {
    SCOPED_TRACE(bad.substr(0, 60));
    core::StreamOpen open = NovaOpen();
    open.instance_uuid = bad;
    Stream s;
    Open(s, "rig-a", open);
    EXPECT_TRUE(absl::IsInvalidArgument(s.Refusal())) << s.Refusal();
    auto basis = LinkAs("rig-a")->Basis(Address(), open, seconds(5));
    EXPECT_TRUE(absl::IsInvalidArgument(basis.status())) << basis.status();
  }
  EXPECT_EQ(ReplicaRoot(), std::vector<std::string>{kUuid});
  EXPECT_FALSE(std::filesystem::exists(dir_.path() + "/b/escaped"));
  EXPECT_FALSE(std::filesystem::exists(dir_.path() + "/escaped"));
  EXPECT_EQ(ReplicaRam(), std::string(4096, 'b')) << "the owner's replica is untouched";
}

// A primary that streams device state without end: refused at [replication]
// max_device_state_bytes with a clear reason, while another server's stream carries on.
TEST_F(AgentSecurityTest, OversizedDeviceStateEndsThatStreamAndTheAgentServesTheOthers) {
  StartB("max_device_state_bytes = 1048576\n");
  Stream owner;
  ASSERT_NO_FATAL_FAILURE(OwnerStreams(owner, 1));

  core::StreamOpen other = novadt::testing::TestOpen();
  other.domain_xml = libvirt::fixtures::kNovaGeneratedXml;
  other.instance_uuid = "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d";
  for (size_t at; (at = other.domain_xml.find(kUuid)) != std::string::npos;) {
    other.domain_xml.replace(at, kUuid.size(), other.instance_uuid);
  }
  Stream flood;
  Open(flood, "rig-a", other);
  ASSERT_TRUE(flood.stream) << flood.Refusal();
  ASSERT_TRUE(flood.stream->Send(core::EpochBegin{1}).ok());
  for (int i = 0; i < 64; ++i) {
    if (!flood.stream->Send(core::DeviceStateChunk{std::string(2 << 20, 'd'), false}).ok()) break;
  }
  const Status refused = flood.Refusal();
  EXPECT_TRUE(absl::IsResourceExhausted(refused)) << refused;
  EXPECT_NE(std::string(refused.message()).find("max_device_state_bytes"), std::string::npos);

  for (const auto& item : novadt::testing::SmallEpoch(2)) ASSERT_TRUE(owner.stream->Send(item).ok());
  EXPECT_TRUE(WaitFor([&] { return owner.Acked() == 2; }, seconds(10))) << Log();
  EXPECT_TRUE(b_->Running());
}

// Hellos claiming to be a dead primary must not keep its backup from failing over: only the
// backup's own greetings, answered, make a peer reachable. (Plaintext here, where any caller can
// claim any configured name.)
TEST_F(AgentSecurityTest, ForgedHellosNeverMakeAPeerReachable) {
  StartB("", /*tls=*/false);
  auto forger = rpc::MakeGrpcPeerLink({"rig-a", "1", ""}, rpc::PeerCredentials::Insecure({}));
  for (int i = 0; i < 10; ++i) {
    std::promise<StatusOr<core::HelloResult>> got;
    forger->Hello(Address(), seconds(5),
                  [&](StatusOr<core::HelloResult> r) { got.set_value(std::move(r)); });
    ASSERT_TRUE(got.get_future().get().ok()) << "the greeting itself is answered";
    std::this_thread::sleep_for(milliseconds(50));
  }
  auto s = BackupStatus();
  ASSERT_TRUE(s);
  bool seen = false;
  for (const auto& p : s->peers()) {
    if (p.host() != "rig-a") continue;
    seen = true;
    EXPECT_FALSE(p.reachable()) << "nothing at rig-a's address answers rig-b's own hellos";
    EXPECT_GT(p.last_seen_unix_ms(), 0) << "the greeting shows as seen";
  }
  EXPECT_TRUE(seen);
  EXPECT_EQ(s->peers_size(), 2) << "only configured peers are tracked";
}

// A stream its primary ends on purpose (unprotect, switchover, its agent stopping) leaves the
// replica as a basis only: never failed over (the primary may release output it never got), and
// recorded so across a restart of the backup.
TEST_F(AgentSecurityTest, AStreamItsPrimaryEndedOnPurposeLeavesAReplicaThatIsNeverFailedOver) {
  StartB();
  Stream owner;
  ASSERT_NO_FATAL_FAILURE(OwnerStreams(owner, 2));
  ASSERT_TRUE(owner.stream->Finish(seconds(5)).ok());
  std::optional<nova_dt::v1::AgentStatus> s;
  ASSERT_TRUE(WaitFor(
      [&] {
        s = BackupStatus();
        return s && s->protected_servers_size() == 1 &&
               s->protected_servers(0).state() == "unprotected";
      },
      seconds(10)))
      << (s ? s->DebugString() : "no status");
  EXPECT_NE(s->protected_servers(0).reason().find("never failed over"), std::string::npos);
  EXPECT_NE(ReadFile(replicas_ + "/" + kUuid + "/owner.rec").find("released 1"),
            std::string::npos);
}

}  // namespace
}  // namespace novadt
