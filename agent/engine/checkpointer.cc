#include "agent/engine/checkpointer.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "agent/dirty/scoped_fd.h"
#include "agent/engine/qmp.h"

namespace novadt::engine {
namespace {

constexpr char kDeviceStateFd[] = "nova-dt-devstate";

}  // namespace

Checkpointer::Checkpointer(core::Hypervisor& hv, std::string instance_uuid,
                           dirty::DirtyTracker& tracker, const RamStager& stager,
                           EgressGate& egress, TakeDiskWrites take_disk_writes, const Clock& clock)
    : hv_(hv),
      uuid_(std::move(instance_uuid)),
      tracker_(tracker),
      stager_(stager),
      egress_(egress),
      take_disk_writes_(std::move(take_disk_writes)),
      clock_(clock) {}

Status Checkpointer::Qmp(const char* execute) {
  return QmpCall(hv_, uuid_, {{"execute", execute}}).status();
}

Status Checkpointer::Prepare() {
  return QmpCall(hv_, uuid_,
                 {{"execute", "migrate-set-capabilities"},
                  {"arguments",
                   {{"capabilities",
                     nlohmann::json::array({{{"capability", "x-ignore-shared"}, {"state", true}}})}}}})
      .status();
}

// QEMU writes the state into our pipe from its migration thread and closes its end when done;
// we read to EOF (bounded), then confirm the migration completed.
Status Checkpointer::SaveDeviceState(std::string& out) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return absl::InternalError(std::string("pipe: ") + std::strerror(errno));
  }
  dirty::ScopedFd read_end(fds[0]);
  {
    dirty::ScopedFd write_end(fds[1]);
    auto got = hv_.QemuMonitorCommandWithFd(
        uuid_, nlohmann::json{{"execute", "getfd"}, {"arguments", {{"fdname", kDeviceStateFd}}}}.dump(),
        write_end.get());
    if (!got.ok()) return got.status();
    auto reply = nlohmann::json::parse(*got, nullptr, false);
    if (reply.is_discarded() || reply.contains("error")) {
      return absl::FailedPreconditionError("QMP getfd failed: " + *got);
    }
  }  // our copy of the write end is closed: EOF comes when QEMU closes its copy
  NOVA_DT_RETURN_IF_ERROR(
      QmpCall(hv_, uuid_,
              {{"execute", "migrate"}, {"arguments", {{"uri", std::string("fd:") + kDeviceStateFd}}}})
          .status());

  out.clear();
  const auto deadline = clock_.Now() + device_state_timeout_;
  char buf[65536];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_.Now());
    if (left.count() <= 0) {
      (void)Qmp("migrate_cancel");
      return absl::DeadlineExceededError("device-state save did not finish in time");
    }
    pollfd p{read_end.get(), POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    const ssize_t n = ::read(read_end.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::InternalError(std::string("reading device state: ") + std::strerror(errno));
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  // EOF: QEMU is done writing; the migration must say so too (a failed one also closes the fd).
  for (;;) {
    auto st = QmpCall(hv_, uuid_, {{"execute", "query-migrate"}});
    if (!st.ok()) return st.status();
    const std::string status = st->value("status", "");
    if (status == "completed") return absl::OkStatus();
    if (status == "failed" || status == "cancelled") {
      return absl::FailedPreconditionError("device-state save " + status + ": " +
                                           st->value("error-desc", ""));
    }
    if (clock_.Now() >= deadline) {
      return absl::DeadlineExceededError("device-state save still '" + status + "'");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

StatusOr<PauseTimings> Checkpointer::Take(uint64_t epoch, core::StagedEpoch& out,
                                          const ExtraDirty& extra_dirty) {
  PauseTimings t;
  const auto t0 = clock_.Now();
  NOVA_DT_RETURN_IF_ERROR(Qmp("stop"));  // failed: the guest never stopped
  const auto t1 = clock_.Now();

  // From here on the guest must be resumed whatever happens.
  Status st;
  out.epoch = epoch;
  auto dirty = tracker_.Collect();
  const auto t2 = clock_.Now();
  if (!dirty.ok()) {
    st = dirty.status();
  } else {
    if (extra_dirty) extra_dirty(*dirty);
    st = stager_.Stage(*dirty, out);
  }
  const auto t3 = clock_.Now();
  if (st.ok()) {
    out.disk_writes = take_disk_writes_ ? take_disk_writes_() : std::vector<core::DiskWrite>{};
    st = SaveDeviceState(out.device_state);
  }
  const auto t4 = clock_.Now();
  if (st.ok()) st = egress_.Open(epoch + 1);
  Status resumed = Qmp("cont");
  const auto t5 = clock_.Now();
  if (!resumed.ok()) {
    // The guest is stuck paused: that is worse than any lost epoch; say so loudly.
    return absl::InternalError("cannot resume the guest after checkpoint " +
                               std::to_string(epoch) + ": " + std::string(resumed.message()) +
                               (st.ok() ? "" : " (after: " + std::string(st.message()) + ")"));
  }
  NOVA_DT_RETURN_IF_ERROR(st);
  t.stop = t1 - t0;
  t.dirty = t2 - t1;
  t.copy = t3 - t2;
  t.device_state = t4 - t3;
  t.resume = t5 - t4;
  t.total = t5 - t0;
  return t;
}

}  // namespace novadt::engine
