// The small sealed files of a replica directory that the backup reads when it opens a replica:
// epoch.rec, journal.commit and boot.rec (agent/replica/replica_format.h) and owner.rec
// (agent/replica/replica_owner.h). Each input is decoded as all four, as it is and resealed so
// that mutations reach the field checks behind the checksum: for the binary records its last 8
// bytes replaced by the right XXH3-64, for owner.rec its last line replaced by the right
// "check <hex>" line. What decodes must encode to the same bytes.
#include <xxhash.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "agent/common/identifiers.h"
#include "agent/replica/replica_format.h"
#include "agent/replica/replica_owner.h"
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
  if (auto b = DecodeBootRecord(bytes); b.ok()) {
    FUZZ_CHECK(EncodeBootRecord(*b) == bytes, "boot.rec does not re-encode to its bytes");
    FUZZ_CHECK(b->size() <= 2, "boot.rec accepted with %zu files", b->size());
    for (const auto& f : *b) {
      FUZZ_CHECK(novadt::core::IsBootFileName(f.name), "boot.rec accepted with another name");
    }
  }
}

void DecodeOwner(std::string_view bytes) {
  if (auto o = DecodeReplicaOwner(bytes); o.ok()) {
    FUZZ_CHECK(EncodeReplicaOwner(*o) == bytes, "owner.rec does not re-encode to its bytes");
    FUZZ_CHECK(novadt::ValidateHostName(o->host).ok(), "owner.rec accepted with an invalid host");
  }
}

// `bytes` up to its last line, then "check <xxh3-64 of what precedes, hex>\n".
std::string ResealOwner(const std::string& bytes) {
  size_t body_end = bytes.size();
  if (body_end > 0 && bytes[body_end - 1] == '\n') --body_end;
  const size_t nl = bytes.rfind('\n', body_end == 0 ? 0 : body_end - 1);
  const std::string body = nl == std::string::npos ? std::string() : bytes.substr(0, nl + 1);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(XXH3_64bits(body.data(), body.size())));
  return body + "check " + hex + "\n";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  DecodeBoth(bytes);
  DecodeOwner(bytes);
  DecodeOwner(ResealOwner(bytes));
  if (bytes.size() >= 8) {
    bytes.resize(bytes.size() - 8);
    PutU64(&bytes, Hash64(bytes));
    DecodeBoth(bytes);
  }
  return 0;
}
