// The fixture the rig's pair suites share (tests/e2e/*_fault_test.cc, switchover_test.cc): the
// two-host rig with the counting test guest on host a, both agents (optionally on an etcd witness
// in the rig's switch namespace), a protecting the guest to b; and the checks those suites make
// on what the observer saw.
#pragma once

#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "nova_dt/v1/control.grpc.pb.h"
#include "tests/support/agent_control.h"
#include "tests/support/etcd_server.h"
#include "tests/support/rig.h"
#include "tests/support/test_util.h"

namespace novadt::testing {

struct PairRigOptions {
  std::string rig_name;  // unique among suites that may run at the same time
  // With an etcd witness: its lease; the fence margin and request timeout default to TTL/4.
  bool witness = true;
  int lease_ttl_ms = 2000;
  int fence_margin_ms = 0;
  int request_timeout_ms = 0;
  // More agent settings ("section.key=value"): for both agents, and for one ("a" / "b").
  std::vector<std::string> agent_settings;
  std::map<std::string, std::vector<std::string>> host_settings;
  // Protected once the backup committed this epoch, within `protect_timeout`.
  uint64_t protected_epoch = 10;
  std::chrono::seconds protect_timeout{120};
  // false: BringUp stops once the guest counts and both agents run (the test protects).
  bool protect = true;
  // Impairs one host's link before the pair is protected (`rig netem HOST ARGS`), e.g.
  // {"b", "delay 50ms loss 5%"}: the pair seeds and runs on that link from the start.
  std::map<std::string, std::string> netem;
};

class PairRigTest : public ::testing::Test {
 protected:
  explicit PairRigTest(std::string guest_uuid) : uuid_(std::move(guest_uuid)) {}

  void BringUp(const PairRigOptions& o) {
    rig_ = std::make_unique<Rig>(o.rig_name);
    Status up = rig_->Up();
    ASSERT_TRUE(up.ok()) << up;
    for (const auto& [host, args] : o.netem) {
      Status impaired = rig_->Netem(host, args);
      ASSERT_TRUE(impaired.ok()) << impaired;
    }
    settings_ = o.agent_settings;
    host_settings_ = o.host_settings;
    if (o.witness) {
      EtcdServer::Options eo;
      eo.exec_prefix = rig_->ExecPrefix("net");
      eo.listen_ip = Rig::kNetAddress;
      etcd_ = std::make_unique<EtcdServer>(eo);
      ASSERT_TRUE(etcd_->Start().ok()) << etcd_->LogTail();
      const int margin = o.fence_margin_ms > 0 ? o.fence_margin_ms : o.lease_ttl_ms / 4;
      const int timeout = o.request_timeout_ms > 0 ? o.request_timeout_ms : o.lease_ttl_ms / 4;
      settings_.insert(settings_.end(),
                       {"witness.etcd_endpoints=" + etcd_->endpoint(),
                        "witness.lease_ttl_ms=" + std::to_string(o.lease_ttl_ms),
                        "witness.fence_margin_ms=" + std::to_string(margin),
                        "witness.request_timeout_ms=" + std::to_string(timeout)});
    }
    ASSERT_TRUE(rig_->BootGuest("a", "dtguest", uuid_).ok());
    for (const char* host : {"a", "b"}) {
      Status started = rig_->StartAgent(host, AgentSettings(host));
      ASSERT_TRUE(started.ok()) << started << "\n" << Log(host);
    }
    ASSERT_TRUE(WaitFor([&] { return rig_->ObserverValues().size() > 20; }, std::chrono::seconds(60)));
    if (!o.protect) return;
    grpc::ClientContext ctx;
    nova_dt::v1::ProtectRequest req;
    req.set_instance_uuid(uuid_);
    req.set_backup_host("rig-b");
    nova_dt::v1::ProtectReply reply;
    grpc::Status st = Control("a")->Protect(&ctx, req, &reply);
    ASSERT_TRUE(st.ok()) << st.error_message();
    ASSERT_TRUE(WaitForProtected("a", "b", o.protected_epoch, o.protect_timeout)) << Log("a");
  }

  void TearDown() override {
    if (rig_) {
      EXPECT_TRUE(rig_->Down().ok());
      EXPECT_TRUE(rig_->VerifyGone().ok());
    }
  }

  // The settings BringUp gave `host`'s agent (witness included): for restarting it alike.
  std::vector<std::string> AgentSettings(const std::string& host) const {
    std::vector<std::string> all = settings_;
    if (auto it = host_settings_.find(host); it != host_settings_.end()) {
      all.insert(all.end(), it->second.begin(), it->second.end());
    }
    return all;
  }

  std::unique_ptr<nova_dt::v1::Control::Stub> Control(const std::string& host) const {
    return nova_dt::v1::Control::NewStub(
        grpc::CreateChannel(rig_->AgentControlAddress(host), grpc::InsecureChannelCredentials()));
  }
  // The guest as `host`'s agent reports it; nullopt when absent or the agent does not answer.
  std::optional<nova_dt::v1::ProtectedServer> Server(const std::string& host) const {
    return ProtectedServerAt(rig_->AgentControlAddress(host), uuid_);
  }
  // `primary` protects the guest and `backup` reports it protected, committed at `min_epoch`
  // or later.
  bool WaitForProtected(const std::string& primary, const std::string& backup, uint64_t min_epoch,
                        std::chrono::milliseconds timeout) const {
    return WaitFor(
        [&] {
          auto p = Server(primary);
          auto b = Server(backup);
          return p && p->role() == "primary" && p->state() == "protected" && b &&
                 b->role() == "backup" && b->state() == "protected" &&
                 b->last_committed_epoch() >= min_epoch;
        },
        timeout);
  }

  std::string Log(const std::string& host) const {
    const std::string log = ReadFile(rig_->dir() + "/" + host + "/agent/agent.log");
    return host + "'s agent log tail:\n" + log.substr(log.size() > 4000 ? log.size() - 4000 : 0);
  }
  std::string DomState(const std::string& host) const {
    std::string out;
    rig_->Exec(host, {"virsh", "domstate", "dtguest"}, &out);
    return out.substr(0, out.find('\n'));
  }

  // The observer's values from index `from` on: each exactly one more than the one before (one
  // guest, counting on, no second copy interleaving; nothing released lost, nothing repeated).
  // From index `skip_from` on, one step may skip values (an unplanned take-over): frames of the
  // last committed epoch that the lost primary had not released were never seen by anyone (a
  // TCP peer would get them retransmitted by the restored guest).
  void ExpectOneCountingGuest(const std::string& what, size_t from = 0,
                              std::optional<size_t> skip_from = std::nullopt) const {
    auto values = rig_->ObserverValues();
    bool skipped = false;
    for (size_t i = std::max<size_t>(from, 1); i < values.size(); ++i) {
      if (skip_from && i >= *skip_from && !skipped && values[i] > values[i - 1] + 1) {
        skipped = true;
        continue;
      }
      if (values[i] != values[i - 1] + 1) {
        ADD_FAILURE() << what << ": value " << values[i] << " after " << values[i - 1] << " at "
                      << i;
        return;
      }
    }
  }

  // The observer's arrivals after `since` (unix seconds): the largest gap between two, in ms.
  double LargestGapMs(double since) const {
    std::istringstream log(ReadFile(rig_->dir() + "/observer.log"));
    double prev = since, gap = 0;
    for (std::string line; std::getline(log, line);) {
      if (line.find("seq=") == std::string::npos) continue;
      const double t = std::strtod(line.c_str(), nullptr);
      if (t < since) continue;
      gap = std::max(gap, (t - prev) * 1000);
      prev = t;
    }
    return gap;
  }
  static double UnixNow() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  const std::string uuid_;
  std::unique_ptr<Rig> rig_;
  std::unique_ptr<EtcdServer> etcd_;
  std::vector<std::string> settings_;
  std::map<std::string, std::vector<std::string>> host_settings_;
};

}  // namespace novadt::testing
