// An NBD server for one export on a unix socket: the endpoint that QEMU's block copy with
// synchronous writes (blockdev-mirror copy-mode=write-blocking, libvirt's
// VIR_DOMAIN_BLOCK_COPY_SYNCHRONOUS_WRITES) writes every guest write into.
//
// Protocol (NetworkBlockDevice doc/proto.md), the subset QEMU's client needs:
// - Fixed newstyle handshake; the server offers FIXED_NEWSTYLE | NO_ZEROES and requires the
//   client to set FIXED_NEWSTYLE.
// - Options EXPORT_NAME, GO, INFO (NBD_INFO_EXPORT, plus BLOCK_SIZE and NAME when asked), LIST,
//   ABORT. Every other option (STRUCTURED_REPLY, SET_META_CONTEXT, STARTTLS, ...) gets
//   NBD_REP_ERR_UNSUP, so the client falls back to simple replies. The empty name means the
//   export, as the default export.
// - Transmission flags HAS_FLAGS | SEND_FLUSH | SEND_FUA | SEND_WRITE_ZEROES. TRIM is not
//   offered (a discard is not replicated, so the target keeps the old data, which is a valid
//   content of a discarded range). Commands READ, WRITE, FLUSH, WRITE_ZEROES, DISC; anything
//   else is answered NBD_EINVAL.
// - Simple replies only. Out-of-range READ -> EINVAL; out-of-range WRITE/WRITE_ZEROES -> ENOSPC
//   (what the protocol and QEMU's own server reply). READ/WRITE longer than max_request_bytes
//   -> EINVAL (a WRITE's payload is read and dropped first, so the connection stays in sync).
//   Backend failures are mapped to NBD errors as block_backend.h says. A bad request magic or a
//   broken handshake closes the connection; the server keeps listening.
//
// Synchronous capture: a WRITE is answered only after BlockBackend::Write() returned (see
// block_backend.h), so a guest write completes only once the backend has it.
//
// One client at a time: while a client is connected, a further connection is accepted and
// closed at once (a clean refusal the client sees as EOF before the handshake); after the
// client disconnects, the next one is served.
//
// Thread safety: the server runs one thread ("nbd-server") that accepts and serves; the backend
// is called on it only. Stop() and the destructor are safe from any other thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "agent/common/file_owner.h"
#include "agent/common/status.h"
#include "agent/nbd/block_backend.h"

namespace novadt::nbd {

struct NbdServerOptions {
  // Unix socket to listen on. A stale socket file there is replaced; any other file is an error.
  // Removed by Stop().
  std::string socket_path;
  // Name of the one export; clients may also ask for "" (the default export).
  std::string export_name;
  // Longest READ/WRITE payload accepted, advertised as the maximum block size. 32 MiB is what
  // the protocol recommends clients stay within and what QEMU's client uses.
  uint32_t max_request_bytes = 32 << 20;
  // Who may connect: the socket file is given to this owner with mode 0600 before the server
  // listens (connecting needs write permission on it). Default: the server's own ids.
  FileOwner socket_owner;
};

class NbdServer {
 public:
  // Binds the socket, gives it to socket_owner (0600) and starts serving `backend`. Returns
  // InvalidArgument for bad options (empty or too long socket path, export name over 4096
  // bytes, zero max_request_bytes), FailedPrecondition when socket_path is an existing
  // non-socket file, or the errno status of a failed socket/bind/chown/chmod/listen.
  static StatusOr<std::unique_ptr<NbdServer>> Create(const NbdServerOptions& options,
                                                     std::unique_ptr<BlockBackend> backend);

  virtual ~NbdServer() = default;

  // Closes the listening socket and any client connection, joins the server thread and removes
  // the socket file. Returns once the backend call in progress (if any) has returned; it does
  // not wait for the client. Idempotent. REQUIRES: not called from a backend call or capture
  // callback (it joins the thread that runs them).
  virtual void Stop() = 0;

  virtual const std::string& socket_path() const = 0;
  // Number of client connections served so far (refused ones not counted). For tests and stats.
  virtual uint64_t connections_served() const = 0;
};

}  // namespace novadt::nbd
