// Domain definitions for the restore allow-list tests (restore_xml.h): what Nova's libvirt driver
// generates, what libvirt prints for it while it runs (the primary's StreamOpen.domain_xml), and
// the test rig's guest.
#pragma once

namespace novadt::libvirt::fixtures {

// The server of the Nova fixtures.
inline constexpr char kNovaUuid[] = "0f2a6b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b";

// Exactly what Nova Zed's generator writes (nova/virt/libvirt/config.py, objects filled in as
// driver.py's _get_guest_config does for a kvm host with [libvirt] file_backed_memory, a Linux
// bridge port, a pty console with its log, VNC, the default video, USB tablet and rng, and an image
// with hw_qemu_guest_agent=yes), produced with Debian's python3-nova.
inline constexpr char kNovaGeneratedXml[] = R"(<domain type="kvm">
  <uuid>0f2a6b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b</uuid>
  <name>instance-0000002a</name>
  <memory>524288</memory>
  <memoryBacking>
    <source type="file"/>
    <access mode="shared"/>
    <allocation mode="immediate"/>
    <discard/>
  </memoryBacking>
  <vcpu>2</vcpu>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:package version="26.2.0"/>
      <nova:name>web-1</nova:name>
      <nova:creationTime>2026-01-01 00:00:00</nova:creationTime>
      <nova:flavor name="dt.small">
        <nova:memory>512</nova:memory>
        <nova:disk>1</nova:disk>
        <nova:swap>0</nova:swap>
        <nova:ephemeral>0</nova:ephemeral>
        <nova:vcpus>2</nova:vcpus>
      </nova:flavor>
      <nova:owner>
        <nova:user uuid="u1">demo</nova:user>
        <nova:project uuid="p1">demo</nova:project>
      </nova:owner>
      <nova:root type="image" uuid="7d3f0c1e-2b4a-4c5d-8e6f-0a1b2c3d4e5f"/>
      <nova:ports>
        <nova:port uuid="3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f">
          <nova:ip type="fixed" address="10.0.0.12" ipVersion="4"/>
        </nova:port>
      </nova:ports>
    </nova:instance>
  </metadata>
  <sysinfo type="smbios">
    <system>
      <entry name="manufacturer">OpenStack Foundation</entry>
      <entry name="product">OpenStack Nova</entry>
      <entry name="version">26.2.0</entry>
      <entry name="serial">0f2a6b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b</entry>
      <entry name="uuid">0f2a6b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b</entry>
      <entry name="family">Virtual Machine</entry>
    </system>
  </sysinfo>
  <os>
    <type arch="x86_64" machine="pc">hvm</type>
    <boot dev="hd"/>
    <smbios mode="sysinfo"/>
  </os>
  <features>
    <acpi/>
    <apic/>
    <vmcoreinfo/>
  </features>
  <cputune>
    <shares>2048</shares>
  </cputune>
  <clock offset="utc">
    <timer name="pit" tickpolicy="delay"/>
    <timer name="rtc" tickpolicy="catchup"/>
    <timer name="hpet" present="no"/>
  </clock>
  <cpu mode="host-model" match="exact">
    <topology sockets="2" cores="1" threads="1"/>
  </cpu>
  <devices>
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2" cache="none" discard="ignore"/>
      <source file="/var/lib/nova/instances/0f2a6b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b/disk"/>
      <target dev="vda" bus="virtio"/>
    </disk>
    <interface type="bridge">
      <mac address="fa:16:3e:12:34:56"/>
      <model type="virtio"/>
      <source bridge="brq1a2b3c4d-5e"/>
      <mtu size="1450"/>
      <target dev="tap3c1d2e4f-5a"/>
    </interface>
    <serial type="pty">
      <log file="/var/lib/nova/instances/0f2a6b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b/console.log" append="off"/>
    </serial>
    <graphics type="vnc" autoport="yes" listen="0.0.0.0"/>
    <video>
      <model type="virtio"/>
    </video>
    <input type="tablet" bus="usb"/>
    <channel type="unix">
      <source mode="bind" path="/var/lib/libvirt/qemu/org.qemu.guest_agent.0.instance-0000002a.sock"/>
      <target type="virtio" name="org.qemu.guest_agent.0"/>
    </channel>
    <rng model="virtio">
      <backend model="random">/dev/urandom</backend>
    </rng>
    <controller type="usb" index="0"/>
    <memballoon model="virtio">
      <stats period="10"/>
    </memballoon>
  </devices>
</domain>
)";

// The same server while it runs, as libvirt 9.0 prints it (virDomainGetXMLDesc, flags 0) on a
// system libvirtd: the CPU model expanded, controllers, aliases, addresses, consoles, pty paths,
// the disk's index and backing chain (qcow2 on a _base image), the guest agent socket libvirt
// chose, security labels, the cgroup partition and the VNC port of this start.
inline constexpr char kNovaLiveXml[] = R"(<domain type='kvm' id='7'>
  <name>instance-0000002a</name>
  <uuid>0f2a6b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b</uuid>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:package version="26.2.0"/>
      <nova:name>web-1</nova:name>
      <nova:creationTime>2026-01-01 00:00:00</nova:creationTime>
      <nova:flavor name="dt.small">
        <nova:memory>512</nova:memory>
        <nova:disk>1</nova:disk>
        <nova:swap>0</nova:swap>
        <nova:ephemeral>0</nova:ephemeral>
        <nova:vcpus>2</nova:vcpus>
      </nova:flavor>
      <nova:owner>
        <nova:user uuid="u1">demo</nova:user>
        <nova:project uuid="p1">demo</nova:project>
      </nova:owner>
      <nova:root type="image" uuid="7d3f0c1e-2b4a-4c5d-8e6f-0a1b2c3d4e5f"/>
      <nova:ports>
        <nova:port uuid="3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f">
          <nova:ip type="fixed" address="10.0.0.12" ipVersion="4"/>
        </nova:port>
      </nova:ports>
    </nova:instance>
  </metadata>
  <memory unit='KiB'>524288</memory>
  <currentMemory unit='KiB'>524288</currentMemory>
  <memoryBacking>
    <source type='file'/>
    <access mode='shared'/>
    <allocation mode='immediate'/>
    <discard/>
  </memoryBacking>
  <vcpu placement='static'>2</vcpu>
  <cputune>
    <shares>2048</shares>
  </cputune>
  <resource>
    <partition>/machine</partition>
  </resource>
  <sysinfo type='smbios'>
    <system>
      <entry name='manufacturer'>OpenStack Foundation</entry>
      <entry name='product'>OpenStack Nova</entry>
      <entry name='version'>26.2.0</entry>
      <entry name='serial'>0f2a6b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b</entry>
      <entry name='uuid'>0f2a6b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b</entry>
      <entry name='family'>Virtual Machine</entry>
    </system>
  </sysinfo>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <boot dev='hd'/>
    <smbios mode='sysinfo'/>
  </os>
  <features>
    <acpi/>
    <apic/>
    <vmcoreinfo state='on'/>
  </features>
  <cpu mode='custom' match='exact' check='full'>
    <model fallback='forbid'>EPYC</model>
    <vendor>AMD</vendor>
    <topology sockets='2' dies='1' cores='1' threads='1'/>
    <feature policy='require' name='acpi'/>
    <feature policy='require' name='ss'/>
    <feature policy='require' name='hypervisor'/>
    <feature policy='require' name='umip'/>
    <feature policy='disable' name='vme'/>
    <feature policy='disable' name='rdseed'/>
    <feature policy='disable' name='nrip-save'/>
  </cpu>
  <clock offset='utc'>
    <timer name='pit' tickpolicy='delay'/>
    <timer name='rtc' tickpolicy='catchup'/>
    <timer name='hpet' present='no'/>
  </clock>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none' discard='ignore'/>
      <source file='/var/lib/nova/instances/0f2a6b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b/disk' index='2'/>
      <backingStore type='file' index='3'>
        <format type='raw'/>
        <source file='/var/lib/nova/instances/_base/9a8b7c6d5e4f'/>
        <backingStore/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>
    </disk>
    <controller type='usb' index='0' model='piix3-uhci'>
      <alias name='usb'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x2'/>
    </controller>
    <controller type='pci' index='0' model='pci-root'>
      <alias name='pci.0'/>
    </controller>
    <controller type='virtio-serial' index='0'>
      <alias name='virtio-serial0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/>
    </controller>
    <interface type='bridge'>
      <mac address='fa:16:3e:12:34:56'/>
      <source bridge='brq1a2b3c4d-5e'/>
      <target dev='tap3c1d2e4f-5a'/>
      <model type='virtio'/>
      <mtu size='1450'/>
      <alias name='net0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
    </interface>
    <serial type='pty'>
      <source path='/dev/pts/3'/>
      <log file='/var/lib/nova/instances/0f2a6b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b/console.log' append='off'/>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
      <alias name='serial0'/>
    </serial>
    <console type='pty' tty='/dev/pts/3'>
      <source path='/dev/pts/3'/>
      <log file='/var/lib/nova/instances/0f2a6b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b/console.log' append='off'/>
      <target type='serial' port='0'/>
      <alias name='serial0'/>
    </console>
    <channel type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-7-instance-0000002a/org.qemu.guest_agent.0'/>
      <target type='virtio' name='org.qemu.guest_agent.0' state='connected'/>
      <alias name='channel0'/>
      <address type='virtio-serial' controller='0' bus='0' port='1'/>
    </channel>
    <input type='tablet' bus='usb'>
      <alias name='input0'/>
      <address type='usb' bus='0' port='1'/>
    </input>
    <input type='mouse' bus='ps2'>
      <alias name='input1'/>
    </input>
    <input type='keyboard' bus='ps2'>
      <alias name='input2'/>
    </input>
    <graphics type='vnc' port='5900' autoport='yes' listen='0.0.0.0'>
      <listen type='address' address='0.0.0.0'/>
    </graphics>
    <audio id='1' type='none'/>
    <video>
      <model type='virtio' heads='1' primary='yes'/>
      <alias name='video0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>
    </video>
    <memballoon model='virtio'>
      <stats period='10'/>
      <alias name='balloon0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>
    </memballoon>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
      <alias name='rng0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x06' function='0x0'/>
    </rng>
  </devices>
  <seclabel type='dynamic' model='apparmor' relabel='yes'>
    <label>libvirt-0f2a6b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b</label>
    <imagelabel>libvirt-0f2a6b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b</imagelabel>
  </seclabel>
  <seclabel type='dynamic' model='dac' relabel='yes'>
    <label>+64055:+994</label>
    <imagelabel>+64055:+994</imagelabel>
  </seclabel>
</domain>
)";

// The rig's test guest (tests/rig/rig guest-xml: direct kernel boot from the build's guest
// directory, a file console in /var/log/libvirt) while it runs, as libvirt 9.0 prints it.
inline constexpr char kRigUuid[] = "6a1f8a3e-0b7c-4e8d-9f10-2b3c4d5e6f70";
inline constexpr char kRigGuestDir[] = "/opt/nova-dt/build/guest";
inline constexpr char kRigLiveXml[] = R"(<domain type='qemu' id='3'>
  <name>dtguest</name>
  <uuid>6a1f8a3e-0b7c-4e8d-9f10-2b3c4d5e6f70</uuid>
  <memory unit='KiB'>262144</memory>
  <currentMemory unit='KiB'>262144</currentMemory>
  <memoryBacking>
    <source type='file'/>
    <access mode='shared'/>
  </memoryBacking>
  <vcpu placement='static'>1</vcpu>
  <resource>
    <partition>/machine</partition>
  </resource>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <kernel>/opt/nova-dt/build/guest/vmlinux</kernel>
    <initrd>/opt/nova-dt/build/guest/initrd.img</initrd>
    <cmdline>console=ttyS0 panic=-1 dt.ip=198.18.1.50/24 dt.observer=198.18.1.1:9000</cmdline>
    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <cpu mode='custom' match='exact' check='full'>
    <model fallback='forbid'>qemu64</model>
    <feature policy='require' name='x2apic'/>
    <feature policy='require' name='hypervisor'/>
    <feature policy='require' name='lahf_lm'/>
    <feature policy='disable' name='svm'/>
  </cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/libvirt/images/dtguest.raw' index='1'/>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
    </disk>
    <controller type='usb' index='0' model='none'>
      <alias name='usb'/>
    </controller>
    <controller type='pci' index='0' model='pci-root'>
      <alias name='pci.0'/>
    </controller>
    <interface type='bridge'>
      <mac address='52:54:00:5d:41:8c'/>
      <source bridge='br0'/>
      <target dev='vnet0'/>
      <model type='virtio'/>
      <driver name='qemu'/>
      <alias name='net0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>
    </interface>
    <serial type='file'>
      <source path='/var/log/libvirt/dtguest-console.log' append='on'/>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
      <alias name='serial0'/>
    </serial>
    <console type='file'>
      <source path='/var/log/libvirt/dtguest-console.log' append='on'/>
      <target type='serial' port='0'/>
      <alias name='serial0'/>
    </console>
    <input type='mouse' bus='ps2'>
      <alias name='input0'/>
    </input>
    <input type='keyboard' bus='ps2'>
      <alias name='input1'/>
    </input>
    <audio id='1' type='none'/>
    <video>
      <model type='none'/>
      <alias name='video0'/>
    </video>
    <memballoon model='none'/>
  </devices>
  <seclabel type='dynamic' model='dac' relabel='yes'>
    <label>+64055:+994</label>
    <imagelabel>+64055:+994</imagelabel>
  </seclabel>
</domain>
)";

}  // namespace novadt::libvirt::fixtures
