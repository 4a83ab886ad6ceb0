// The small sealed files of a replica directory (agent/replica/replica_format.h) that the backup
// reads when it opens a replica: epoch.rec and journal.commit. Each input is decoded as both,
// as it is and resealed (its last 8 bytes replaced by the right XXH3-64) so that mutations
// reach the field checks behind the checksum. What decodes must encode to the same bytes.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "agent/replica/replica_format.h"
#include "fuzz/fuzz_check.h"

namespace {

using namespace novadt::replica;

void DecodeBoth(const std::string& bytes) {
  if (auto r = DecodeEpochRecord(bytes); r.ok()) {
    FUZZ_CHECK(EncodeEpochRecord(*r) == bytes, "epoch.rec does not re-encode to its bytes");
    FUZZ_CHECK(ValidateGeometry(r->geometry).ok() && r->devstate_slot <= 1,
               "epoch.rec accepted with an invalid geometry or slot");
  }
  if (auto m = DecodeCommitMark(bytes); m.ok()) {
    FUZZ_CHECK(EncodeCommitMark(*m) == bytes, "journal.commit does not re-encode to its bytes");
    FUZZ_CHECK(m->devstate_slot <= 1, "journal.commit accepted with slot %u", m->devstate_slot);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  DecodeBoth(bytes);
  if (bytes.size() >= 8) {
    bytes.resize(bytes.size() - 8);
    PutU64(&bytes, Hash64(bytes));
    DecodeBoth(bytes);
  }
  return 0;
}
