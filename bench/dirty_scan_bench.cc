// Times HashScanTracker::Collect() against one plain read pass over the same RAM file
// (issue 3's goal: the checkpoint pause on the hash-scan path <= 1.25x one read pass).
//
// For each RAM size, a file in /dev/shm is filled with random bytes and written through a
// MAP_SHARED mapping as a guest would; the read pass sums every 64-bit word of a read-only
// MAP_SHARED mapping (single thread, and split over 2 threads for reference). Collect() is
// timed with 0.1 %, 1 % and 10 % of pages dirtied before each repetition, for 1 and 2 scan
// threads. Prints median and p99 (the maximum for fewer than 100 repetitions) in ms, and the
// ratio of Collect()'s median to the 1-thread read pass median.
//
// Usage: dirty_scan_bench [repetitions=21] [sizes in MiB, default 128 256 512]
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "agent/dirty/hash_scan_tracker.h"

namespace {

using novadt::dirty::HashScanTracker;
using novadt::dirty::kPageSize;
using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Stats {
  double median, p99;
};
Stats Summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t p99 = std::min(v.size() - 1, static_cast<size_t>(v.size() * 0.99));
  return {v[v.size() / 2], v[p99]};
}

volatile uint64_t g_sink;

uint64_t SumWords(const uint64_t* p, size_t n) {
  uint64_t s = 0;
  for (size_t i = 0; i < n; ++i) s += p[i];
  return s;
}

// One plain read pass touching every cache line, on `threads` threads.
double ReadPassMs(const unsigned char* base, uint64_t size, unsigned threads) {
  const auto* words = reinterpret_cast<const uint64_t*>(base);
  const size_t n = size / 8;
  const auto t0 = Clock::now();
  if (threads == 1) {
    g_sink = SumWords(words, n);
  } else {
    std::vector<uint64_t> sums(threads);
    std::vector<std::thread> ts;
    for (unsigned i = 1; i < threads; ++i) {
      ts.emplace_back([&, i] { sums[i] = SumWords(words + n * i / threads, n / threads); });
    }
    sums[0] = SumWords(words, n / threads);
    for (auto& t : ts) t.join();
    g_sink = sums[0] + sums[threads - 1];
  }
  return Ms(Clock::now() - t0);
}

void Die(const char* what) {
  std::perror(what);
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  int reps = argc > 1 ? std::atoi(argv[1]) : 21;
  if (reps < 1) reps = 1;
  std::vector<uint64_t> sizes_mib;
  for (int i = 2; i < argc; ++i) sizes_mib.push_back(std::strtoull(argv[i], nullptr, 10));
  if (sizes_mib.empty()) sizes_mib = {128, 256, 512};

  std::printf("dirty_scan_bench: %d repetitions, hardware threads %u, page %llu B\n", reps,
              std::thread::hardware_concurrency(), static_cast<unsigned long long>(kPageSize));
  std::printf("%-8s %-12s %-7s %-8s %10s %10s %8s %8s\n", "RAM MiB", "what", "threads", "dirty %",
              "median ms", "p99 ms", "x read1", "GB/s");
  std::mt19937_64 rng(42);
  for (uint64_t mib : sizes_mib) {
    const uint64_t size = mib << 20;
    const uint64_t pages = size / kPageSize;
    const std::string path = "/dev/shm/dirty_scan_bench." + std::to_string(getpid()) + ".ram";
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) Die("open");
    if (ftruncate(fd, static_cast<off_t>(size)) != 0) Die("ftruncate");
    auto* guest = static_cast<unsigned char*>(
        mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0));
    if (guest == MAP_FAILED) Die("mmap guest");
    for (uint64_t i = 0; i < size / 8; ++i) reinterpret_cast<uint64_t*>(guest)[i] = rng();
    auto* reader = static_cast<const unsigned char*>(
        mmap(nullptr, size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0));
    if (reader == MAP_FAILED) Die("mmap reader");

    auto row = [&](const char* what, unsigned threads, const char* dirty, Stats s, double base) {
      std::printf("%-8llu %-12s %-7u %-8s %10.2f %10.2f %8.2f %8.1f\n",
                  static_cast<unsigned long long>(mib), what, threads, dirty, s.median, s.p99,
                  s.median / base, static_cast<double>(size) / (s.median * 1e6));
    };
    ReadPassMs(reader, size, 1);  // warm-up
    std::vector<double> read1, read2;
    for (int r = 0; r < reps; ++r) {
      read1.push_back(ReadPassMs(reader, size, 1));
      read2.push_back(ReadPassMs(reader, size, 2));
    }
    const Stats r1 = Summarize(read1);
    row("read pass", 1, "-", r1, r1.median);
    row("read pass", 2, "-", Summarize(read2), r1.median);

    for (unsigned threads : {1u, 2u}) {
      auto tracker = HashScanTracker::Create(path, size, threads);
      if (!tracker.ok()) {
        std::fprintf(stderr, "%s\n", tracker.status().ToString().c_str());
        return 1;
      }
      const auto t0 = Clock::now();
      if (!(*tracker)->Reset().ok()) return 1;
      std::printf("%-8llu %-12s %-7u %-8s %10.2f\n", static_cast<unsigned long long>(mib), "Reset",
                  threads, "-", Ms(Clock::now() - t0));
      for (double fraction : {0.001, 0.01, 0.1}) {
        const uint64_t k = std::max<uint64_t>(1, static_cast<uint64_t>(pages * fraction));
        std::vector<double> times;
        for (int r = 0; r < reps; ++r) {
          std::set<uint64_t> written;
          while (written.size() < k) {
            const uint64_t p = rng() % pages;
            written.insert(p);
            reinterpret_cast<uint64_t*>(guest + p * kPageSize)[rng() % (kPageSize / 8)] += 1;
          }
          const auto c0 = Clock::now();
          auto d = (*tracker)->Collect();
          times.push_back(Ms(Clock::now() - c0));
          if (!d.ok() || d->count() != written.size()) {
            std::fprintf(stderr, "Collect() reported %llu pages, %zu written\n",
                         d.ok() ? static_cast<unsigned long long>(d->count()) : 0ull,
                         written.size());
            return 1;
          }
        }
        char label[16];
        std::snprintf(label, sizeof label, "%g", fraction * 100);
        row("Collect", threads, label, Summarize(times), r1.median);
      }
    }
    munmap(const_cast<unsigned char*>(reader), size);
    munmap(guest, size);
    close(fd);
    unlink(path.c_str());
  }
  return 0;
}
