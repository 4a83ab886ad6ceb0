#include "agent/replica/replica_owner.h"

#include <xxhash.h>

#include <cstdio>
#include <vector>

#include "agent/common/atomic_file.h"
#include "agent/common/identifiers.h"

namespace novadt::replica {
namespace {

constexpr std::string_view kMagic = "nova-dt-owner 1";
constexpr size_t kMaxRecordBytes = 1024;

std::string Check(std::string_view body) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(XXH3_64bits(body.data(), body.size())));
  return hex;
}

Status Corrupt(const std::string& why) {
  return absl::DataLossError("replica owner record: " + why);
}

// "0" / "1" after `key ` on `line`.
StatusOr<bool> Flag(std::string_view line, std::string_view key) {
  if (line.size() != key.size() + 2 || line.substr(0, key.size()) != key ||
      line[key.size()] != ' ' || (line.back() != '0' && line.back() != '1')) {
    return Corrupt("expected '" + std::string(key) + " 0|1', got '" + Printable(line) + "'");
  }
  return line.back() == '1';
}

}  // namespace

std::string EncodeReplicaOwner(const ReplicaOwner& owner) {
  std::string body = std::string(kMagic) + "\nhost " + owner.host + "\nreleased " +
                     (owner.released ? "1" : "0") + "\ntaken-over " +
                     (owner.taken_over ? "1" : "0") + "\n";
  return body + "check " + Check(body) + "\n";
}

StatusOr<ReplicaOwner> DecodeReplicaOwner(std::string_view bytes) {
  if (bytes.size() > kMaxRecordBytes) return Corrupt("larger than a record can be");
  std::vector<std::string_view> lines;
  for (size_t from = 0; from < bytes.size();) {
    const size_t nl = bytes.find('\n', from);
    if (nl == std::string_view::npos) return Corrupt("does not end with a newline");
    lines.push_back(bytes.substr(from, nl - from));
    from = nl + 1;
  }
  if (lines.size() != 5) return Corrupt(std::to_string(lines.size()) + " lines instead of 5");
  if (lines[0] != kMagic) return Corrupt("unknown format '" + Printable(lines[0]) + "'");
  const std::string_view check = lines[4];
  const std::string_view body = bytes.substr(0, bytes.size() - check.size() - 1);
  if (check.substr(0, 6) != "check " || check.substr(6) != Check(body)) {
    return Corrupt("check value does not match");
  }
  ReplicaOwner owner;
  if (lines[1].substr(0, 5) != "host ") return Corrupt("no host line");
  owner.host = std::string(lines[1].substr(5));
  if (Status bad = ValidateHostName(owner.host); !bad.ok()) return Corrupt(std::string(bad.message()));
  auto released = Flag(lines[2], "released");
  if (!released.ok()) return released.status();
  auto taken = Flag(lines[3], "taken-over");
  if (!taken.ok()) return taken.status();
  owner.released = *released;
  owner.taken_over = *taken;
  return owner;
}

StatusOr<ReplicaOwner> ReadReplicaOwner(const std::string& dir) {
  const std::string path = dir + "/" + std::string(kOwnerFile);
  auto bytes = ReadSmallFile(path, kMaxRecordBytes);
  if (!bytes.ok()) {
    if (absl::IsNotFound(bytes.status())) return bytes.status();
    return Corrupt(std::string(bytes.status().message()));
  }
  auto owner = DecodeReplicaOwner(*bytes);
  if (!owner.ok()) return absl::DataLossError(path + ": " + std::string(owner.status().message()));
  return owner;
}

Status WriteReplicaOwner(const std::string& dir, const ReplicaOwner& owner) {
  NOVA_DT_RETURN_IF_ERROR(ValidateHostName(owner.host));
  return WriteFileAtomically(dir + "/" + std::string(kOwnerFile), EncodeReplicaOwner(owner),
                             0600);
}

}  // namespace novadt::replica
