// DiskSources and MemoryBytes: what a host reads of a domain definition to keep a copy's RAM
// file and raw disks as a replica basis (libxml2 only; no libvirt connection).
#include "agent/libvirt/domain_xml.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace novadt::libvirt {
namespace {

// A domain as libvirt prints it (trimmed): a raw file disk, a qcow2 file disk, a block disk, a
// network disk and a cdrom.
constexpr char kDomainXml[] = R"(<domain type='kvm' id='7'>
  <name>instance-0000002a</name>
  <uuid>6a1f8a3e-0b7c-4e8d-9f10-2b3c4d5e6f70</uuid>
  <memory unit='KiB'>262144</memory>
  <currentMemory unit='KiB'>262144</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source file='/var/lib/nova/instances/x/disk.raw'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/nova/instances/x/disk.eph0' index='2'/>
      <backingStore type='file' index='3'>
        <format type='raw'/>
        <source file='/var/lib/nova/instances/_base/abc'/>
      </backingStore>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/mapper/vol-x'/>
      <target dev='vdc' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/nova/instances/x/disk.config'/>
      <target dev='hda' bus='ide'/>
      <readonly/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='rbd' name='vms/x_disk.swap'/>
      <target dev='vdd' bus='virtio'/>
    </disk>
  </devices>
</domain>
)";

// A minimal domain around `devices` and `memory` (both verbatim XML).
std::string Domain(const std::string& memory, const std::string& devices = "") {
  return "<domain type='kvm'><name>d</name>" + memory + "<devices>" + devices +
         "</devices></domain>";
}

TEST(DomainXmlTest, DiskSourcesListsFileDisksWithTheirFormat) {
  auto disks = DiskSources(kDomainXml);
  ASSERT_TRUE(disks.ok()) << disks.status();
  ASSERT_EQ(disks->size(), 4u) << "the cdrom is not listed";
  EXPECT_EQ((*disks)[0].target, "vda");
  EXPECT_EQ((*disks)[0].file, "/var/lib/nova/instances/x/disk.raw");
  EXPECT_EQ((*disks)[0].format, "raw");
  EXPECT_EQ((*disks)[1].target, "vdb");
  EXPECT_EQ((*disks)[1].file, "/var/lib/nova/instances/x/disk.eph0") << "not its backing file";
  EXPECT_EQ((*disks)[1].format, "qcow2");
}

TEST(DomainXmlTest, DiskSourcesGivesNoFileForBlockAndNetworkDisks) {
  auto disks = DiskSources(kDomainXml);
  ASSERT_TRUE(disks.ok()) << disks.status();
  ASSERT_EQ(disks->size(), 4u);
  EXPECT_EQ((*disks)[2].target, "vdc");
  EXPECT_EQ((*disks)[2].file, "") << "type='block' is not a file";
  EXPECT_EQ((*disks)[2].format, "raw");
  EXPECT_EQ((*disks)[3].target, "vdd");
  EXPECT_EQ((*disks)[3].file, "") << "type='network' is not a file";
  EXPECT_EQ((*disks)[3].format, "raw");
  // Agrees with DiskTargets.
  auto targets = DiskTargets(kDomainXml);
  ASSERT_TRUE(targets.ok()) << targets.status();
  EXPECT_EQ(*targets, (std::vector<std::string>{"vda", "vdb", "vdc", "vdd"}));
}

TEST(DomainXmlTest, DiskSourcesLeavesOutCdromsAndFormatWhenNotGiven) {
  auto only_cdrom = DiskSources(Domain("", R"(
      <disk type='file' device='cdrom'>
        <source file='/iso/boot.iso'/>
        <target dev='hdc' bus='ide'/>
      </disk>)"));
  ASSERT_TRUE(only_cdrom.ok()) << only_cdrom.status();
  EXPECT_TRUE(only_cdrom->empty());

  auto no_driver = DiskSources(Domain("", R"(
      <disk type='file' device='disk'>
        <source file='/images/a.img'/>
        <target dev='sda' bus='scsi'/>
      </disk>
      <disk type='file' device='disk'>
        <driver name='qemu' type='raw'/>
        <target dev='sdb' bus='scsi'/>
      </disk>)"));
  ASSERT_TRUE(no_driver.ok()) << no_driver.status();
  ASSERT_EQ(no_driver->size(), 2u);
  EXPECT_EQ((*no_driver)[0].target, "sda");
  EXPECT_EQ((*no_driver)[0].file, "/images/a.img");
  EXPECT_EQ((*no_driver)[0].format, "") << "no driver type given";
  EXPECT_EQ((*no_driver)[1].target, "sdb");
  EXPECT_EQ((*no_driver)[1].file, "") << "a file disk without a source (empty)";

  auto no_disks = DiskSources(Domain(""));
  ASSERT_TRUE(no_disks.ok()) << no_disks.status();
  EXPECT_TRUE(no_disks->empty());
}

TEST(DomainXmlTest, DiskSourcesOfADiskWithoutTargetIsInvalidArgument) {
  auto disks = DiskSources(Domain("", R"(
      <disk type='file' device='disk'>
        <driver name='qemu' type='raw'/>
        <source file='/images/a.img'/>
        <target dev='vda' bus='virtio'/>
      </disk>
      <disk type='file' device='disk'>
        <driver name='qemu' type='raw'/>
        <source file='/images/b.img'/>
      </disk>)"));
  EXPECT_TRUE(absl::IsInvalidArgument(disks.status())) << disks.status();
  // An empty dev is no target either.
  disks = DiskSources(Domain("", R"(
      <disk type='file' device='disk'>
        <source file='/images/b.img'/>
        <target dev='' bus='virtio'/>
      </disk>)"));
  EXPECT_TRUE(absl::IsInvalidArgument(disks.status())) << disks.status();
  // A cdrom without target is not looked at.
  disks = DiskSources(Domain("", "<disk type='file' device='cdrom'/>"));
  ASSERT_TRUE(disks.ok()) << disks.status();
  EXPECT_TRUE(disks->empty());
}

TEST(DomainXmlTest, UnparsableXmlIsInvalidArgument) {
  for (const std::string& xml : {std::string("<domain><devices><disk"), std::string(""),
                                std::string("not xml at all"),
                                std::string("<domain></devices></domain>")}) {
    auto disks = DiskSources(xml);
    EXPECT_TRUE(absl::IsInvalidArgument(disks.status())) << "'" << xml << "': " << disks.status();
    auto memory = MemoryBytes(xml);
    EXPECT_TRUE(absl::IsInvalidArgument(memory.status())) << "'" << xml << "': "
                                                          << memory.status();
  }
}

TEST(DomainXmlTest, MemoryBytesDefaultsToKiB) {
  auto bytes = MemoryBytes(kDomainXml);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, 262144ull * 1024) << "unit='KiB'";
  bytes = MemoryBytes(Domain("<memory>524288</memory>"));
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, 524288ull * 1024) << "no unit: KiB";
  // <currentMemory> is not <memory>.
  bytes = MemoryBytes(Domain("<memory unit='KiB'>1024</memory>"
                             "<currentMemory unit='KiB'>512</currentMemory>"));
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, 1024ull * 1024);
}

TEST(DomainXmlTest, MemoryBytesScalesByItsUnit) {
  const struct {
    const char* unit;
    uint64_t number;
    uint64_t bytes;
  } kCases[] = {
      {"b", 268435456, 268435456ull},
      {"bytes", 4096, 4096ull},
      {"KB", 1000, 1000ull * 1000},
      {"k", 2048, 2048ull * 1024},
      {"KiB", 2048, 2048ull * 1024},
      {"MB", 512, 512ull * 1000 * 1000},
      {"M", 512, 512ull << 20},
      {"MiB", 256, 256ull << 20},
      {"GB", 4, 4ull * 1000 * 1000 * 1000},
      {"G", 4, 4ull << 30},
      {"GiB", 8, 8ull << 30},
      {"TB", 2, 2ull * 1000 * 1000 * 1000 * 1000},
      {"T", 3, 3ull << 40},
      {"TiB", 1, 1ull << 40},
  };
  for (const auto& c : kCases) {
    auto bytes = MemoryBytes(Domain(std::string("<memory unit='") + c.unit + "'>" +
                                    std::to_string(c.number) + "</memory>"));
    ASSERT_TRUE(bytes.ok()) << c.unit << ": " << bytes.status();
    EXPECT_EQ(*bytes, c.bytes) << c.unit;
  }
}

TEST(DomainXmlTest, MemoryBytesAllowsWhitespaceAroundTheNumber) {
  auto bytes = MemoryBytes(Domain("<memory unit='MiB'>\n    256 \t\n  </memory>"));
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, 256ull << 20);
  bytes = MemoryBytes(Domain("<memory unit='GiB'> 2</memory>"));
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, 2ull << 30);
}

TEST(DomainXmlTest, MissingMemoryIsInvalidArgument) {
  for (const std::string& xml :
       {Domain(""), Domain("<memory unit='KiB'></memory>"), Domain("<memory unit='KiB'/>"),
        Domain("<memory>   </memory>"), Domain("<currentMemory>1024</currentMemory>"),
        std::string("<domain><name>d</name><devices><memory>1024</memory></devices></domain>")}) {
    auto bytes = MemoryBytes(xml);
    EXPECT_TRUE(absl::IsInvalidArgument(bytes.status())) << xml << ": " << bytes.status();
  }
}

TEST(DomainXmlTest, NonNumericMemoryIsInvalidArgument) {
  for (const char* value : {"lots", "12abc", "1.5", "0x400", "1 024", "256MiB", "abc123"}) {
    auto bytes = MemoryBytes(Domain(std::string("<memory unit='MiB'>") + value + "</memory>"));
    EXPECT_TRUE(absl::IsInvalidArgument(bytes.status())) << "'" << value << "': "
                                                         << bytes.status();
  }
}

TEST(DomainXmlTest, MemoryWithAnUnknownUnitIsInvalidArgument) {
  for (const char* unit : {"PiB", "kib", "mib", "pages", "KiB ", "X"}) {
    auto bytes = MemoryBytes(Domain(std::string("<memory unit='") + unit + "'>1024</memory>"));
    EXPECT_TRUE(absl::IsInvalidArgument(bytes.status())) << "unit '" << unit << "': "
                                                         << bytes.status();
  }
}

// std::stoull would take a leading '-' and wrap.
TEST(DomainXmlTest, NegativeMemoryIsInvalidArgument) {
  for (const char* value : {"-1", "-262144", " -5 "}) {
    auto bytes = MemoryBytes(Domain(std::string("<memory unit='KiB'>") + value + "</memory>"));
    EXPECT_TRUE(absl::IsInvalidArgument(bytes.status()))
        << "'" << value << "': " << (bytes.ok() ? std::to_string(*bytes) : bytes.status().ToString());
  }
}

// A size beyond 2^64 bytes must not wrap to a small one.
TEST(DomainXmlTest, MemoryBeyondSixtyFourBitsIsInvalidArgument) {
  // 2^24 TiB = 2^64 bytes wraps to 0; 2^24 + 1 TiB wraps to 1 TiB.
  for (const char* xml : {"<memory unit='TiB'>16777216</memory>",
                          "<memory unit='TiB'>16777217</memory>",
                          "<memory unit='KiB'>18446744073709551615</memory>"}) {
    auto bytes = MemoryBytes(Domain(xml));
    EXPECT_TRUE(absl::IsInvalidArgument(bytes.status()))
        << xml << ": " << (bytes.ok() ? std::to_string(*bytes) : bytes.status().ToString());
  }
  // A number beyond 64 bits at all is refused already.
  auto bytes = MemoryBytes(Domain("<memory unit='b'>99999999999999999999999</memory>"));
  EXPECT_TRUE(absl::IsInvalidArgument(bytes.status())) << bytes.status();
}

}  // namespace
}  // namespace novadt::libvirt
