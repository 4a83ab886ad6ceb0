// DeriveRestoreXml: the primary's (live) domain XML -> the backup's restore / clean definitions.
// The results are checked by parsing them with libvirt's own test driver too (it validates the
// domain schema as virDomainDefineXML does on a real host).
#include <gtest/gtest.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "agent/libvirt/handles.h"
#include "agent/libvirt/libvirt_launcher.h"
#include "agent/libvirt/domain_xml.h"

namespace novadt::libvirt {
namespace {

// A live XML as libvirt 9 prints it for the rig's test guest (trimmed), with runtime parts.
constexpr char kLiveXml[] = R"(<domain type='qemu' id='3'>
  <name>instance-0000002a</name>
  <uuid>6a1f8a3e-0b7c-4e8d-9f10-2b3c4d5e6f70</uuid>
  <memory unit='KiB'>262144</memory>
  <currentMemory unit='KiB'>262144</currentMemory>
  <memoryBacking>
    <source type='file'/>
    <access mode='shared'/>
  </memoryBacking>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <kernel>/opt/guest/vmlinux</kernel>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/nova/instances/x/disk' index='2'/>
      <backingStore type='file' index='3'>
        <format type='raw'/>
        <source file='/var/lib/nova/instances/_base/abc'/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='rbd' name='vms/x_disk.eph0'/>
      <target dev='vdb' bus='virtio'/>
      <alias name='ua-eph0'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/var/lib/nova/instances/x/disk.config'/>
      <target dev='hda' bus='ide'/>
    </disk>
    <interface type='bridge'>
      <mac address='52:54:00:12:34:56'/>
      <source bridge='br0'/>
      <target dev='vnet7'/>
      <model type='virtio'/>
      <alias name='net0'/>
    </interface>
    <serial type='pty'>
      <source path='/dev/pts/4'/>
      <target port='0'/>
      <alias name='serial0'/>
    </serial>
  </devices>
  <seclabel type='dynamic' model='dac' relabel='yes'>
    <label>+64055:+994</label>
    <imagelabel>+64055:+994</imagelabel>
  </seclabel>
</domain>
)";

const std::map<std::string, std::string> kImages = {
    {"vda", "/var/lib/libvirt/qemu/ram/nova-dt/u/disk-vda.raw"},
    {"vdb", "/var/lib/libvirt/qemu/ram/nova-dt/u/disk-vdb.raw"}};

bool Has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

TEST(RestoreXmlTest, RestoreXmlKeepsIdentityPointsDisksAtReplicaAndDefersIncoming) {
  auto xml = DeriveRestoreXml(kLiveXml, kImages, /*incoming=*/true);
  ASSERT_TRUE(xml.ok()) << xml.status();
  const std::string& x = *xml;
  EXPECT_TRUE(Has(x, "<name>instance-0000002a</name>")) << x;
  EXPECT_TRUE(Has(x, "<uuid>6a1f8a3e-0b7c-4e8d-9f10-2b3c4d5e6f70</uuid>")) << x;
  EXPECT_TRUE(Has(x, "<source type=\"file\"/>")) << x;
  EXPECT_TRUE(Has(x, "<access mode=\"shared\"/>")) << x;
  // Disks: raw files on the replica, no backing chain, no old source; the cdrom untouched.
  EXPECT_TRUE(Has(x, "<source file=\"/var/lib/libvirt/qemu/ram/nova-dt/u/disk-vda.raw\"/>")) << x;
  EXPECT_TRUE(Has(x, "<source file=\"/var/lib/libvirt/qemu/ram/nova-dt/u/disk-vdb.raw\"/>")) << x;
  EXPECT_FALSE(Has(x, "backingStore")) << x;
  EXPECT_FALSE(Has(x, "/var/lib/nova/instances/x/disk'")) << x;
  EXPECT_FALSE(Has(x, "\"/var/lib/nova/instances/x/disk\"")) << x;
  EXPECT_FALSE(Has(x, "rbd")) << x;
  EXPECT_FALSE(Has(x, "qcow2")) << x;
  EXPECT_TRUE(Has(x, "/var/lib/nova/instances/x/disk.config")) << x;
  // Runtime parts gone; the user alias stays.
  EXPECT_FALSE(Has(x, "id=\"3\"")) << x;
  EXPECT_FALSE(Has(x, "seclabel")) << x;
  EXPECT_FALSE(Has(x, "virtio-disk0")) << x;
  EXPECT_FALSE(Has(x, "net0")) << x;
  EXPECT_TRUE(Has(x, "ua-eph0")) << x;
  EXPECT_FALSE(Has(x, "vnet7")) << x;
  EXPECT_FALSE(Has(x, "/dev/pts/4")) << x;
  EXPECT_TRUE(Has(x, "<mac address=\"52:54:00:12:34:56\"/>")) << x;
  // -incoming defer, with the namespace declared.
  EXPECT_TRUE(Has(x, "xmlns:qemu=\"http://libvirt.org/schemas/domain/qemu/1.0\"")) << x;
  EXPECT_TRUE(Has(x, "<qemu:commandline>")) << x;
  const size_t inc = x.find("<qemu:arg value=\"-incoming\"/>");
  ASSERT_NE(inc, std::string::npos) << x;
  EXPECT_NE(x.find("<qemu:arg value=\"defer\"/>", inc), std::string::npos) << x;
}

TEST(RestoreXmlTest, CleanXmlHasNoRestoreOnlyArguments) {
  auto xml = DeriveRestoreXml(kLiveXml, kImages, /*incoming=*/false);
  ASSERT_TRUE(xml.ok()) << xml.status();
  EXPECT_FALSE(Has(*xml, "qemu:commandline")) << *xml;
  EXPECT_FALSE(Has(*xml, "-incoming")) << *xml;
  EXPECT_TRUE(Has(*xml, "disk-vda.raw")) << *xml;
}

TEST(RestoreXmlTest, ExistingQemuCommandlineIsExtended) {
  std::string in = kLiveXml;
  in.replace(in.find("<domain type='qemu' id='3'>"), 27,
             "<domain type='qemu' xmlns:q='http://libvirt.org/schemas/domain/qemu/1.0'>");
  in.replace(in.find("</domain>"), 9,
             "<q:commandline><q:arg value='-S'/></q:commandline></domain>");
  auto xml = DeriveRestoreXml(in, kImages, /*incoming=*/true);
  ASSERT_TRUE(xml.ok()) << xml.status();
  EXPECT_EQ(xml->find("<q:commandline>"), xml->rfind("<q:commandline>")) << *xml;
  EXPECT_TRUE(Has(*xml, "<q:arg value=\"-S\"/>\n    <q:arg value=\"-incoming\"/>")) << *xml;
  EXPECT_TRUE(Has(*xml, "<q:arg value=\"-S\"/>")) << *xml;
}

TEST(RestoreXmlTest, RejectsWhatCannotBeRestored) {
  EXPECT_TRUE(absl::IsInvalidArgument(DeriveRestoreXml("<domain", kImages, true).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(DeriveRestoreXml("<network/>", kImages, true).status()));
  // A disk without replica image, and an image without disk.
  auto missing = DeriveRestoreXml(kLiveXml, {{"vda", "/x"}}, true);
  EXPECT_TRUE(absl::IsInvalidArgument(missing.status()));
  EXPECT_NE(missing.status().message().find("vdb"), std::string::npos) << missing.status();
  auto extra = kImages;
  extra["vdz"] = "/x";
  EXPECT_TRUE(absl::IsInvalidArgument(DeriveRestoreXml(kLiveXml, extra, true).status()));
  // Anonymous (not file-backed shared) guest RAM.
  std::string anon = kLiveXml;
  anon.replace(anon.find("<access mode='shared'/>"), 23, "<access mode='private'/>");
  auto st = DeriveRestoreXml(anon, kImages, true).status();
  EXPECT_TRUE(absl::IsInvalidArgument(st));
  EXPECT_NE(st.message().find("shared file-backed"), std::string::npos) << st;
}

// libvirt itself accepts both results (test driver: full domain XML parsing and validation).
TEST(RestoreXmlTest, LibvirtAcceptsTheDerivedDefinitions) {
  ConnectPtr conn(virConnectOpen("test:///default"));
  ASSERT_TRUE(conn);
  for (bool incoming : {true, false}) {
    auto xml = DeriveRestoreXml(kLiveXml, kImages, incoming);
    ASSERT_TRUE(xml.ok()) << xml.status();
    DomainPtr dom(virDomainDefineXMLFlags(conn.get(), xml->c_str(), VIR_DOMAIN_DEFINE_VALIDATE));
    ASSERT_TRUE(dom) << virGetLastErrorMessage() << "\n" << *xml;
    char* back = virDomainGetXMLDesc(dom.get(), 0);
    ASSERT_TRUE(back);
    CString owned(back);
    EXPECT_TRUE(Has(back, "disk-vda.raw")) << back;
    // (The test driver validates <qemu:commandline> against the schema but does not keep it.)
    virDomainUndefine(dom.get());
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
