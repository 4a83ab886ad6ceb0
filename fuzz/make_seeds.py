#!/usr/bin/env python3
"""Writes the seed corpora of fuzz/corpus/<target>/ (docs/fuzzing.md): small, valid or nearly
valid inputs of each format, so that fuzzing starts deep instead of from nothing. Bus seeds come
from the real oslo.messaging/Nova samples of tests/unit/bus/samples. Files are rewritten, never
deleted: inputs a fuzzer found (crash-*, regression-*) stay. Run from the repository root:
    python3 fuzz/make_seeds.py
"""
import json
import os
import struct
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, 'fuzz', 'corpus')


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def u8(v): return struct.pack('<B', v)
def u16(v): return struct.pack('<H', v)
def u32(v): return struct.pack('<I', v)
def u64(v): return struct.pack('<Q', v)
def be16(v): return struct.pack('>H', v)
def be32(v): return struct.pack('>I', v)
def be64(v): return struct.pack('>Q', v)


def fnv1a(b):
    h = 1469598103934665603
    for c in b:
        h = ((h ^ c) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def table(entries):
    body = 'nova-dt-protection-table 1\n' + ''.join(f'{u}\t{b}\t{i}\n' for u, b, i in entries)
    return body + f'end {len(entries)} {fnv1a(body.encode())}\n'


def bus():
    samples = os.path.join(ROOT, 'tests', 'unit', 'bus', 'samples')
    for name in sorted(os.listdir(samples)):
        if not name.endswith('.json'):
            continue
        body = json.load(open(os.path.join(samples, name)))['body']
        target = 'oslo_rpc' if name.startswith('rpc_') else 'nova_notification'
        put(target, name[:-5], body)
    envelope = lambda msg: json.dumps({'oslo.version': '2.0', 'oslo.message': json.dumps(msg)})
    put('oslo_rpc', 'version_1_3', envelope({'method': 'status', 'args': {}, 'version': '1.3',
                                              '_msg_id': 'm', '_reply_q': 'q', '_timeout': 30}))
    put('oslo_rpc', 'v1_no_envelope', json.dumps({'method': 'protect', 'namespace': None,
                                                  'args': {'uuid': 'u', 'backup': 'h'}}))


def protection_table():
    put('protection_table', 'empty', table([]))
    put('protection_table', 'two', table([('0b8f2d8e-1c1e-4d5a-9c39-2f6c0a1d7e11', 'compute-b', 0),
                                          ('7c1d9a3e-5b2f-4e6d-8a41-3e9f1b2c4d55', '*', 12)]))
    # The input that made std::stoull throw at every start (an incarnation beyond 64 bits).
    put('protection_table', 'crash-incarnation-overflow',
        table([('uuid-1', 'host-b', 18446744073709551616)]))


def replica_records():
    # Checksums are left 0: the target reseals each input before decoding it again.
    rec = b'NDTEREC1' + u32(1) + u64(42) + u64(1 << 20) + u32(1) + u64(777) + u64(0xdeadbeef)
    rec += u32(2) + u16(3) + b'vda' + u64(1 << 30) + u16(10) + b'vdb.data_1' + u64(12345)
    put('replica_records', 'epoch_rec', rec + u64(0))
    put('replica_records', 'epoch_rec_no_disks',
        b'NDTEREC1' + u32(1) + u64(0) + u64(4096) + u32(0) + u64(0) + u64(0) + u32(0) + u64(0))
    mark = b'NDTJMRK1' + u32(1) + u64(7) + u64(4112) + u64(99) + u32(0) + u64(12) + u64(34)
    put('replica_records', 'journal_commit', mark + u64(0))
    boot = b'NDTBOOT1' + u32(1) + u32(2) + u16(6) + b'kernel' + u64(65906612) + u64(0x1234)
    boot += u16(7) + b'ramdisk' + u64(1828210) + u64(99)
    put('replica_records', 'boot_rec', boot + u64(0))
    put('replica_records', 'boot_rec_none', b'NDTBOOT1' + u32(1) + u32(0) + u64(0))


def replica_journal():
    head = b'NDTJRNL1' + u64(5)
    pages = u8(1) + u32(2) + u64(3) + u64(63) + b'a' * 4096 + b'b' * 4096
    disk = u8(2) + u32(0) + u64(512) + u64(7) + b'written'
    tail = u8(2) + u32(1) + u64(4090) + u64(7) + b'lastbyt'
    put('replica_journal', 'pages_and_writes', head + pages + disk + tail)
    put('replica_journal', 'header_only', head)
    put('replica_journal', 'huge_page_count', head + u8(1) + u32(0xFFFFFFFF) + u64(0))


def nbd():
    ihaveopt = be64(0x49484156454F5054)
    def opt(code, data): return ihaveopt + be32(code) + be32(len(data)) + data
    def req(cmd, offset, length, flags=0, handle=1):
        return be32(0x25609513) + be16(flags) + be16(cmd) + be64(handle) + be64(offset) + be32(length)
    go = opt(7, be32(3) + b'vda' + be16(2) + be16(3) + be16(1))  # GO vda, BLOCK_SIZE + NAME
    flags = be32(3)  # FIXED_NEWSTYLE | NO_ZEROES
    session = (req(1, 4096, 8) + b'guestdat' + req(0, 4096, 8, handle=2) +
               req(6, 0, 65536, flags=2, handle=3) + req(3, 0, 0, handle=4) +
               req(1, 8192, 4, flags=1, handle=5) + b'fua!' + req(2, 0, 0, handle=6))
    put('nbd_server', 'go_session', flags + opt(8, b'') + go + session)
    put('nbd_server', 'export_name', be32(1) + opt(3, b'') + opt(1, b'vda') + req(0, 0, 512) +
        req(2, 0, 0))
    put('nbd_server', 'info_abort', flags + opt(6, be32(0) + be16(0)) + opt(2, b''))
    put('nbd_server', 'out_of_range', flags + go + req(1, (1 << 20) - 2, 4) + b'xxxx' +
        req(0, 1 << 63, 1) + req(4, 0, 1) + req(2, 0, 0))


def transport_url():
    for i, url in enumerate([
            'rabbit://nova:secret@10.0.0.1:5672,nova:secret@[fd00::2]:5672/nova?ssl=1',
            'kombu://guest:guest@localhost//',
            'rabbit://u%40x:p%2Fw@host:1_000/%2F',
            'rabbit://[v1.fe]/', 'rabbit://:@/', 'rabbit:///vhost;params#frag']):
        put('transport_url', f'url{i}', url)


def agent_config():
    sample = open(os.path.join(ROOT, 'deploy', 'nova-dt-agent.conf.sample'), 'rb').read()
    put('agent_config', 'sample', sample)
    put('agent_config', 'small', '''[DEFAULT]
host = compute-a
transport_url = rabbit://nova:secret@rabbit1:5672,nova:secret@rabbit2/
state_path = /var/lib/nova-dt
log_level = info

[replication]
epoch_ms = 1_00
default_backup_host = compute-b
reprotect_hosts = compute-b
  ; not a comment: a continuation

[peer]
peers = compute-b=10.0.0.2:7000
''')


def device_state():
    # Odd first byte: a previous state, encoding 1, and a real zstd frame (with checksum) of
    # the XOR delta against it; the same frame with the checksum flag removed.
    prev = bytes(range(256)) * 4
    delta = bytearray(len(prev))
    delta[100] = 7
    frame = subprocess.run(['zstd', '-q', '-c', '--check', '-1'], input=bytes(delta),
                           capture_output=True, check=True).stdout
    put('device_state', 'delta', b'\x01' + u16(len(prev)) + prev + u8(1) + frame)
    put('device_state', 'delta_no_checksum', b'\x01' + u16(len(prev)) + prev + u8(1) +
        frame[:4] + bytes([frame[4] & ~4]) + frame[5:-4])
    put('device_state', 'round_trip', b'\x00' + bytes(range(200)) * 3)


def replication_stream():
    # Inputs of a FuzzedDataProvider: any bytes are a stream; these only start the fuzzer off.
    put('replication_stream', 'ones', b'\x01' * 64)
    put('replication_stream', 'counting', bytes(range(256)))


for step in (bus, protection_table, replica_records, replica_journal, nbd, transport_url,
             agent_config, device_state, replication_stream):
    step()
