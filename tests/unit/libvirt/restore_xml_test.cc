// DeriveRestoreXml: the primary's (live) domain XML -> the backup's restore / clean definitions,
// new documents holding only what the allow-list carries. The results are checked by parsing them
// with libvirt's own test driver too (it validates the domain schema as virDomainDefineXML does
// on a real host).
#include "agent/libvirt/restore_xml.h"

#include <gtest/gtest.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "agent/libvirt/domain_xml.h"
#include "agent/libvirt/handles.h"
#include "tests/unit/libvirt/domain_fixtures.h"

namespace novadt::libvirt {
namespace {

using fixtures::kNovaGeneratedXml;
using fixtures::kNovaLiveXml;
using fixtures::kNovaUuid;
using fixtures::kRigGuestDir;
using fixtures::kRigLiveXml;
using fixtures::kRigUuid;

const std::map<std::string, std::string> kImages = {
    {"vda", "/var/lib/libvirt/qemu/ram/nova-dt/u/disk-vda.raw"}};

config::LibvirtSection NovaHost() { return {}; }

config::LibvirtSection RigHost() {
  config::LibvirtSection cfg;
  cfg.restore_file_dirs = {kRigGuestDir, "/var/log/libvirt"};
  return cfg;
}

bool Has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

std::string Edit(std::string xml, std::string_view from, std::string_view to) {
  const size_t at = xml.find(from);
  if (at == std::string::npos) {
    ADD_FAILURE() << "fixture has no '" << from << "'";
    return "";
  }
  return xml.replace(at, from.size(), to);
}

TEST(RestoreXmlTest, RestoreXmlOfANovaServerKeepsItsGuestAndPointsTheDiskAtTheReplica) {
  auto xml = DeriveRestoreXml(kNovaLiveXml, kImages, /*incoming=*/true, NovaHost());
  ASSERT_TRUE(xml.ok()) << xml.status();
  const std::string& x = *xml;
  EXPECT_TRUE(
      Has(x, "<domain xmlns:qemu=\"http://libvirt.org/schemas/domain/qemu/1.0\" type=\"kvm\">"))
      << x;
  EXPECT_TRUE(Has(x, "<name>instance-0000002a</name>")) << x;
  EXPECT_TRUE(Has(x, "<uuid>" + std::string(kNovaUuid) + "</uuid>")) << x;
  EXPECT_TRUE(Has(x, "<memory unit=\"KiB\">524288</memory>")) << x;
  EXPECT_TRUE(Has(x, "<source type=\"file\"/>")) << x;
  EXPECT_TRUE(Has(x, "<access mode=\"shared\"/>")) << x;
  EXPECT_TRUE(Has(x, "<model fallback=\"forbid\">EPYC</model>")) << x;
  EXPECT_TRUE(Has(x, "<feature policy=\"disable\" name=\"nrip-save\"/>")) << x;
  EXPECT_TRUE(Has(x, "<entry name=\"uuid\">" + std::string(kNovaUuid) + "</entry>")) << x;
  EXPECT_TRUE(Has(x, "<nova:name>web-1</nova:name>")) << x;  // Nova's metadata, informational
  // The disk: a raw file on the replica, nothing of the primary's storage; libvirtd does not
  // relabel (chown) it: the agent gave it to QEMU's user already.
  EXPECT_TRUE(Has(x,
                  "<disk type=\"file\" device=\"disk\">\n      <driver name=\"qemu\" "
                  "type=\"raw\" cache=\"none\" discard=\"ignore\"/>\n      <source "
                  "file=\"/var/lib/libvirt/qemu/ram/nova-dt/u/disk-vda.raw\">\n        <seclabel "
                  "model=\"dac\" relabel=\"no\"/>\n      </source>\n      <target "
                  "dev=\"vda\" bus=\"virtio\"/>"))
      << x;
  for (const char* gone :
       {"qcow2", "backingStore", "/var/lib/nova/instances/_base", "/disk\"", "index=\"2\""}) {
    EXPECT_FALSE(Has(x, gone)) << gone << "\n" << x;
  }
  // Device layout kept (the restored QEMU loads the primary's device state).
  EXPECT_TRUE(Has(x,
                  "<address type=\"pci\" domain=\"0x0000\" bus=\"0x00\" slot=\"0x04\" "
                  "function=\"0x0\"/>"))
      << x;
  EXPECT_TRUE(Has(x, "<address type=\"virtio-serial\" controller=\"0\" bus=\"0\" port=\"1\"/>"))
      << x;
  EXPECT_TRUE(Has(x, "<target dev=\"tap3c1d2e4f-5a\"/>")) << x;   // Nova's tap name
  EXPECT_TRUE(Has(x, "<serial type=\"pty\">\n      <log")) << x;  // no <source/> left
  EXPECT_TRUE(Has(x, "<source mode=\"bind\"/>")) << x;            // libvirt makes the agent socket
  EXPECT_TRUE(Has(x, "<mac address=\"fa:16:3e:12:34:56\"/>")) << x;
  EXPECT_TRUE(Has(x, "<log file=\"/var/lib/nova/instances/" + std::string(kNovaUuid) +
                         "/console.log\" append=\"off\"/>"))
      << x;
  // The primary's runtime state and host choices: never carried.
  // (The domain's dynamic <seclabel>s: the disk's own no-relabel label is the only one left.)
  EXPECT_EQ(x.find("seclabel"), x.find("<seclabel model=\"dac\" relabel=\"no\"/>") + 1) << x;
  EXPECT_EQ(x.find("seclabel", x.find("relabel=\"no\"/>")), std::string::npos) << x;
  for (const char* gone : {"id=\"7\"", "type=\"dynamic\"", "+64055", "apparmor", "<resource", "/machine",
                           "alias", "/dev/pts", "tty=", "port=\"5900\"", "<emulator", "qemu-system",
                           "/var/lib/libvirt/qemu/channel", "state=\"connected\""}) {
    EXPECT_FALSE(Has(x, gone)) << gone << "\n" << x;
  }
  // The agent's own -incoming defer, last.
  EXPECT_TRUE(Has(x,
                  "  <qemu:commandline>\n    <qemu:arg value=\"-incoming\"/>\n    <qemu:arg "
                  "value=\"defer\"/>\n  </qemu:commandline>\n</domain>"))
      << x;
}

TEST(RestoreXmlTest, CleanXmlHasNoRestoreOnlyArguments) {
  auto xml = DeriveRestoreXml(kNovaLiveXml, kImages, /*incoming=*/false, NovaHost());
  ASSERT_TRUE(xml.ok()) << xml.status();
  EXPECT_FALSE(Has(*xml, "qemu:")) << *xml;
  EXPECT_FALSE(Has(*xml, "-incoming")) << *xml;
  EXPECT_TRUE(Has(*xml, "disk-vda.raw")) << *xml;
}

TEST(RestoreXmlTest, TheRigGuestKeepsItsKernelAndConsoleFile) {
  auto xml = DeriveRestoreXml(kRigLiveXml, kImages, /*incoming=*/true, RigHost());
  ASSERT_TRUE(xml.ok()) << xml.status();
  const std::string& x = *xml;
  EXPECT_TRUE(Has(x, "<kernel>/opt/nova-dt/build/guest/vmlinux</kernel>")) << x;
  EXPECT_TRUE(Has(x, "<initrd>/opt/nova-dt/build/guest/initrd.img</initrd>")) << x;
  EXPECT_TRUE(Has(x,
                  "<cmdline>console=ttyS0 panic=-1 dt.ip=198.18.1.50/24 "
                  "dt.observer=198.18.1.1:9000</cmdline>"))
      << x;
  EXPECT_TRUE(Has(x, "<source path=\"/var/log/libvirt/dtguest-console.log\" append=\"on\"/>")) << x;
  EXPECT_TRUE(Has(x, "<source bridge=\"br0\"/>")) << x;
  EXPECT_FALSE(Has(x, "vnet0")) << x;  // libvirt's tap name of the primary
  EXPECT_TRUE(Has(x, "<controller type=\"usb\" index=\"0\" model=\"none\"/>")) << x;
  EXPECT_TRUE(Has(x, "<memballoon model=\"none\"/>")) << x;
}

// Extras a peer could add that look harmless: none reaches the derived definition. The ones the
// allow-list tolerates are left out; anything it does not name refuses the whole definition
// (restore_check_test.cc), so the derived XML holds exactly the allow-list's carried nodes.
TEST(RestoreXmlTest, HarmlessLookingExtrasAreNotCarried) {
  std::string in = kNovaLiveXml;
  in = Edit(in, "<vcpu placement='static'>", "<vcpu placement='static' cpuset='0-3'>");
  in = Edit(in, "listen='0.0.0.0'>\n      <listen type='address' address='0.0.0.0'/>",
            "listen='10.0.0.5' websocket='5700'>\n      <listen type='address' "
            "address='10.0.0.5'/>");
  in = Edit(in, "<source bridge='brq1a2b3c4d-5e'/>",
            "<source bridge='brq1a2b3c4d-5e' portid='11111111-2222-4333-8444-555555555555'/>");
  in = Edit(in, "<target dev='vda' bus='virtio'/>",
            "<mirror type='network' job='copy' ready='yes'><format type='raw'/><source "
            "protocol='nbd' name='vda'><host transport='unix' socket='/run/nova-dt/nbd.sock'/>"
            "</source></mirror><target dev='vda' bus='virtio'/>");
  in = Edit(in, "<alias name='net0'/>", "<alias name='ua-nic0'/>");
  in = Edit(in, "<metadata>",
            "<metadata><x:owner xmlns:x='urn:example'><x:cmd>rm -rf /</x:cmd></x:owner>");
  in = Edit(in, "<devices>", "<!-- a comment --><?pi data?><devices>");
  in = Edit(in, "<nova:name>web-1</nova:name>",
            "<nova:name>web-1</nova:name><x:evil xmlns:x='urn:x'/>");
  auto xml = DeriveRestoreXml(in, kImages, /*incoming=*/false, NovaHost());
  ASSERT_TRUE(xml.ok()) << xml.status();
  const std::string& x = *xml;
  for (const char* gone : {"cpuset", "10.0.0.5", "websocket", "5700", "portid", "mirror", "nbd",
                           "urn:example", "rm -rf", "comment", "<?pi", "urn:x", "nova:"}) {
    EXPECT_FALSE(Has(x, gone)) << gone << "\n" << x;
  }
  EXPECT_TRUE(Has(x, "<alias name=\"ua-nic0\"/>")) << x;  // a user alias names the device for QEMU
  EXPECT_TRUE(Has(x,
                  "<graphics type=\"vnc\" autoport=\"yes\">\n      <listen "
                  "type=\"address\"/>\n    </graphics>"))
      << x;
  // The same input passes the check: what is tolerated is checked, then left out.
  EXPECT_TRUE(CheckRestorableDomain(in, kNovaUuid, NovaHost()).ok())
      << CheckRestorableDomain(in, kNovaUuid, NovaHost());
}

// A Cinder or Ceph disk on the primary is a file disk on the replica's image on the backup:
// nothing of the primary's storage (device path, monitor hosts, credentials) is carried.
TEST(RestoreXmlTest, VolumeDisksBecomeFileDisksOnTheReplica) {
  const std::string in = Edit(
      kNovaLiveXml, "<disk type='file' device='disk'>",
      "<disk type='network' device='disk'><auth username='nova'><secret type='ceph' "
      "uuid='11111111-2222-4333-8444-555555555555'/></auth>");
  auto clean = DeriveRestoreXml(in, kImages, /*incoming=*/false, NovaHost());
  ASSERT_TRUE(clean.ok()) << clean.status();
  for (const char* gone : {"network", "auth", "secret", "ceph", "nova'"}) {
    EXPECT_FALSE(Has(*clean, gone)) << gone << "\n" << *clean;
  }
  EXPECT_TRUE(Has(*clean, "<disk type=\"file\" device=\"disk\">")) << *clean;
  EXPECT_TRUE(Has(*clean, "disk-vda.raw")) << *clean;
}

// The derived definition is itself restorable and derives to itself: it holds nothing the
// allow-list leaves out, and nothing the allow-list does not name.
TEST(RestoreXmlTest, TheDerivedDefinitionIsAFixedPointOfTheAllowList) {
  struct Case {
    const char* name;
    const char* xml;
    const char* uuid;
    config::LibvirtSection cfg;
  };
  for (const Case& c : {Case{"nova generated", kNovaGeneratedXml, kNovaUuid, NovaHost()},
                        Case{"nova live", kNovaLiveXml, kNovaUuid, NovaHost()},
                        Case{"rig live", kRigLiveXml, kRigUuid, RigHost()}}) {
    auto once = DeriveRestoreXml(c.xml, kImages, /*incoming=*/false, c.cfg);
    ASSERT_TRUE(once.ok()) << c.name << ": " << once.status();
    EXPECT_TRUE(CheckRestorableDomain(*once, c.uuid, c.cfg).ok())
        << c.name << ": " << CheckRestorableDomain(*once, c.uuid, c.cfg);
    auto twice = DeriveRestoreXml(*once, kImages, /*incoming=*/false, c.cfg);
    ASSERT_TRUE(twice.ok()) << c.name << ": " << twice.status();
    EXPECT_EQ(*twice, *once) << c.name;
  }
}

// Every disk the derived definition points at a replica image carries the no-relabel label, and a
// restored domain's live XML (libvirt adds its id, aliases, dynamic labels) passes the check again
// when the server is protected from its new host.
TEST(RestoreXmlTest, EveryReplicaDiskIsNotRelabelledAndARestoredDomainPassesAgain) {
  const std::string in = Edit(
      kNovaLiveXml, "    <controller type='usb'",
      "    <disk type='network' device='disk'><driver name='qemu' type='raw'/><source "
      "protocol='rbd' name='vms/x_disk'><host name='10.0.0.1' port='6789'/></source><target "
      "dev='vdb' bus='virtio'/></disk>\n    <controller type='usb'");
  const std::map<std::string, std::string> images = {{"vda", "/r/u/disk-vda.raw"},
                                                     {"vdb", "/r/u/disk-vdb.raw"}};
  auto xml = DeriveRestoreXml(in, images, /*incoming=*/true, NovaHost());
  ASSERT_TRUE(xml.ok()) << xml.status();
  for (const char* disk : {"vda", "vdb"}) {
    EXPECT_TRUE(Has(*xml, "<source file=\"/r/u/disk-" + std::string(disk) +
                              ".raw\">\n        <seclabel model=\"dac\" relabel=\"no\"/>\n"
                              "      </source>"))
        << disk << "\n"
        << *xml;
  }
  std::string live = Edit(*xml, "type=\"kvm\">", "type=\"kvm\" id=\"9\">");
  live = Edit(live, "<target dev=\"vdb\" bus=\"virtio\"/>",
              "<target dev=\"vdb\" bus=\"virtio\"/><alias name=\"virtio-disk1\"/>");
  live = Edit(live, "</devices>",
              "</devices><seclabel type='dynamic' model='dac' relabel='yes'><label>+64055:+994"
              "</label></seclabel>");
  EXPECT_TRUE(CheckRestorableDomain(live, kNovaUuid, NovaHost()).ok())
      << CheckRestorableDomain(live, kNovaUuid, NovaHost()) << "\n"
      << live;
  auto again = DeriveRestoreXml(live, images, /*incoming=*/false, NovaHost());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->find("id=\"9\""), std::string::npos) << *again;
  EXPECT_TRUE(Has(*again, "disk-vdb.raw\">\n        <seclabel model=\"dac\" relabel=\"no\"/>"))
      << *again;
}

// Text split by comments or CDATA sections reads as libvirt reads it (the text nodes joined,
// comments left out): the check and the derivation see the UUID and paths libvirt would use.
TEST(RestoreXmlTest, TextSplitByCommentsOrCdataIsReadAsLibvirtReadsIt) {
  std::string in = Edit(kRigLiveXml, "<uuid>6a1f8a3e-0b7c-4e8d-9f10-2b3c4d5e6f70</uuid>",
                        "<uuid>6a1f8a3e<!-- x -->-0b7c-4e8d-<![CDATA[9f10]]>-2b3c4d5e6f70</uuid>");
  in = Edit(in, "<kernel>/opt/nova-dt/build/guest/vmlinux</kernel>",
            "<kernel>/opt/nova-dt/<![CDATA[build]]>/gu<!---->est/vmlinux</kernel>");
  EXPECT_TRUE(CheckRestorableDomain(in, kRigUuid, RigHost()).ok())
      << CheckRestorableDomain(in, kRigUuid, RigHost());
  auto xml = DeriveRestoreXml(in, kImages, /*incoming=*/false, RigHost());
  ASSERT_TRUE(xml.ok()) << xml.status();
  EXPECT_TRUE(Has(*xml, "<uuid>" + std::string(kRigUuid) + "</uuid>")) << *xml;
  EXPECT_TRUE(Has(*xml, "<kernel>/opt/nova-dt/build/guest/vmlinux</kernel>")) << *xml;
  EXPECT_FALSE(Has(*xml, "CDATA")) << *xml;
  // Joined, a split '..' is a '..'.
  const std::string traversal =
      Edit(kRigLiveXml, "<kernel>/opt/nova-dt/build/guest/vmlinux</kernel>",
           "<kernel>/opt/nova-dt/build/guest/.<!-- -->.<![CDATA[/../../../etc/shadow]]></kernel>");
  const Status st = CheckRestorableDomain(traversal, kRigUuid, RigHost());
  EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
  EXPECT_TRUE(Has(std::string(st.message()),
                  "/domain/os/kernel: '/opt/nova-dt/build/guest/../../../../etc/shadow' is not an "
                  "absolute path"))
      << st;
  // A UUID split into another server's: the joined one is compared.
  const std::string other = Edit(kRigLiveXml, "<uuid>6a1f8a3e",
                                 "<uuid><![CDATA[7]]><!-- -->a1f8a3e");
  EXPECT_TRUE(absl::IsInvalidArgument(CheckRestorableDomain(other, kRigUuid, RigHost())));
}

TEST(RestoreXmlTest, NovaMetadataSurvivesANamespaceDeclaredOnTheDomain) {
  std::string in = Edit(kNovaLiveXml, "<domain type='kvm' id='7'>",
                        "<domain type='kvm' id='7' "
                        "xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.1'>");
  in = Edit(in, "<nova:instance xmlns:nova=\"http://openstack.org/xmlns/libvirt/nova/1.1\">",
            "<nova:instance>");
  auto xml = DeriveRestoreXml(in, kImages, /*incoming=*/false, NovaHost());
  ASSERT_TRUE(xml.ok()) << xml.status();
  EXPECT_TRUE(
      Has(*xml, "<nova:instance xmlns:nova=\"http://openstack.org/xmlns/libvirt/nova/1.1\">"))
      << *xml;
  EXPECT_TRUE(Has(*xml, "<nova:ip type=\"fixed\" address=\"10.0.0.12\" ipVersion=\"4\"/>")) << *xml;
}

TEST(RestoreXmlTest, DisksAndReplicaImagesMatchOneToOne) {
  auto missing = DeriveRestoreXml(kNovaLiveXml, {}, true, NovaHost());
  EXPECT_TRUE(absl::IsInvalidArgument(missing.status()));
  EXPECT_EQ(missing.status().message(), "restore XML: disk 'vda' has no replica image");
  auto extra = kImages;
  extra["vdz"] = "/x";
  auto st = DeriveRestoreXml(kNovaLiveXml, extra, true, NovaHost()).status();
  EXPECT_TRUE(absl::IsInvalidArgument(st));
  EXPECT_EQ(st.message(), "restore XML: replica images given for disks the domain does not have");
}

TEST(RestoreXmlTest, DerivationRefusesWhatTheCheckRefuses) {
  // (restore_check_test.cc compares every refusal; here: the peer's own qemu:commandline is
  // never merged with the agent's.)
  const std::string in =
      Edit(Edit(kNovaLiveXml, "<domain type='kvm' id='7'>",
                "<domain type='kvm' xmlns:q='http://libvirt.org/schemas/domain/qemu/1.0'>"),
           "</domain>", "<q:commandline><q:arg value='-S'/></q:commandline></domain>");
  auto xml = DeriveRestoreXml(in, kImages, /*incoming=*/true, NovaHost());
  EXPECT_TRUE(absl::IsInvalidArgument(xml.status()));
  EXPECT_TRUE(Has(std::string(xml.status().message()), "<q:commandline> is QEMU pass-through"))
      << xml.status();
}

// libvirt itself accepts the results (test driver: full domain XML parsing and validation).
// What a definition needs of Nova's instance directory: the boot files a primary sends with its
// stream, and whether a restore must make the directory (docs/compute-host.md, "Boot files").
TEST(InstanceDirFilesTest, ANovaServerBootingFromGlanceKernelAndRamdiskNeedsBoth) {
  const std::string dir = "/var/lib/nova/instances/" + std::string(kNovaUuid);
  const std::string xml = Edit(kNovaLiveXml, "<boot dev='hd'/>",
                               "<kernel>" + dir + "/kernel</kernel><initrd>" + dir +
                                   "/ramdisk</initrd><cmdline>console=ttyS0</cmdline>");
  ASSERT_TRUE(CheckRestorableDomain(xml, kNovaUuid, NovaHost()).ok());
  auto use = InstanceDirFiles(xml, kNovaUuid, NovaHost());
  ASSERT_TRUE(use.ok()) << use.status();
  EXPECT_EQ(*use, (InstanceDirUse{.kernel = true, .ramdisk = true, .any = true}));
  // Without a ramdisk (an image with kernel_id only).
  use = InstanceDirFiles(Edit(xml, "<initrd>" + dir + "/ramdisk</initrd>", ""), kNovaUuid,
                         NovaHost());
  ASSERT_TRUE(use.ok());
  EXPECT_EQ(*use, (InstanceDirUse{.kernel = true, .ramdisk = false, .any = true}));
}

// A disk-booted server still logs its console in the instance directory: the directory, no boot
// files.
TEST(InstanceDirFilesTest, TheConsoleLogAloneNeedsTheDirectory) {
  auto use = InstanceDirFiles(kNovaLiveXml, kNovaUuid, NovaHost());
  ASSERT_TRUE(use.ok()) << use.status();
  EXPECT_EQ(*use, (InstanceDirUse{.kernel = false, .ramdisk = false, .any = true}));
  use = InstanceDirFiles(kNovaGeneratedXml, kNovaUuid, NovaHost());
  ASSERT_TRUE(use.ok()) << use.status();
  EXPECT_EQ(*use, (InstanceDirUse{.kernel = false, .ramdisk = false, .any = true}));
}

// The operator's files (restore_file_dirs, on every host) are never the instance's: the rig
// guest needs nothing. Neither are another server's, or a path only resembling Nova's.
TEST(InstanceDirFilesTest, OnlyTheInstancesOwnFilesCount) {
  auto use = InstanceDirFiles(kRigLiveXml, kRigUuid, RigHost());
  ASSERT_TRUE(use.ok()) << use.status();
  EXPECT_EQ(*use, InstanceDirUse{});
  const std::string dir = "/var/lib/nova/instances/" + std::string(kNovaUuid);
  config::LibvirtSection listed = NovaHost();
  listed.restore_file_dirs = {"/var/lib/nova/instances"};
  const std::string boots = Edit(kNovaGeneratedXml, R"(<boot dev="hd"/>)",
                                 "<kernel>" + dir + "/kernel</kernel>");
  use = InstanceDirFiles(boots, kNovaUuid, listed);
  ASSERT_TRUE(use.ok());
  EXPECT_EQ(*use, InstanceDirUse{}) << "below a restore_file_dirs directory: the operator's";
  use = InstanceDirFiles(boots, "00000000-0000-4000-8000-000000000001", NovaHost());
  ASSERT_TRUE(use.ok());
  EXPECT_FALSE(use->kernel) << "another server's";
  use = InstanceDirFiles(Edit(boots, dir + "/kernel", dir + "/vmlinuz"), kNovaUuid, NovaHost());
  ASSERT_TRUE(use.ok());
  EXPECT_FALSE(use->kernel) << "not Nova's name";
  EXPECT_TRUE(use->any);
}

TEST(InstanceDirFilesTest, AnUnparsableDefinitionIsRefused) {
  EXPECT_TRUE(absl::IsInvalidArgument(InstanceDirFiles("<domain", kNovaUuid, NovaHost()).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      InstanceDirFiles(std::string(kMaxDomainXmlBytes + 1, ' '), kNovaUuid, NovaHost()).status()));
}

TEST(RestoreXmlTest, LibvirtAcceptsTheDerivedDefinitions) {
  ConnectPtr conn(virConnectOpen("test:///default"));
  ASSERT_TRUE(conn);
  struct Case {
    const char* xml;
    config::LibvirtSection cfg;
  };
  for (const Case& c : {Case{kNovaGeneratedXml, NovaHost()}, Case{kNovaLiveXml, NovaHost()},
                        Case{kRigLiveXml, RigHost()}}) {
    for (bool incoming : {true, false}) {
      auto xml = DeriveRestoreXml(c.xml, kImages, incoming, c.cfg);
      ASSERT_TRUE(xml.ok()) << xml.status();
      DomainPtr dom(virDomainDefineXMLFlags(conn.get(), xml->c_str(), VIR_DOMAIN_DEFINE_VALIDATE));
      ASSERT_TRUE(dom) << virGetLastErrorMessage() << "\n" << *xml;
      char* back = virDomainGetXMLDesc(dom.get(), 0);
      ASSERT_TRUE(back);
      CString owned(back);
      EXPECT_TRUE(Has(back, "disk-vda.raw")) << back;
      // The schema's place for a per-disk label: libvirt keeps it.
      EXPECT_TRUE(Has(back,
                      "disk-vda.raw'>\n        <seclabel model='dac' relabel='no'/>\n      "
                      "</source>"))
          << back;
      // (The test driver validates <qemu:commandline> against the schema but does not keep it.)
      virDomainUndefine(dom.get());
    }
  }
}

}  // namespace
}  // namespace novadt::libvirt

namespace novadt::libvirt {
namespace {

TEST(DomainXmlTest, DiskTargetsAreTheDisksOnlyInOrder) {
  auto t = DiskTargets(
      "<domain><devices>"
      "<disk type='file' device='disk'><target dev='vda' bus='virtio'/></disk>"
      "<disk type='file' device='cdrom'><target dev='hdc' bus='ide'/></disk>"
      "<disk type='network' device='disk'><target dev='vdb' bus='virtio'/></disk>"
      "</devices></domain>");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t, (std::vector<std::string>{"vda", "vdb"}));
  EXPECT_TRUE(absl::IsInvalidArgument(DiskTargets("<domain><devices>").status()));
}

}  // namespace
}  // namespace novadt::libvirt
