// What a backup host makes of a peer's domain definition (StreamOpen.domain_xml, the primary's
// live libvirt XML): the check made when a replication stream opens, and the definitions the
// backup starts and defines at failover. A peer's definition is never run as given: both walk one
// allow-list (kAllowList in restore_xml.cc) of what Nova's libvirt driver generates and libvirt
// adds to a running domain, so whatever passes the check is what the derivation carries, and
// nothing else. Pure functions over libxml2; thread-safe.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <string_view>

#include "agent/common/status.h"
#include "agent/config/config.h"

namespace novadt::libvirt {

// A peer's domain XML larger than this is refused: 1 MiB (Nova's definitions are 5-20 KiB, with
// libvirt's live additions and the expanded CPU model well under 64 KiB).
inline constexpr size_t kMaxDomainXmlBytes = size_t{1} << 20;

// Whether the backup may ever start a domain from a peer's definition `domain_xml` for the server
// `instance_uuid`. Call it when a replication stream opens, before anything of the stream (replica
// files, registry entries) is made; a refusal refuses the stream with the returned message.
//
// OK when the definition:
//  - is at most kMaxDomainXmlBytes of UTF-8 XML without a DOCTYPE (so without a DTD or entity
//    declarations; parsed with no network access and no entity substitution);
//  - is a <domain type='kvm'|'qemu'> (the type attribute required) whose <uuid> is exactly `instance_uuid` in canonical lowercase
//    form (8-4-4-4-12 hex digits), so the domain a failover starts is the one it destroys when it
//    fails, and whose <name> is 1..64 characters of [A-Za-z0-9_.+-] starting with a letter or
//    digit;
//  - holds an <os><type>hvm</type> and only allow-listed elements and attributes with allowed
//    values (restore_xml.cc), the attributes that decide what a device is present (a disk's
//    device, an interface's type): among others disks of device='disk' (of type file, block,
//    network or volume: each becomes a file disk on the replica image), bridge or ethernet NICs
//    (Nova's tap names, an OVS <virtualport> whose interfaceid is a canonical port UUID), pty or
//    file serial consoles, VNC/SPICE graphics, video, input, memballoon, rng on /dev/urandom or
//    QEMU's builtin source, watchdog (any action but 'dump'), controllers, the QEMU guest agent
//    channel, and <metadata>, whose content is accepted unread (only Nova's <nova:instance> is
//    carried, when it holds nothing but Nova's elements; everything else in it is dropped).
//    Libvirt's runtime parts (domain id, generated aliases and tap names, pty paths, dynamic
//    <seclabel>s, the disk's source, credentials, backing chain and block-copy <mirror>,
//    <resource>, a standard <emulator>) are accepted and never carried; a disk's <source> may
//    hold exactly <seclabel model='dac' relabel='no'/> (what the derivation writes) and no other
//    label;
//  - names host files (kernel and initrd of a direct kernel boot, a serial console's file or log)
//    only as Nova does: <cfg.instances_path>/<uuid>/kernel, .../ramdisk, .../console.log, or as
//    any file below one of cfg.restore_file_dirs (paths as libvirtd sees them: absolute, without
//    '.', '..' or empty components);
//  - has shared file-backed guest RAM (<memoryBacking><source type='file'/><access
//    mode='shared'/>) and no NUMA cells (the replica RAM file becomes the guest's RAM).
// InvalidArgument otherwise (the definition itself is refused: retrying cannot help), the message
// naming the offending element or attribute by its path, e.g. "domain XML refused:
// /domain/devices/hostdev: host device passthrough ... is not restorable". Refused among others:
// <qemu:commandline> (but the agent's own `-incoming defer` of a domain it restored) and every
// other element outside libvirt's namespace that is not inside <metadata>, <hostdev>, static or
// 'none' <seclabel>s, lun/cdrom/floppy disks and disks without a device attribute, a
// non-standard <emulator>, UEFI <loader>/<nvram>, TCP/unix/device consoles, network, direct,
// hostdev or vhost-user NICs and <script>s, a watchdog that dumps guest cores on this host.
Status CheckRestorableDomain(std::string_view domain_xml, std::string_view instance_uuid,
                             const config::LibvirtSection& cfg);

// What a definition names in Nova's instance directory of the server `instance_uuid`,
// `<cfg.instances_path>/<instance_uuid>/` (a path below a cfg.restore_file_dirs directory is the
// operator's, present on every host, and does not count — as for CheckRestorableDomain()).
struct InstanceDirUse {
  bool kernel = false;   // <os><kernel> is the instance's own `kernel`
  bool ramdisk = false;  // <os><initrd> is the instance's own `ramdisk`
  // Any file there: kernel, ramdisk, or a serial console's or console's log or file
  // (`console.log`), which libvirt creates in that directory when the domain starts.
  bool any = false;
  bool operator==(const InstanceDirUse&) const = default;
};
// The boot files a primary sends with its replication stream (kernel, ramdisk: they exist only
// on the host Nova booted the server on), and whether a restore must make the instance directory
// on the backup (docs/compute-host.md, "Boot files"). Only exact paths count (what
// CheckRestorableDomain() accepts). InvalidArgument for a definition that does not parse (with
// the bounds of a peer's: kMaxDomainXmlBytes, no DOCTYPE).
StatusOr<InstanceDirUse> InstanceDirFiles(std::string_view domain_xml,
                                          std::string_view instance_uuid,
                                          const config::LibvirtSection& cfg);

// The backup's own definition of the peer's domain `domain_xml` (core::RestoreSpec::domain_xml):
// a new document holding only what CheckRestorableDomain() accepts and the allow-list marks to
// carry, with the domain's name, UUID, memory and devices (addresses kept: the restored QEMU must
// lay out its devices as the primary's did). Every disk becomes a raw file disk on
// `disk_images[target dev]` (paths as libvirtd sees them), its <source> holding
// <seclabel model='dac' relabel='no'/>: the agent has given the replica images to QEMU's user
// already, and libvirtd must not chown by a path below a directory QEMU's user owns. With `incoming` true the result also
// holds the agent's own <qemu:commandline> `-incoming defer` (the namespace declared on <domain>):
// the restore XML for virDomainCreateXML; false gives the clean XML for virDomainDefineXML.
// InvalidArgument whenever CheckRestorableDomain() would refuse the definition (the UUID is not
// compared: it is taken from the XML), or when disks and `disk_images` do not match one to one.
StatusOr<std::string> DeriveRestoreXml(std::string_view domain_xml,
                                       const std::map<std::string, std::string>& disk_images,
                                       bool incoming, const config::LibvirtSection& cfg);

}  // namespace novadt::libvirt
