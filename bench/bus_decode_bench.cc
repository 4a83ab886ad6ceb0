// Times the agent's per-notification work on one real Nova notification (the instance.create.end
// body that Nova 26.2.2 published through oslo.messaging, tests/unit/bus/samples/): decode the
// AMQP body (envelope, then the inner JSON string), read the InstanceEvent, read the dt:* extra
// specs and look up the reaction. Single thread, so notifications/s is per core. Each stage is
// also timed alone (decode only; parse only on an already decoded message; specs + reaction
// only). Every figure is the median of the runs. Next to the wall time per notification it prints
// the thread's CPU time, which other load on a shared machine inflates much less.
//
// Usage: bus_decode_bench [iterations per run=100000] [runs=5] [sample .json]
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "agent/bus/nova_events.h"
#include "agent/bus/oslo_wire.h"

namespace {

using novadt::bus::DecodeOsloBody;
using novadt::bus::DtSpecs;
using novadt::bus::InstanceEvent;
using novadt::bus::InstanceReaction;
using novadt::bus::Json;
using novadt::bus::NovaEvent;
using novadt::bus::ParseDtSpecs;
using novadt::bus::ParseNovaNotification;
using novadt::bus::ReactionTo;
using Clock = std::chrono::steady_clock;

volatile long g_sink;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "bus_decode_bench: %s\n", what.c_str());
  std::exit(1);
}

std::string ReadBody(const std::string& path) {
  std::ifstream in(path);
  if (!in) Die("cannot read " + path);
  std::stringstream text;
  text << in.rdbuf();
  const Json sample = Json::parse(text.str(), nullptr, false);
  if (sample.is_discarded() || !sample.contains("body") || !sample["body"].is_string()) {
    Die(path + " is not a sample file (no \"body\" string)");
  }
  return sample["body"].get<std::string>();
}

// The whole path for one body; returns the reaction (and checks every step succeeded).
InstanceReaction Handle(const std::string& body) {
  auto decoded = DecodeOsloBody(body);
  if (!decoded.ok()) Die(std::string(decoded.status().message()));
  auto event = ParseNovaNotification(*decoded);
  if (!event.ok()) Die(std::string(event.status().message()));
  const auto* instance = std::get_if<InstanceEvent>(&*event);
  if (instance == nullptr) Die("not an instance event");
  auto specs = ParseDtSpecs(instance->extra_specs);
  if (!specs.ok()) Die(std::string(specs.status().message()));
  return specs->enabled ? ReactionTo(*instance) : InstanceReaction::kIgnore;
}

double ThreadCpuNs() {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

struct Cost {
  double wall_ns;  // per iteration
  double cpu_ns;   // per iteration, this thread's CPU time
};

// Median wall and CPU ns per iteration of `fn` over `runs` runs of `iterations` calls.
template <typename Fn>
Cost MedianNs(long iterations, int runs, Fn fn) {
  std::vector<double> wall, cpu;
  for (int r = 0; r < runs; ++r) {
    const auto t0 = Clock::now();
    const double c0 = ThreadCpuNs();
    for (long i = 0; i < iterations; ++i) fn();
    const std::chrono::duration<double, std::nano> d = Clock::now() - t0;
    cpu.push_back((ThreadCpuNs() - c0) / iterations);
    wall.push_back(d.count() / iterations);
  }
  std::sort(wall.begin(), wall.end());
  std::sort(cpu.begin(), cpu.end());
  return {wall[wall.size() / 2], cpu[cpu.size() / 2]};
}

}  // namespace

int main(int argc, char** argv) {
  const long iterations = argc > 1 ? std::atol(argv[1]) : 100000;
  const int runs = argc > 2 ? std::atoi(argv[2]) : 5;
  const std::string path = argc > 3 ? argv[3]
                                    : std::string(NOVA_DT_SOURCE_DIR) +
                                          "/tests/unit/bus/samples/nova_instance_create_end.json";
  if (iterations <= 0 || runs <= 0) Die("usage: bus_decode_bench [iterations] [runs] [sample]");

  const std::string body = ReadBody(path);
  const InstanceReaction reaction = Handle(body);
  if (reaction != InstanceReaction::kRecord) Die("the sample's reaction is not kRecord");
  const Json decoded = *DecodeOsloBody(body);
  const InstanceEvent event = std::get<InstanceEvent>(*ParseNovaNotification(decoded));
  for (int i = 0; i < 1000; ++i) g_sink = static_cast<long>(Handle(body));  // warm-up

  const Cost all_ns =
      MedianNs(iterations, runs, [&] { g_sink = g_sink + static_cast<long>(Handle(body)); });
  const Cost decode_ns = MedianNs(
      iterations, runs, [&] { g_sink = g_sink + static_cast<long>(DecodeOsloBody(body)->size()); });
  const Cost parse_ns = MedianNs(iterations, runs, [&] {
    g_sink = g_sink + static_cast<long>(ParseNovaNotification(decoded)->index());
  });
  const Cost react_ns = MedianNs(iterations, runs, [&] {
    const DtSpecs specs = *ParseDtSpecs(event.extra_specs);
    g_sink = g_sink + static_cast<long>(ReactionTo(event)) + specs.enabled;
  });

  std::printf("bus_decode_bench: %s\n", path.c_str());
  std::printf("body %zu bytes (inner message %zu bytes), %ld iterations x %d runs, 1 thread\n",
              body.size(), Json::parse(body)["oslo.message"].get<std::string>().size(), iterations,
              runs);
  std::printf("%-40s %12s %16s %12s\n", "stage", "ns/notif", "notifications/s", "cpu ns/notif");
  auto row = [](const char* what, Cost c) {
    std::printf("%-40s %12.0f %16.0f %12.0f\n", what, c.wall_ns, 1e9 / c.wall_ns, c.cpu_ns);
  };
  row("all: decode+parse+specs+reaction", all_ns);
  row("DecodeOsloBody", decode_ns);
  row("ParseNovaNotification", parse_ns);
  row("ParseDtSpecs+ReactionTo", react_ns);
  return 0;
}
