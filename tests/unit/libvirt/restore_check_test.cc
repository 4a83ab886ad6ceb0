// CheckRestorableDomain: which peer domain definitions a backup accepts when a replication stream
// opens. Every refusal is also checked against DeriveRestoreXml: both walk one allow-list, so
// they refuse the same definitions with the same message.
#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "agent/libvirt/restore_xml.h"
#include "tests/unit/libvirt/domain_fixtures.h"

namespace novadt::libvirt {
namespace {

using fixtures::kNovaGeneratedXml;
using fixtures::kNovaLiveXml;
using fixtures::kNovaUuid;
using fixtures::kRigGuestDir;
using fixtures::kRigLiveXml;
using fixtures::kRigUuid;

constexpr char kOtherUuid[] = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a";

config::LibvirtSection NovaHost() { return {}; }  // instances_path /var/lib/nova/instances

config::LibvirtSection RigHost() {
  config::LibvirtSection cfg;
  cfg.restore_file_dirs = {kRigGuestDir, "/var/log/libvirt"};
  return cfg;
}

// `xml` with its first `from` replaced by `to`; "" when `from` is not there (the check then fails
// on an unparsable document, and the test's message shows the edit did not apply).
std::string Edit(std::string xml, std::string_view from, std::string_view to) {
  const size_t at = xml.find(from);
  if (at == std::string::npos) {
    ADD_FAILURE() << "fixture has no '" << from << "'";
    return "";
  }
  return xml.replace(at, from.size(), to);
}

std::string AddDevice(std::string_view device) {
  return Edit(kNovaLiveXml, "  </devices>",
              std::string("    ") + std::string(device) + "\n  </devices>");
}

// Refused by CheckRestorableDomain with InvalidArgument naming `part`, and by DeriveRestoreXml
// with the very same status.
::testing::AssertionResult Refused(const std::string& xml, std::string_view part,
                                   const config::LibvirtSection& cfg = NovaHost(),
                                   const std::string& uuid = kNovaUuid) {
  const Status check = CheckRestorableDomain(xml, uuid, cfg);
  if (check.ok()) return ::testing::AssertionFailure() << "accepted";
  if (!absl::IsInvalidArgument(check)) return ::testing::AssertionFailure() << check;
  if (std::string(check.message()).find(part) == std::string::npos) {
    return ::testing::AssertionFailure() << "message lacks '" << part << "': " << check;
  }
  const auto derived = DeriveRestoreXml(xml, {{"vda", "/replica/disk-vda.raw"}}, true, cfg);
  if (derived.ok()) return ::testing::AssertionFailure() << "derived all the same:\n" << *derived;
  if (derived.status() != check) {
    return ::testing::AssertionFailure()
           << "check and derivation disagree: " << check << " vs " << derived.status();
  }
  return ::testing::AssertionSuccess() << check;
}

TEST(RestoreCheckTest, AcceptsWhatNovaGenerates) {
  EXPECT_TRUE(CheckRestorableDomain(kNovaGeneratedXml, kNovaUuid, NovaHost()).ok())
      << CheckRestorableDomain(kNovaGeneratedXml, kNovaUuid, NovaHost());
}

TEST(RestoreCheckTest, AcceptsANovaServerAsLibvirtRunsIt) {
  EXPECT_TRUE(CheckRestorableDomain(kNovaLiveXml, kNovaUuid, NovaHost()).ok())
      << CheckRestorableDomain(kNovaLiveXml, kNovaUuid, NovaHost());
}

TEST(RestoreCheckTest, AcceptsNovasDirectKernelBootFromTheInstanceDirectory) {
  const std::string dir = "/var/lib/nova/instances/" + std::string(kNovaUuid);
  const std::string xml =
      Edit(kNovaGeneratedXml, R"(<boot dev="hd"/>)",
           "<kernel>" + dir + "/kernel</kernel><initrd>" + dir +
               "/ramdisk</initrd><cmdline>root=/dev/vda console=ttyS0</cmdline>");
  EXPECT_TRUE(CheckRestorableDomain(xml, kNovaUuid, NovaHost()).ok())
      << CheckRestorableDomain(xml, kNovaUuid, NovaHost());
}

TEST(RestoreCheckTest, RefusesKernelsAndInitrdsOutsideTheInstanceDirectory) {
  const std::string own = "/var/lib/nova/instances/" + std::string(kNovaUuid);
  for (const std::string& kernel :
       {std::string("/etc/shadow"),
        "/var/lib/nova/instances/" + std::string(kOtherUuid) + "/kernel",  // another server's
        own + "/disk",                                                     // not Nova's name
        own + "/../" + std::string(kOtherUuid) + "/kernel", own + "//kernel", std::string("kernel"),
        "/var/lib/nova/instances-evil/" + std::string(kNovaUuid) + "/kernel"}) {
    const std::string xml =
        Edit(kNovaGeneratedXml, R"(<boot dev="hd"/>)", "<kernel>" + kernel + "</kernel>");
    EXPECT_TRUE(Refused(xml, "/domain/os/kernel")) << kernel;
  }
  const std::string initrd =
      Edit(kNovaGeneratedXml, R"(<boot dev="hd"/>)",
           "<kernel>" + own + "/kernel</kernel><initrd>/root/.ssh/id_rsa</initrd>");
  EXPECT_TRUE(Refused(initrd, "host file '/root/.ssh/id_rsa' is neither " + own +
                                  "/ramdisk (the instance's own, [libvirt] instances_path) nor "
                                  "below a [libvirt] restore_file_dirs directory"));
}

TEST(RestoreCheckTest, InstancesPathIsConfigurable) {
  config::LibvirtSection cfg;
  cfg.instances_path = "/srv/nova/instances";
  EXPECT_TRUE(Refused(kNovaLiveXml, "/domain/devices/serial[1]/log/@file", cfg));
  std::string moved = kNovaLiveXml;
  for (size_t at; (at = moved.find("/var/lib/nova/instances/")) != std::string::npos;) {
    moved.replace(at, 24, "/srv/nova/instances/");
  }
  EXPECT_TRUE(CheckRestorableDomain(moved, kNovaUuid, cfg).ok())
      << CheckRestorableDomain(moved, kNovaUuid, cfg);
}

TEST(RestoreCheckTest, TheRigGuestNeedsItsDirectoriesAllowed) {
  EXPECT_TRUE(CheckRestorableDomain(kRigLiveXml, kRigUuid, RigHost()).ok())
      << CheckRestorableDomain(kRigLiveXml, kRigUuid, RigHost());
  EXPECT_TRUE(Refused(kRigLiveXml,
                      "/domain/os/kernel: host file '/opt/nova-dt/build/guest/vmlinux'", NovaHost(),
                      kRigUuid));
  config::LibvirtSection kernels_only;
  kernels_only.restore_file_dirs = {kRigGuestDir};
  EXPECT_TRUE(
      Refused(kRigLiveXml, "/domain/devices/serial[1]/source/@path", kernels_only, kRigUuid));
  // A directory allows what is below it, not its siblings with the same prefix.
  config::LibvirtSection prefix;
  prefix.restore_file_dirs = {"/opt/nova-dt/build/gue", "/var/log/libvirt"};
  EXPECT_TRUE(Refused(kRigLiveXml, "/domain/os/kernel", prefix, kRigUuid));
}

// With restore_file_dirs configured, a path below an allowed directory is compared by its
// components: '..', '.', empty components and relative paths never reach past it.
TEST(RestoreCheckTest, RefusesTraversalBelowRestoreFileDirs) {
  const std::string dir = kRigGuestDir;
  for (const std::string& kernel :
       {dir + "/../../../../etc/shadow", dir + "/..", dir + "/../guest/vmlinux", dir + "//vmlinux",
        dir + "/./vmlinux", dir + "/.", dir + "/", dir, dir.substr(1) + "/vmlinux",
        std::string("vmlinux"), dir + "/vmlinux/", dir + "/vm\nlinux"}) {
    EXPECT_TRUE(Refused(Edit(kRigLiveXml, "<kernel>/opt/nova-dt/build/guest/vmlinux</kernel>",
                             "<kernel>" + kernel + "</kernel>"),
                        "/domain/os/kernel", RigHost(), kRigUuid))
        << kernel;
  }
  for (const char* console : {"/var/log/libvirt/../../etc/shadow", "/var/log/libvirt//x.log",
                              "/var/log/libvirt/./x.log", "var/log/libvirt/x.log"}) {
    EXPECT_TRUE(Refused(Edit(kRigLiveXml, "<source path='/var/log/libvirt/dtguest-console.log'",
                             std::string("<source path='") + console + "'"),
                        "/domain/devices/serial[1]/source/@path", RigHost(), kRigUuid))
        << console;
  }
  // What is below, in a subdirectory too, is allowed.
  const std::string deeper = Edit(kRigLiveXml, "<kernel>/opt/nova-dt/build/guest/vmlinux</kernel>",
                                  "<kernel>" + dir + "/boot/vmlinux..old</kernel>");
  EXPECT_TRUE(CheckRestorableDomain(deeper, kRigUuid, RigHost()).ok())
      << CheckRestorableDomain(deeper, kRigUuid, RigHost());
}

// A default namespace (xmlns='...') puts an element outside libvirt's schema as a prefix does:
// it is not the element of the same local name.
TEST(RestoreCheckTest, RefusesElementsInADefaultNamespace) {
  EXPECT_TRUE(Refused(AddDevice("<hostdev xmlns='urn:x' mode='subsystem' type='pci' "
                                "managed='yes'><source><address domain='0x0000' bus='0x03' "
                                "slot='0x00' function='0x0'/></source></hostdev>"),
                      "/domain/devices/hostdev: <hostdev> (namespace 'urn:x') is outside "
                      "libvirt's domain schema"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<devices>", "<devices xmlns='urn:x'>"),
                      "/domain/devices: <devices> (namespace 'urn:x') is outside libvirt's "
                      "domain schema"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<interface type='bridge'>",
                           "<interface xmlns='http://libvirt.org/schemas/domain/qemu/1.0' "
                           "type='bridge'>"),
                      "/domain/devices/interface: <interface> is QEMU pass-through"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<domain type='kvm' id='7'>",
                           "<domain xmlns='urn:x' type='kvm' id='7'>"),
                      "/: the root element is not <domain>"));
}

TEST(RestoreCheckTest, RefusesQemuCommandline) {
  const std::string xml = Edit(
      Edit(kNovaLiveXml, "<domain type='kvm' id='7'>",
           "<domain type='kvm' id='7' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"),
      "</domain>",
      "  <qemu:commandline>\n    <qemu:arg value='-chardev'/>\n"
      "    <qemu:arg value='file,id=x,path=/etc/shadow'/>\n  </qemu:commandline>\n</domain>");
  EXPECT_TRUE(Refused(xml, "/domain/qemu:commandline: <qemu:commandline> is QEMU pass-through"));
  // Whatever the prefix, and wherever it is.
  EXPECT_TRUE(Refused(AddDevice("<q:commandline xmlns:q='http://libvirt.org/schemas/domain/qemu/"
                                "1.0'><q:arg value='-S'/></q:commandline>"),
                      "/domain/devices/q:commandline: <q:commandline> is QEMU pass-through"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "</domain>", "<x:hook xmlns:x='urn:example'/></domain>"),
                      "<x:hook> (namespace 'urn:example') is outside libvirt's domain schema"));
}

// A server a backup restored runs with the agent's own `-incoming defer` in its live XML: when it
// is protected again from there, that exactly is accepted (and never carried); anything more or
// else is pass-through as ever.
TEST(RestoreCheckTest, AcceptsOnlyTheAgentsOwnIncomingDeferOfARestoredDomain) {
  const auto with = [](const std::string& args) {
    return Edit(
        Edit(kNovaLiveXml, "<domain type='kvm' id='7'>",
             "<domain type='kvm' id='7' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"),
        "</domain>", "  <qemu:commandline>" + args + "</qemu:commandline>\n</domain>");
  };
  const std::string restored = with(
      "\n    <qemu:arg value='-incoming'/>\n    <qemu:arg value='defer'/>\n  ");
  EXPECT_TRUE(CheckRestorableDomain(restored, kNovaUuid, NovaHost()).ok())
      << CheckRestorableDomain(restored, kNovaUuid, NovaHost());
  auto clean = DeriveRestoreXml(restored, {{"vda", "/r/disk-vda.raw"}}, false, NovaHost());
  ASSERT_TRUE(clean.ok()) << clean.status();
  EXPECT_EQ(clean->find("incoming"), std::string::npos) << *clean;
  for (const std::string& args :
       {std::string("<qemu:arg value='-incoming'/><qemu:arg value='tcp:0:4444'/>"),
        std::string("<qemu:arg value='-incoming'/><qemu:arg value='defer'/><qemu:arg "
                    "value='-S'/>"),
        std::string("<qemu:arg value='defer'/><qemu:arg value='-incoming'/>"),
        std::string("<qemu:arg value='-incoming' x='1'/><qemu:arg value='defer'/>"),
        std::string("<qemu:env name='X' value='1'/><qemu:arg value='-incoming'/><qemu:arg "
                    "value='defer'/>"),
        std::string("")}) {
    EXPECT_TRUE(Refused(with(args), "/domain/qemu:commandline: <qemu:commandline> is QEMU "
                                    "pass-through"))
        << args;
  }
}

TEST(RestoreCheckTest, RefusesHostdev) {
  const std::string xml = AddDevice(
      "<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' "
      "bus='0x03' slot='0x00' function='0x0'/></source></hostdev>");
  const Status st = CheckRestorableDomain(xml, kNovaUuid, NovaHost());
  EXPECT_EQ(st.message(),
            "domain XML refused: /domain/devices/hostdev: host device passthrough (PCI, USB, SCSI "
            "or mediated devices of this host) is not restorable");
  EXPECT_TRUE(Refused(xml, "hostdev"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<interface type='bridge'>", "<interface type='hostdev'>"),
                      "/domain/devices/interface[1]/@type: an interface of type 'hostdev' hands a "
                      "device of this host to the guest"));
}

// A libvirt network NIC is whatever that network is on the backup: its forward mode can make it
// hostdev or macvtap passthrough. Nova (os-vif) never writes one.
TEST(RestoreCheckTest, RefusesLibvirtNetworkInterfaces) {
  std::string xml = Edit(kNovaLiveXml, "<interface type='bridge'>", "<interface type='network'>");
  xml = Edit(xml, "<source bridge='brq1a2b3c4d-5e'/>",
             "<source network='default' portid='11111111-2222-4333-8444-555555555555' "
             "bridge='virbr0'/>");
  EXPECT_TRUE(Refused(xml,
                      "/domain/devices/interface[1]/@type: an interface of type 'network' is "
                      "whatever the libvirt network of that name is on this host: its forward "
                      "mode can make it host device (hostdev) or macvtap passthrough"));
  // Nor can a bridge NIC name a network.
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<source bridge='brq1a2b3c4d-5e'/>",
                           "<source bridge='brq1a2b3c4d-5e' network='default'/>"),
                      "/domain/devices/interface[1]/source/@network: attribute 'network'"));
  // An ethernet NIC (os-vif plugs the tap) still is restorable.
  const std::string ethernet =
      Edit(Edit(kNovaLiveXml, "<interface type='bridge'>", "<interface type='ethernet'>"),
           "<source bridge='brq1a2b3c4d-5e'/>", "");
  EXPECT_TRUE(CheckRestorableDomain(ethernet, kNovaUuid, NovaHost()).ok())
      << CheckRestorableDomain(ethernet, kNovaUuid, NovaHost());
}

// OVS: Nova writes the Neutron port UUID as the virtualport's interfaceid (OVS's iface-id).
TEST(RestoreCheckTest, OvsInterfaceIdIsACanonicalPortUuid) {
  const auto ovs = [](const std::string& parameters) {
    return Edit(kNovaLiveXml, "<mtu size='1450'/>",
                "<mtu size='1450'/><virtualport type='openvswitch'><parameters " + parameters +
                    "/></virtualport>");
  };
  const std::string good = ovs("interfaceid='3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f'");
  EXPECT_TRUE(CheckRestorableDomain(good, kNovaUuid, NovaHost()).ok())
      << CheckRestorableDomain(good, kNovaUuid, NovaHost());
  for (const char* id : {"3C1D2E4F-5A6B-4C7D-8E9F-0A1B2C3D4E5F", "3c1d2e4f5a6b4c7d8e9f0a1b2c3d4e5f",
                         "port-1", "3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f,x", "",
                         "{3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f}"}) {
    EXPECT_TRUE(Refused(ovs(std::string("interfaceid='") + id + "'"),
                        "/domain/devices/interface[1]/virtualport/parameters/@interfaceid: '" +
                            std::string(id) + "' is not a Neutron port UUID"))
        << id;
  }
  EXPECT_TRUE(Refused(ovs("interfaceid='3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f' profileid='p'"),
                      "/domain/devices/interface[1]/virtualport/parameters/@profileid: attribute "
                      "'profileid' of <parameters> is not on the restore allow-list"));
}

TEST(RestoreCheckTest, NovasTapNamesOnly) {
  // ("tap" + port UUID)[:14], nova/network/model.py NIC_NAME_LEN.
  for (const char* tap : {"tap3c1d2e4f-5ab", "tap3c1d2e4f-5", "tap3c1d2e4f_5a", "tap3C1D2E4F-5A",
                          "tapx", "tap", "tap3c1d2e4f5ab"}) {
    EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<target dev='tap3c1d2e4f-5a'/>",
                             std::string("<target dev='") + tap + "'/>"),
                        "/domain/devices/interface[1]/target: tap name"))
        << tap;
  }
}

// What libvirt would default, or Nova always writes, is required: the check must not guess.
TEST(RestoreCheckTest, RefusesDefinitionsWithoutRequiredAttributes) {
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<domain type='kvm' id='7'>", "<domain id='7'>"),
                      "/domain/@type: the domain type (kvm or qemu) is required"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<domain type='kvm' id='7'>", "<domain type='xen'>"),
                      "/domain/@type: 'xen' is not one of the allowed values (kvm, qemu)"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<interface type='bridge'>", "<interface>"),
                      "/domain/devices/interface[1]/@type: an interface without a type"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<disk type='file' device='disk'>", "<disk type='file'>"),
                      "/domain/devices/disk[1]/@device: a disk without device='disk' (Nova "
                      "always writes it) is not restorable"));
  EXPECT_TRUE(Refused(
      Edit(kNovaLiveXml, "<type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>", ""),
      "/domain/os: no <type>hvm</type>"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "machine='pc-i440fx-7.2'>hvm</type>",
                           "machine='pc-i440fx-7.2'>exe</type>"),
                      "/domain/os/type: 'exe' is not one of the allowed values (hvm)"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "machine='pc-i440fx-7.2'>hvm</type>",
                           "machine='pc-i440fx-7.2'/>"),
                      "/domain/os/type: '' is not one of the allowed values (hvm)"));
}

TEST(RestoreCheckTest, RefusesAWatchdogThatDumpsCores) {
  EXPECT_TRUE(Refused(AddDevice("<watchdog model='i6300esb' action='dump'/>"),
                      "/domain/devices/watchdog[1]/@action: a watchdog action 'dump' makes "
                      "libvirtd (root) write guest memory cores"));
  for (const char* action : {"reset", "poweroff", "pause", "none"}) {
    const std::string xml =
        AddDevice(std::string("<watchdog model='i6300esb' action='") + action + "'/>");
    EXPECT_TRUE(CheckRestorableDomain(xml, kNovaUuid, NovaHost()).ok())
        << action << ": " << CheckRestorableDomain(xml, kNovaUuid, NovaHost());
  }
  EXPECT_TRUE(Refused(AddDevice("<watchdog model='i6300esb' action='explode'/>"),
                      "'explode' is not one of the allowed values"));
}

// A disk's <source> may hold the label the derivation writes (a restored domain's live XML),
// exactly, and no other.
TEST(RestoreCheckTest, DiskSourcesMayHoldOnlyTheNoRelabelDacLabel) {
  const auto labelled = [](const std::string& label) {
    return Edit(kNovaLiveXml,
                "/disk' index='2'/>", "/disk' index='2'>" + label + "</source>");
  };
  const std::string own = labelled("<seclabel model='dac' relabel='no'/>");
  EXPECT_TRUE(CheckRestorableDomain(own, kNovaUuid, NovaHost()).ok())
      << CheckRestorableDomain(own, kNovaUuid, NovaHost());
  const std::string own_reordered = labelled("<seclabel relabel=\"no\" model=\"dac\"></seclabel>");
  EXPECT_TRUE(CheckRestorableDomain(own_reordered, kNovaUuid, NovaHost()).ok())
      << CheckRestorableDomain(own_reordered, kNovaUuid, NovaHost());
  for (const char* label :
       {"<seclabel model='dac' relabel='yes'/>", "<seclabel model='selinux' relabel='no'/>",
        "<seclabel model='dac'/>", "<seclabel relabel='no'/>",
        "<seclabel model='dac' relabel='yes'><label>+0:+0</label></seclabel>",
        "<seclabel model='dac' relabel='no'><label>+0:+0</label></seclabel>",
        "<seclabel model='dac' relabel='no' labelskip='yes'/>",
        "<seclabel model='dac' relabel='no' xmlns:x='urn:x' x:y='1'/>",
        "<seclabel model='dac' relabel='no'/><seclabel model='apparmor' relabel='yes'/>",
        "<x:seclabel xmlns:x='urn:x' model='dac' relabel='no'/>"}) {
    EXPECT_TRUE(Refused(labelled(label),
                        "/domain/devices/disk[1]/source: a disk <source><seclabel> other than "
                        "<seclabel model='dac' relabel='no'/>"))
        << label;
  }
}

TEST(RestoreCheckTest, RefusesStaticAndNoSecurityLabels) {
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<seclabel type='dynamic' model='dac' relabel='yes'>",
                           "<seclabel type='static' model='dac' relabel='no'>"),
                      "/domain/seclabel[2]: a <seclabel type='static'> would set the confinement"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "</domain>", "<seclabel type='none'/></domain>"),
                      "<seclabel type='none'>"));
  // A per-device label.
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<source path='/dev/pts/3'/>",
                           "<source path='/dev/pts/3'><seclabel model='dac' relabel='no'/>"
                           "</source>"),
                      "/domain/devices/serial[1]/source/seclabel"));
}

TEST(RestoreCheckTest, RefusesLunDisks) {
  EXPECT_TRUE(Refused(AddDevice("<disk device='lun' type='block'><source dev='/dev/sda'/>"
                                "<target dev='sdb' bus='scsi'/></disk>"),
                      "/domain/devices/disk[2]/@device: a lun disk passes a host SCSI device"));
}

TEST(RestoreCheckTest, RefusesCdromsWithHostPaths) {
  EXPECT_TRUE(Refused(AddDevice("<disk device='cdrom' type='file'><source file='/etc/shadow'/>"
                                "<target dev='hdc' bus='ide'/><readonly/></disk>"),
                      "/domain/devices/disk[2]/@device: a cdrom"));
  // Nova's own config drive too: it is not replicated.
  EXPECT_TRUE(Refused(AddDevice("<disk type='file' device='cdrom'><driver name='qemu' "
                                "type='raw'/><source file='/var/lib/nova/instances/" +
                                std::string(kNovaUuid) +
                                "/disk.config'/><target dev='hda' bus='ide'/><readonly/></disk>"),
                      "config drive"));
  EXPECT_TRUE(Refused(AddDevice("<disk type='file' device='floppy'><target dev='fda'/></disk>"),
                      "a floppy"));
}

TEST(RestoreCheckTest, RefusesTwoDisksOnOneTarget) {
  EXPECT_TRUE(Refused(AddDevice("<disk type='file' device='disk'><target dev='vda' "
                                "bus='virtio'/></disk>"),
                      "/domain/devices/disk[2]: a second disk 'vda'"));
}

TEST(RestoreCheckTest, RefusesCustomEmulators) {
  for (const char* emulator :
       {"/tmp/qemu-system-x86_64", "/usr/bin/qemu-system-x86_64/../../../tmp/x", "/bin/sh",
        "/usr/bin/qemu-system-"}) {
    EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<emulator>/usr/bin/qemu-system-x86_64</emulator>",
                             std::string("<emulator>") + emulator + "</emulator>"),
                        "/domain/devices/emulator: a custom emulator"))
        << emulator;
  }
}

// Volume-backed disks are restorable: nothing of their storage is carried (the replica's raw
// image replaces it; RestoreXmlTest.VolumeDisksBecomeFileDisksOnTheReplica).
TEST(RestoreCheckTest, AcceptsBlockNetworkAndVolumeDisksButNoOtherType) {
  for (const char* disk :
       {"<disk type='block' device='disk'><driver name='qemu' type='raw'/><source "
        "dev='/dev/mapper/vg-vol'/><target dev='vdb' bus='virtio'/></disk>",
        "<disk type='network' device='disk'><driver name='qemu' type='raw'/><auth "
        "username='nova'><secret type='ceph' uuid='11111111-2222-4333-8444-555555555555'/>"
        "</auth><source protocol='rbd' name='vms/x_disk'><host name='10.0.0.1' port='6789'/>"
        "</source><target dev='vdb' bus='virtio'/></disk>",
        "<disk type='volume' device='disk'><source pool='p' volume='v'/><target dev='vdb' "
        "bus='virtio'/></disk>"}) {
    const std::string xml = AddDevice(disk);
    EXPECT_TRUE(CheckRestorableDomain(xml, kNovaUuid, NovaHost()).ok())
        << CheckRestorableDomain(xml, kNovaUuid, NovaHost());
  }
  EXPECT_TRUE(Refused(AddDevice("<disk type='dir' device='disk'><source dir='/etc'/><target "
                                "dev='vdb' bus='virtio'/></disk>"),
                      "/domain/devices/disk[2]/@type: a disk of type 'dir'"));
}

TEST(RestoreCheckTest, TheDomainMustBeTheServer) {
  Status st = CheckRestorableDomain(kNovaLiveXml, kOtherUuid, NovaHost());
  EXPECT_TRUE(absl::IsInvalidArgument(st));
  EXPECT_EQ(st.message(), "domain XML refused: /domain/uuid: the domain's UUID " +
                              std::string(kNovaUuid) + " is not the server's " + kOtherUuid);
  // Canonical lowercase only, on both sides.
  std::string upper = kNovaUuid;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  st = CheckRestorableDomain(kNovaLiveXml, upper, NovaHost());
  EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<uuid>0f2a6b3c", "<uuid>0F2A6B3C"),
                      "/domain/uuid: '0F2A6B3C-4d5e-4f60-8a7b-9c0d1e2f3a4b' is not a UUID in "
                      "canonical lowercase form"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<uuid>0f2a6b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b</uuid>",
                           "<uuid>0f2a6b3c4d5e4f608a7b9c0d1e2f3a4b</uuid>"),
                      "canonical lowercase form"));
  // One <uuid> only: libvirt and the check must not read different ones.
  EXPECT_TRUE(Refused(
      Edit(kNovaLiveXml, "</domain>", "<uuid>" + std::string(kOtherUuid) + "</uuid></domain>"),
      "/domain/uuid: expected exactly one <uuid>, found 2"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<uuid>0f2a6b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b</uuid>", ""),
                      "found 0"));
}

TEST(RestoreCheckTest, RefusesDoctypesAndEntities) {
  const std::string xxe =
      "<?xml version='1.0'?>\n<!DOCTYPE domain [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>\n" +
      Edit(kNovaLiveXml, "<name>instance-0000002a</name>", "<name>&x;</name>");
  EXPECT_TRUE(Refused(xxe, "/: a DOCTYPE (DTD or entity declarations) is not allowed"));
  const std::string laughs =
      "<!DOCTYPE d [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;'>]>\n" +
      Edit(kNovaLiveXml, "<nova:name>web-1</nova:name>", "<nova:name>&b;</nova:name>");
  EXPECT_TRUE(Refused(laughs, "DOCTYPE"));
  // Without a DOCTYPE an entity is undefined: the document does not parse.
  EXPECT_TRUE(
      Refused(Edit(kNovaLiveXml, "<nova:name>web-1</nova:name>", "<nova:name>&ext;</nova:name>"),
              "/: does not parse as XML: Entity 'ext' not defined"));
  EXPECT_TRUE(Refused("<domain", "does not parse as XML"));
  EXPECT_TRUE(Refused("<network/>", "/: the root element is not <domain>"));
}

TEST(RestoreCheckTest, RefusesDefinitionsOverOneMebibyte) {
  // Padding in a comment: well-formed and otherwise restorable.
  auto padded = [](size_t total) {
    std::string xml = kNovaLiveXml;
    const std::string open = "<!--", close = "-->";
    xml.insert(xml.find("<devices>"),
               open + std::string(total - xml.size() - open.size() - close.size(), 'x') + close);
    return xml;
  };
  EXPECT_TRUE(CheckRestorableDomain(padded(kMaxDomainXmlBytes), kNovaUuid, NovaHost()).ok());
  EXPECT_TRUE(Refused(padded(kMaxDomainXmlBytes + 1),
                      "/: the domain XML is 1048577 bytes, more than the 1048576 a restorable "
                      "definition may have"));
}

TEST(RestoreCheckTest, RefusesInsaneNames) {
  for (const char* name : {"", "../../etc/cron.d/x", "-x", ".hidden", "a b", "instance\n1",
                           "x2345678901234567890123456789012345678901234567890123456789012345"}) {
    EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<name>instance-0000002a</name>",
                             std::string("<name>") + name + "</name>"),
                        "/domain/name: "))
        << name;
  }
  EXPECT_TRUE(CheckRestorableDomain(Edit(kNovaLiveXml, "<name>instance-0000002a</name>",
                                         "<name>" + std::string(kNovaUuid) + "</name>"),
                                    kNovaUuid, NovaHost())
                  .ok());
}

TEST(RestoreCheckTest, RefusesConsolesOnHostPathsAndSockets) {
  EXPECT_TRUE(Refused(Edit(kRigLiveXml, "<source path='/var/log/libvirt/dtguest-console.log'",
                           "<source path='/etc/passwd'"),
                      "/domain/devices/serial[1]/source/@path: host file '/etc/passwd'", RigHost(),
                      kRigUuid));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "console.log' append='off'/>",
                           "disk' append='off'/>"),  // truncating the server's own disk
                      "/domain/devices/serial[1]/log/@file: host file"));
  EXPECT_TRUE(Refused(
      AddDevice("<serial type='tcp'><source mode='bind' host='10.0.0.5' service='10000'/>"
                "<protocol type='raw'/><target port='1'/></serial>"),
      "/domain/devices/serial[2]/@type: a tcp console binds or connects to a network address"));
  EXPECT_TRUE(Refused(AddDevice("<serial type='unix'><source mode='bind' path='/run/x.sock'/>"
                                "</serial>"),
                      "a unix socket console"));
  EXPECT_TRUE(Refused(AddDevice("<serial type='dev'><source path='/dev/ttyS0'/></serial>"),
                      "a console of type 'dev'"));
  EXPECT_TRUE(Refused(AddDevice("<channel type='pty'><target type='virtio' name='x'/></channel>"),
                      "a channel of type 'pty'"));
  // libvirt names the guest agent's socket after the channel: Nova's two names only.
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "name='org.qemu.guest_agent.0'", "name='../../x'"),
                      "/domain/devices/channel[1]/target/@name"));
}

TEST(RestoreCheckTest, RefusesHostResourcesNovaDoesNotGiveProtectedServers) {
  // NICs on host devices, sockets and scripts.
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<interface type='bridge'>", "<interface type='direct'>"),
                      "an interface of type 'direct'"));
  EXPECT_TRUE(
      Refused(Edit(kNovaLiveXml, "<interface type='bridge'>", "<interface type='vhostuser'>"),
              "a vhost-user interface"));
  EXPECT_TRUE(Refused(
      Edit(kNovaLiveXml, "<mtu size='1450'/>", "<mtu size='1450'/><script path='/tmp/x.sh'/>"),
      "/domain/devices/interface[1]/script: a host script run as root"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<target dev='tap3c1d2e4f-5a'/>", "<target dev='eth0'/>"),
                      "tap name 'eth0' is neither libvirt's"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<target dev='tap3c1d2e4f-5a'/>",
                           "<target dev='tap3c1d2e4f-5a' managed='no'/>"),
                      "/domain/devices/interface[1]/target/@managed"));
  // Host devices for entropy, firmware and memory.
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "/dev/urandom", "/dev/hwrng"),
                      "/domain/devices/rng[1]/backend: an rng backend 'random' on '/dev/hwrng'"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<boot dev='hd'/>",
                           "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd"
                           "</loader><boot dev='hd'/>"),
                      "/domain/os/loader: UEFI firmware"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<discard/>", "<discard/><hugepages/>"),
                      "/domain/memoryBacking/hugepages: huge pages"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<vendor>AMD</vendor>",
                           "<vendor>AMD</vendor><numa><cell id='0' cpus='0-1' memory='524288' "
                           "unit='KiB'/></numa>"),
                      "/domain/cpu/numa: NUMA cells"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<shares>2048</shares>",
                           "<shares>2048</shares><vcpupin vcpu='0' cpuset='3'/>"),
                      "/domain/cputune/vcpupin: CPU pinning"));
  EXPECT_TRUE(Refused(AddDevice("<filesystem type='mount'><source dir='/'/><target dir='r'/>"
                                "</filesystem>"),
                      "/domain/devices/filesystem: a directory of this host"));
  // Guest RAM that cannot be the replica RAM file.
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<access mode='shared'/>", ""),
                      "/domain/memoryBacking: guest RAM is not shared file-backed memory"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<source type='file'/>", "<source type='memfd'/>"),
                      "/domain/memoryBacking/source/@type: 'memfd' is not one of the allowed "
                      "values (file)"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<access mode='shared'/>", "<access mode='private'/>"),
                      "/domain/memoryBacking/access/@mode"));
}

TEST(RestoreCheckTest, RefusesAnythingTheAllowListDoesNotName) {
  EXPECT_TRUE(Refused(AddDevice("<sound model='ich6'/>"),
                      "/domain/devices/sound: <sound> is not on the restore allow-list "
                      "(agent/libvirt/restore_xml.cc)"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<disk type='file' device='disk'>",
                           "<disk type='file' device='disk' snapshot='external'>"),
                      "/domain/devices/disk[1]/@snapshot: attribute 'snapshot' of <disk> is not on "
                      "the restore allow-list"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<graphics type='vnc' port='5900' autoport='yes'",
                           "<graphics type='vnc' port='5900' autoport='yes' "
                           "xmlns:x='urn:x' x:hint='1'"),
                      "/domain/devices/graphics[1]/@hint: attribute in namespace 'urn:x'"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<acpi/>", "<acpi>on</acpi>"),
                      "/domain/features/acpi: <acpi> holds text 'on'"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "<vcpu placement='static'>2</vcpu>",
                           "<vcpu placement='static'>2</vcpu><vcpu>64</vcpu>"),
                      "/domain/vcpu: <vcpu> given more than once"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "autoport='yes'", "autoport='no'"),
                      "/domain/devices/graphics[1]/@autoport"));
  EXPECT_TRUE(Refused(Edit(kNovaLiveXml, "listen='0.0.0.0'>", "listen='vnc.example.org'>"),
                      "'vnc.example.org' is not an IP address"));
}

}  // namespace
}  // namespace novadt::libvirt
