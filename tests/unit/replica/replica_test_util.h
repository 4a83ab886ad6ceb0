// Shared helpers of the replica tests: a deterministic epoch generator and an in-memory model
// of what the replica must hold after each epoch.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "agent/replica/replica_store.h"
#include "tests/support/test_util.h"

namespace novadt::replica {

inline constexpr uint64_t kPage = kReplicaPageSize;

// What the replica must equal after an epoch.
struct Model {
  uint64_t epoch = 0;
  std::string ram;
  std::map<std::string, std::string> disks;
  std::string devstate;
};

struct DiskWrite {
  std::string disk;
  uint64_t offset;
  std::string data;
};

// One epoch as the primary sends it.
struct EpochOps {
  uint64_t epoch = 0;
  std::vector<std::vector<uint64_t>> page_batches;  // one AddPages call each
  std::vector<std::string> page_data;               // data of each batch
  std::vector<DiskWrite> writes;
  std::string devstate;
};

inline ReplicaGeometry SmallGeometry() {
  ReplicaGeometry g;
  g.ram_size = 64 * kPage;
  g.disks = {{"vda", 64 * 1024}, {"vdb", 20 * 1024}};
  return g;
}

inline Model EmptyModel(const ReplicaGeometry& g) {
  Model m;
  m.ram.assign(g.ram_size, '\0');
  for (const DiskGeometry& d : g.disks) m.disks[d.name].assign(d.size, '\0');
  return m;
}

inline std::string Fill(uint64_t seed, size_t n) {
  return novadt::testing::PseudoRandomBytes(seed, n);
}

// Epoch 1 is a full seed; later epochs dirty a few pages (some twice) and write overlapping
// disk extents, all derived from the epoch number.
inline EpochOps MakeEpoch(const ReplicaGeometry& g, uint64_t n) {
  EpochOps e;
  e.epoch = n;
  const uint64_t pages = g.ram_size / kPage;
  if (n == 1) {
    for (uint64_t first = 0; first < pages; first += 16) {
      std::vector<uint64_t> batch;
      for (uint64_t p = first; p < std::min(pages, first + 16); ++p) batch.push_back(p);
      e.page_data.push_back(Fill(n * 1000 + first, batch.size() * kPage));
      e.page_batches.push_back(std::move(batch));
    }
    for (const DiskGeometry& d : g.disks) {
      for (uint64_t off = 0; off < d.size; off += 8192) {
        e.writes.push_back(
            {d.name, off, Fill(n * 7 + off, std::min<uint64_t>(8192, d.size - off))});
      }
    }
  } else {
    for (int b = 0; b < 3; ++b) {
      std::vector<uint64_t> batch;
      for (int i = 0; i < 3; ++i) batch.push_back((n * 5 + b * 7 + i * 11) % pages);
      e.page_data.push_back(Fill(n * 100 + b, batch.size() * kPage));
      e.page_batches.push_back(std::move(batch));
    }
    e.writes.push_back({"vda", (n * 4096) % 40000, Fill(n * 3, 10000)});
    e.writes.push_back({"vdb", 100, Fill(n * 3 + 1, 5000)});
    e.writes.push_back({"vda", (n * 4096) % 40000 + 5000, Fill(n * 3 + 2, 3000)});  // overlaps
  }
  e.devstate = Fill(n * 31337, 3000 + n * 17);
  return e;
}

inline void ApplyToModel(const EpochOps& e, Model* m) {
  for (size_t b = 0; b < e.page_batches.size(); ++b) {
    for (size_t i = 0; i < e.page_batches[b].size(); ++i) {
      m->ram.replace(e.page_batches[b][i] * kPage, kPage, e.page_data[b].substr(i * kPage, kPage));
    }
  }
  for (const DiskWrite& w : e.writes) m->disks[w.disk].replace(w.offset, w.data.size(), w.data);
  m->devstate = e.devstate;
  m->epoch = e.epoch;
}

// Sends every part of `e` but not the "end of epoch".
inline Status Feed(ReplicaStore& store, const EpochOps& e) {
  NOVA_DT_RETURN_IF_ERROR(store.BeginEpoch(e.epoch));
  for (size_t b = 0; b < e.page_batches.size(); ++b) {
    NOVA_DT_RETURN_IF_ERROR(store.AddPages(e.page_batches[b], e.page_data[b]));
  }
  for (const DiskWrite& w : e.writes) {
    NOVA_DT_RETURN_IF_ERROR(store.AddDiskWrite(w.disk, w.offset, w.data));
  }
  return store.SetDeviceState(e.devstate);
}

inline Status FeedAndCommit(ReplicaStore& store, const EpochOps& e) {
  NOVA_DT_RETURN_IF_ERROR(Feed(store, e));
  return store.Commit();
}

// Replaces the boot files of `store` (ReplicaStore::BeginBootFiles .. CommitBootFiles) by
// `files` (name, bytes), each sent in pieces of `chunk` bytes.
inline Status GiveBootFiles(ReplicaStore& store,
                            const std::vector<std::pair<std::string, std::string>>& files,
                            size_t chunk = 4096) {
  std::vector<core::BootFile> declared;
  for (const auto& [name, bytes] : files) declared.push_back({name, bytes.size()});
  NOVA_DT_RETURN_IF_ERROR(store.BeginBootFiles(declared));
  for (const auto& [name, bytes] : files) {
    for (size_t off = 0; off < bytes.size(); off += chunk) {
      NOVA_DT_RETURN_IF_ERROR(
          store.AddBootFileData(name, off, std::string_view(bytes).substr(off, chunk)));
    }
  }
  return store.CommitBootFiles();
}

inline std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// Byte-exact comparison of the replica files with `m` (no gtest output of MBs on mismatch).
inline ::testing::AssertionResult ReplicaEquals(const ReplicaStore& store, const Model& m) {
  if (store.committed_epoch() != m.epoch) {
    return ::testing::AssertionFailure()
           << "committed epoch " << store.committed_epoch() << ", expected " << m.epoch;
  }
  if (Slurp(store.ram_path()) != m.ram) {
    return ::testing::AssertionFailure() << "ram.img differs from epoch " << m.epoch;
  }
  for (const auto& [name, bytes] : m.disks) {
    if (Slurp(store.disk_path(name)) != bytes) {
      return ::testing::AssertionFailure() << "disk " << name << " differs from epoch " << m.epoch;
    }
  }
  if (m.epoch > 0 && Slurp(store.device_state_path()) != m.devstate) {
    return ::testing::AssertionFailure() << "device state differs from epoch " << m.epoch;
  }
  return ::testing::AssertionSuccess();
}

// Models of epochs 0..n.
inline std::vector<Model> Models(const ReplicaGeometry& g, uint64_t n) {
  std::vector<Model> out{EmptyModel(g)};
  for (uint64_t i = 1; i <= n; ++i) {
    Model m = out.back();
    ApplyToModel(MakeEpoch(g, i), &m);
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace novadt::replica
