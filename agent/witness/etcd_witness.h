// The Witness over etcd (docs/witness.md).
//
// Keys, under the configured prefix (default "/nova-dt"), values JSON:
//   <prefix>/servers/<uuid>      {"owner": host, "generation": n}    attached to the owner's lease
//   <prefix>/generations/<uuid>  {"owner": host, "generation": n, "released": bool}   no lease
// The servers key exists exactly while the owner's claim is live: etcd deletes it when the
// owner's lease expires or is revoked. The generations key remembers the last owner and
// generation after that, so generations never repeat and a lapsed claim moves only through a
// transaction that names them. Every change is one etcd Txn comparing the mod_revision of both
// keys as read just before (so a concurrent change makes it fail), and writing both.
//
// One lease per EtcdWitness, granted at the first Claim()/TakeOver() and kept alive by the
// "witness-renew" thread every TTL/3 (every TTL/10 after a failed renewal). When etcd says
// the lease is gone the thread reports kLeaseLost, grants a new lease and re-claims each server
// this witness held, but only where the server's key is absent and the generations record still
// names this host at the generation it held, or the key is still this host's: never from
// another host (kOwnershipLost then).
//
// Destruction stops the keep-alive thread (waiting for a renewal in flight) after delivering
// the events already queued, and does NOT revoke the lease: claims lapse after the TTL as if the
// agent had crashed (a restarting agent re-claims its servers with Claim()).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "agent/common/clock.h"
#include "agent/common/status.h"
#include "agent/config/config.h"
#include "agent/witness/etcd_client.h"
#include "agent/witness/witness.h"

namespace novadt::witness {

struct EtcdWitnessOptions {
  // Keys live under this prefix (see above). Absolute, no trailing '/'.
  std::string key_prefix = "/nova-dt";
  // TTL asked for the lease (whole seconds). etcd may grant more (its minimum is about 1.5 x
  // its election timeout, 2 s by default); the renewal interval and fence deadline use the TTL
  // etcd grants.
  std::chrono::milliseconds lease_ttl{3000};
  // The fence deadline comes this long before the lease can expire.
  std::chrono::milliseconds fence_margin{1000};
};

// [witness] as witness options.
EtcdWitnessOptions EtcdWitnessOptionsFromConfig(const config::WitnessSection& witness);

// A witness on `client`. Contacts etcd only when first used. `clock` must outlive the witness;
// `listener` may be empty.
// REQUIRES: lease_ttl >= 1 s, whole seconds; 0 < fence_margin <= lease_ttl / 2.
std::unique_ptr<Witness> NewEtcdWitness(std::unique_ptr<EtcdClient> client,
                                        EtcdWitnessOptions options, const Clock& clock,
                                        WitnessListener listener = {});

// A witness for the agent's [witness] section.
// InvalidArgument: unreadable TLS files, or the section is not enabled().
StatusOr<std::unique_ptr<Witness>> NewEtcdWitness(const config::WitnessSection& witness,
                                                  const Clock& clock,
                                                  WitnessListener listener = {});

}  // namespace novadt::witness
