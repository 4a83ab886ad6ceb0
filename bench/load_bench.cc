// load_bench: the epoch engine on the two-host rig with the test guest idle or running a
// memory-writing load (tests/guest/memload.c, enabled by the kernel option dt.memload=MIB[:RATE]).
// For each configuration, in one run on one guest:
//   1. unprotected for SECONDS: the guest's throughput (its 50 Hz counter, and memload's pages
//      written, both as received by the rig's observer);
//   2. one read pass over the guest's RAM file on host a (the scan-path reference of issue 3's
//      pause goal), repeated, while the guest keeps running;
//   3. protected to host b (100 ms epochs), then SECONDS more: the same throughput, the agent's
//      checkpoint pause p50/p99, dirty pages and bytes per epoch, epochs per second.
//
//   sudo build/bench/load_bench [SECONDS=20] [CONFIG...]     CONFIG = RAM_MIB[/LOAD_MIB[:RATE]]
//   e.g. sudo build/bench/load_bench 20 256 256/32           (the default configurations)
//
// Throughput is computed on the host's clock from the observer's receive timestamps (first and
// last report inside the window), and also on the guest's own clock (memload's t_ms), because
// the guest's clock does not advance while QEMU is stopped. Needs root (the rig "lb1").
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "nova_dt/v1/control.grpc.pb.h"
#include "tests/support/agent_control.h"
#include "tests/support/rig.h"
#include "tests/support/test_util.h"

namespace {

using novadt::testing::ReadFile;
using novadt::testing::Rig;
using novadt::testing::RunCommand;
using novadt::testing::WaitFor;
using std::chrono::seconds;

constexpr char kUuid[] = "7d3e1c52-88a4-4f0b-b1e6-2c9a5f40d871";
constexpr char kName[] = "lbguest";
constexpr int kReadPasses = 7;

double WallNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

struct Config {
  int ram_mib = 256;
  int load_mib = 0;  // 0: idle (no memload)
  long load_rate = 0;
  std::string label;
};

std::optional<Config> ParseConfig(const std::string& s) {
  Config c;
  char* end = nullptr;
  c.ram_mib = static_cast<int>(std::strtol(s.c_str(), &end, 10));
  if (c.ram_mib < 64 || c.ram_mib > 2048) return std::nullopt;
  if (*end == '/') {
    c.load_mib = static_cast<int>(std::strtol(end + 1, &end, 10));
    if (c.load_mib <= 0 || c.load_mib >= c.ram_mib) return std::nullopt;
    if (*end == ':') c.load_rate = std::strtol(end + 1, &end, 10);
  }
  if (*end != '\0' || c.load_rate < 0) return std::nullopt;
  c.label = std::to_string(c.ram_mib) + " " +
            (c.load_mib ? "load " + std::to_string(c.load_mib) + "M" +
                              (c.load_rate ? ":" + std::to_string(c.load_rate) : "")
                        : std::string("idle"));
  return c;
}

std::optional<nova_dt::v1::ProtectedServer> Server(const Rig& rig, const std::string& host) {
  return novadt::testing::ProtectedServerAt(rig.AgentControlAddress(host), kUuid);
}

// `rig boot-guest` with kernel command line additions (Rig::BootGuest has no --append).
bool BootGuest(const Rig& rig, int mib, const std::string& append, std::string* out) {
  std::vector<std::string> argv = {"env",
                                   "RIG_NAME=lb1",
                                   "RIG_DIR=" + rig.dir(),
                                   std::string("NOVA_DT_BUILD=") + NOVA_DT_BINARY_DIR,
                                   std::string("RIG_GUEST_DIR=") + NOVA_DT_BINARY_DIR + "/guest",
                                   std::string(NOVA_DT_SOURCE_DIR) + "/tests/rig/rig",
                                   "boot-guest",
                                   "a",
                                   kName,
                                   kUuid,
                                   "--memory",
                                   std::to_string(mib)};
  if (!append.empty()) argv.insert(argv.end(), {"--append", append});
  return RunCommand(argv, out, seconds(120)) == 0;
}

// --- observer log -------------------------------------------------------------------------------

struct Line {
  double t = 0;  // receive time (unix seconds, host clock)
  std::string text;
};

std::vector<Line> ObserverLines(const Rig& rig) {
  std::vector<Line> lines;
  std::ifstream in(rig.dir() + "/observer.log");
  for (std::string l; std::getline(in, l);) {
    const size_t a = l.find(' ');
    const size_t b = a == std::string::npos ? a : l.find(' ', a + 1);
    if (b == std::string::npos) continue;
    lines.push_back({std::strtod(l.c_str(), nullptr), l.substr(b + 1)});
  }
  return lines;
}

// Value of "key=<unsigned>" in a line, or nullopt.
std::optional<uint64_t> Field(const std::string& text, const std::string& key) {
  const std::string k = " " + key + "=";
  size_t p = (" " + text).find(k);
  if (p == std::string::npos) return std::nullopt;
  p += k.size() - 1;  // index into text
  return std::strtoull(text.c_str() + p, nullptr, 10);
}

struct Throughput {
  double counter_per_s = 0;      // counter values received per host second
  double load_host = 0;          // memload pages per host second
  double load_guest = 0;         // memload pages per guest second
  double guest_clock = 0;        // guest seconds per host second (from memload's t_ms)
  int reports = 0;               // memload reports in the window
  int mismatches = 0;            // MISMATCH lines (the guest's disk/memory check)
  double host_busy = 0;          // % of all host CPUs busy during the window (any process)
};

Throughput Measure(const std::vector<Line>& lines, double t0, double t1) {
  Throughput r;
  std::optional<Line> first_seq, last_seq, first_load, last_load;
  for (const auto& l : lines) {
    if (l.t < t0 || l.t >= t1) continue;
    if (l.text.rfind("seq=", 0) == 0) {
      if (!first_seq) first_seq = l;
      last_seq = l;
    } else if (l.text.rfind("memload ", 0) == 0) {
      if (!first_load) first_load = l;
      last_load = l;
      ++r.reports;
    } else if (l.text.rfind("MISMATCH", 0) == 0) {
      ++r.mismatches;
    }
  }
  if (first_seq && last_seq->t > first_seq->t) {
    r.counter_per_s = double(*Field(last_seq->text, "seq") - *Field(first_seq->text, "seq")) /
                      (last_seq->t - first_seq->t);
  }
  if (first_load && r.reports >= 2) {
    const double pages =
        double(*Field(last_load->text, "pages") - *Field(first_load->text, "pages"));
    const double guest_s =
        double(*Field(last_load->text, "t_ms") - *Field(first_load->text, "t_ms")) / 1000.0;
    const double host_s = last_load->t - first_load->t;
    if (host_s > 0) r.load_host = pages / host_s;
    if (guest_s > 0) r.load_guest = pages / guest_s;
    if (host_s > 0) r.guest_clock = guest_s / host_s;
  }
  return r;
}

// --- read pass over the guest RAM file ---------------------------------------------------------

volatile uint64_t g_sink;

// The guest RAM file of kName on host a, through libvirtd's root (its mount namespace).
std::string RamFile(const Rig& rig) {
  std::string pid = ReadFile(rig.dir() + "/a/libvirtd.pid");
  while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
  const std::string dir = "/proc/" + pid + "/root/var/lib/libvirt/qemu/ram";
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (n.size() > std::string(kName).size() + 1 &&
        n.compare(n.size() - std::string(kName).size() - 1, std::string::npos,
                  std::string("-") + kName) == 0) {
      return e.path().string() + "/pc.ram";
    }
  }
  return "";
}

// Median and minimum of kReadPasses single-threaded read passes (every 64-bit word summed, as
// bench/dirty_scan_bench.cc does) over a read-only MAP_SHARED mapping, after one warm-up pass.
std::optional<std::pair<double, double>> ReadPass(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  struct stat st = {};
  if (::fstat(fd, &st) != 0 || st.st_size <= 0) {
    ::close(fd);
    return std::nullopt;
  }
  const size_t size = static_cast<size_t>(st.st_size);
  void* m = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) return std::nullopt;
  const auto* words = static_cast<const uint64_t*>(m);
  auto pass = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    uint64_t s = 0;
    for (size_t i = 0; i < size / 8; ++i) s += words[i];
    g_sink = s;
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
        .count();
  };
  pass();  // warm-up: page-table entries of the mapping
  std::vector<double> ms;
  for (int i = 0; i < kReadPasses; ++i) ms.push_back(pass());
  ::munmap(m, size);
  std::sort(ms.begin(), ms.end());
  return std::make_pair(ms[ms.size() / 2], ms.front());
}

// Host CPU time counters (all CPUs, USER_HZ): busy, total.
std::pair<uint64_t, uint64_t> CpuTimes() {
  std::istringstream in(ReadFile("/proc/stat"));
  std::string cpu;
  in >> cpu;  // "cpu"
  uint64_t v[10] = {}, total = 0;
  for (int i = 0; i < 10 && (in >> v[i]); ++i) total += i < 8 ? v[i] : 0;  // guest* are in user
  const uint64_t idle = v[3] + v[4];
  return {total - idle, total};
}

double BusyPercent(std::pair<uint64_t, uint64_t> a, std::pair<uint64_t, uint64_t> b) {
  return b.second > a.second ? 100.0 * double(b.first - a.first) / double(b.second - a.second)
                             : 0.0;
}

// "93.2M", "20.0k", "512"
std::string Units(double v) {
  char b[32];
  if (v >= 1e6) std::snprintf(b, sizeof b, "%.1fM", v / 1e6);
  else if (v >= 1e3) std::snprintf(b, sizeof b, "%.1fk", v / 1e3);
  else std::snprintf(b, sizeof b, "%.0f", v);
  return b;
}

std::string LoadAvg() {
  std::string s = ReadFile("/proc/loadavg");
  return s.substr(0, s.find(' ', s.find(' ', s.find(' ') + 1) + 1));
}

// --- one configuration --------------------------------------------------------------------------

struct Result {
  Config cfg;
  Throughput unprot, prot;
  double read_ms = 0, read_min_ms = 0;
  double p50 = 0, p99 = 0;
  double pages_per_epoch = 0, kib_per_epoch = 0, epochs_per_s = 0;
  long seed_ms = 0;
  uint64_t reseeds = 0;
  std::string state, load_before, load_after;
  std::string error;
};

Result Run(const Config& cfg, int run_seconds) {
  Result r;
  r.cfg = cfg;
  r.load_before = LoadAvg();
  Rig rig("lb1");
  auto fail = [&](const std::string& what) {
    r.error = what;
    return r;
  };
  if (!rig.Up().ok()) return fail("rig up");
  std::string out;
  std::string append;
  if (cfg.load_mib) {
    append = "dt.memload=" + std::to_string(cfg.load_mib) +
             (cfg.load_rate ? ":" + std::to_string(cfg.load_rate) : "");
  }
  if (!BootGuest(rig, cfg.ram_mib, append, &out)) return fail("boot: " + out);
  for (const char* host : {"a", "b"}) {
    const auto st = rig.StartAgent(host);
    if (!st.ok()) return fail(std::string("agent on ") + host + ": " + std::string(st.message()));
  }
  // Guest up: counter flowing, and memload reporting when configured.
  if (!WaitFor(
          [&] {
            const auto lines = ObserverLines(rig);
            int seq = 0, load = 0;
            for (const auto& l : lines) {
              seq += l.text.rfind("seq=", 0) == 0;
              load += l.text.rfind("memload ", 0) == 0;
            }
            return seq > 50 && (!cfg.load_mib || load >= 3);
          },
          seconds(90))) {
    return fail("guest workload not seen at the observer");
  }

  // 1. unprotected
  const double u0 = WallNow();
  const auto ucpu0 = CpuTimes();
  std::this_thread::sleep_for(seconds(run_seconds));
  const double u1 = WallNow();
  const auto ucpu1 = CpuTimes();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // late datagrams
  r.unprot = Measure(ObserverLines(rig), u0, u1);
  r.unprot.host_busy = BusyPercent(ucpu0, ucpu1);

  // 2. read pass over guest RAM (guest running, unprotected)
  const std::string ram = RamFile(rig);
  if (ram.empty()) return fail("guest RAM file not found");
  const auto rp = ReadPass(ram);
  if (!rp) return fail("read pass over " + ram);
  r.read_ms = rp->first;
  r.read_min_ms = rp->second;

  // 3. protected
  {
    auto stub = nova_dt::v1::Control::NewStub(
        grpc::CreateChannel(rig.AgentControlAddress("a"), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(10));
    nova_dt::v1::ProtectRequest req;
    req.set_instance_uuid(kUuid);
    req.set_backup_host("rig-b");
    nova_dt::v1::ProtectReply reply;
    if (!stub->Protect(&ctx, req, &reply).ok()) return fail("protect");
  }
  if (!WaitFor([&] { auto a = Server(rig, "a"); return a && a->state() == "protected"; },
               seconds(120))) {
    auto a = Server(rig, "a");
    return fail("never protected (state " + (a ? a->state() + ": " + a->reason() : "?") + ")");
  }
  std::this_thread::sleep_for(seconds(2));  // past the first epochs after seeding
  const auto start = Server(rig, "a");
  const double p0 = WallNow();
  const auto pcpu0 = CpuTimes();
  std::this_thread::sleep_for(seconds(run_seconds));
  const double p1 = WallNow();
  const auto pcpu1 = CpuTimes();
  const auto end = Server(rig, "a");
  // Output of the window's last epochs is released after their commit.
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  r.prot = Measure(ObserverLines(rig), p0, p1 + 0.8);
  r.prot.host_busy = BusyPercent(pcpu0, pcpu1);
  if (!start || !end) return fail("no status");
  r.state = end->state();
  r.reseeds = end->reseeds();
  const double epochs = double(end->steady_epochs() - start->steady_epochs());
  r.seed_ms = end->seed_ms();
  r.p50 = end->pause_p50_us() / 1000.0;
  r.p99 = end->pause_p99_us() / 1000.0;
  if (epochs > 0) {
    r.pages_per_epoch = double(end->steady_pages() - start->steady_pages()) / epochs;
    r.kib_per_epoch = double(end->steady_bytes() - start->steady_bytes()) / epochs / 1024.0;
  }
  r.epochs_per_s = epochs / (p1 - p0);
  r.load_after = LoadAvg();
  (void)rig.Down();
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  int run_seconds = argc > 1 ? std::atoi(argv[1]) : 20;
  if (run_seconds < 3 || run_seconds > 120) run_seconds = 20;
  std::vector<Config> configs;
  for (int i = 2; i < argc; ++i) {
    auto c = ParseConfig(argv[i]);
    if (!c) {
      std::fprintf(stderr, "bad configuration '%s' (RAM_MIB[/LOAD_MIB[:RATE]])\n", argv[i]);
      return 2;
    }
    configs.push_back(*c);
  }
  if (configs.empty()) configs = {*ParseConfig("256"), *ParseConfig("256/32")};

  std::printf("load_bench: 100 ms epochs, TCG, %d s unprotected then %d s protected per config, "
              "%u host threads\n",
              run_seconds, run_seconds, std::thread::hardware_concurrency());
  std::vector<Result> results;
  for (const auto& c : configs) {
    std::fprintf(stderr, "load_bench: running %s ...\n", c.label.c_str());
    results.push_back(Run(c, run_seconds));
    const Result& r = results.back();
    if (!r.error.empty()) std::fprintf(stderr, "load_bench: %s failed: %s\n", c.label.c_str(),
                                       r.error.c_str());
  }

  std::printf("\nthroughput (host clock; guest clock in parentheses for memload)\n");
  std::printf("%-18s %-11s %9s %20s %8s %9s %5s %9s\n", "config", "phase", "counter/s",
              "memload pages/s", "x unprot", "guest clk", "MISM", "host busy");
  for (const auto& r : results) {
    if (!r.error.empty()) {
      std::printf("%-18s failed: %s\n", r.cfg.label.c_str(), r.error.c_str());
      continue;
    }
    for (int prot = 0; prot < 2; ++prot) {
      const Throughput& t = prot ? r.prot : r.unprot;
      char load[40] = "-", ratio[16] = "-", clk[16] = "-";
      if (r.cfg.load_mib) {
        std::snprintf(load, sizeof load, "%s (%s)", Units(t.load_host).c_str(),
                      Units(t.load_guest).c_str());
        std::snprintf(clk, sizeof clk, "%.3f", t.guest_clock);
        if (r.unprot.load_host > 0)
          std::snprintf(ratio, sizeof ratio, "%.3f", t.load_host / r.unprot.load_host);
      } else if (r.unprot.counter_per_s > 0) {
        std::snprintf(ratio, sizeof ratio, "%.3f", t.counter_per_s / r.unprot.counter_per_s);
      }
      std::printf("%-18s %-11s %9.2f %20s %8s %9s %5d %8.0f%%\n", r.cfg.label.c_str(),
                  prot ? "protected" : "unprotected", t.counter_per_s, load, ratio, clk,
                  t.mismatches, t.host_busy);
    }
  }

  std::printf("counter/s: dtcounter values per host second (nominally 50, paced by the guest's "
              "clock); memload pages/s: host clock (guest clock); x unprot: protected / "
              "unprotected of memload's host-clock rate, or of counter/s without memload; guest "
              "clk: guest seconds per host second; MISM: MISMATCH reports; host busy: all CPUs, "
              "any process\n");
  std::printf("\nepochs while protected (agent status on host a)\n");
  std::printf("%-18s %8s %9s %9s %9s %9s %12s %10s %8s %8s %s\n", "config", "seed ms", "pause p50",
              "pause p99", "read pass", "p50/read", "pages/epoch", "KiB/epoch", "epochs/s",
              "reseeds", "state; loadavg before -> after");
  for (const auto& r : results) {
    if (!r.error.empty()) continue;
    std::printf("%-18s %8ld %9.1f %9.1f %9.1f %9.2f %12.1f %10.1f %8.2f %8llu %s; %s -> %s\n",
                r.cfg.label.c_str(), r.seed_ms, r.p50, r.p99, r.read_ms, r.p50 / r.read_ms,
                r.pages_per_epoch, r.kib_per_epoch, r.epochs_per_s,
                static_cast<unsigned long long>(r.reseeds), r.state.c_str(),
                r.load_before.c_str(), r.load_after.c_str());
  }
  std::printf("(read pass: median of %d single-thread passes over the guest RAM file on host a, "
              "min %s ms)\n",
              kReadPasses, [&] {
                std::string s;
                for (const auto& r : results) {
                  if (!r.error.empty()) continue;
                  char b[32];
                  std::snprintf(b, sizeof b, "%s%.1f", s.empty() ? "" : "/", r.read_min_ms);
                  s += b;
                }
                return s;
              }().c_str());
  int failures = 0;
  for (const auto& r : results) failures += !r.error.empty();
  return failures == 0 ? 0 : 1;
}
