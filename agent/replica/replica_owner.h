// Who a replica belongs to, remembered across streams and agent restarts (docs/security.md):
// `<replica dir>/owner.rec`, next to the replica's files, replaced atomically.
//
// The owner is the primary host whose replication streams, Basis and TakeOver requests the
// backup accepts for the server. It becomes the owner by opening the stream that created the
// replica, and changes only through what the agents agreed on: this host taking the server over
// (failover or switchover: the owner is this host), a switchover away from here or a copy that
// went away here (the host that runs the server now), or the owner ending protection on purpose
// (`released`: the replica is kept only as a basis, never restored from, and the next stream —
// from whichever peer — replaces it).
#pragma once

#include <string>
#include <string_view>

#include "agent/common/status.h"

namespace novadt::replica {

inline constexpr std::string_view kOwnerFile = "owner.rec";

struct ReplicaOwner {
  // The primary whose requests are accepted; a host name (ValidateHostName). Never empty in a
  // record.
  std::string host;
  // The owner ended protection on purpose (unprotect, switchover, a stream it closed): the
  // replica is not failover-eligible and any configured peer's next stream replaces it.
  bool released = false;
  // This host runs the server from these files (it took the server over): every stream for it
  // is refused (core::TakenOverRefusal). `host` is then this host.
  bool taken_over = false;
  bool operator==(const ReplicaOwner&) const = default;
};

// The record's bytes: "nova-dt-owner 1", "host <host>", "released 0|1", "taken-over 0|1", then
// "check <xxh3-64 of the lines before, hex>", each line ending in '\n'.
std::string EncodeReplicaOwner(const ReplicaOwner& owner);
// DataLoss naming what is wrong for anything but exactly that shape with a valid host and a
// matching check (bounded: a record is at most a few hundred bytes).
StatusOr<ReplicaOwner> DecodeReplicaOwner(std::string_view bytes);

// Reads `<dir>/owner.rec`: NotFound when there is none (a replica made by an agent before owner
// records, or none at all), DataLoss when it is corrupt.
StatusOr<ReplicaOwner> ReadReplicaOwner(const std::string& dir);
// Replaces `<dir>/owner.rec` crash-safely (mode 0600). REQUIRES: `dir` exists;
// owner.host valid (InvalidArgument otherwise).
Status WriteReplicaOwner(const std::string& dir, const ReplicaOwner& owner);

}  // namespace novadt::replica
