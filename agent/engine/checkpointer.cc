#include "agent/engine/checkpointer.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "agent/common/scoped_fd.h"
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

Status Checkpointer::PassDeviceStateFd() {
  if (!state_file_.valid()) {
    state_file_ = ScopedFd(::memfd_create("nova-dt-devstate", MFD_CLOEXEC));
    if (!state_file_.valid()) {
      return absl::InternalError(std::string("memfd_create: ") + std::strerror(errno));
    }
  }
  // QEMU gets a duplicate sharing our file offset: rewind and empty the file for this save.
  if (::ftruncate(state_file_.get(), 0) != 0 || ::lseek(state_file_.get(), 0, SEEK_SET) != 0) {
    return absl::InternalError(std::string("resetting the device-state file: ") +
                               std::strerror(errno));
  }
  auto got = hv_.QemuMonitorCommandWithFd(
      uuid_, nlohmann::json{{"execute", "getfd"}, {"arguments", {{"fdname", kDeviceStateFd}}}}.dump(),
      state_file_.get());
  if (!got.ok()) return got.status();
  auto reply = nlohmann::json::parse(*got, nullptr, false);
  if (reply.is_discarded() || reply.contains("error")) {
    return absl::FailedPreconditionError("QMP getfd failed: " + *got);
  }
  return absl::OkStatus();
}

Status Checkpointer::StartDeviceStateSave() {
  return QmpCall(hv_, uuid_,
                 {{"execute", "migrate"}, {"arguments", {{"uri", std::string("fd:") + kDeviceStateFd}}}})
      .status();
}

// QEMU's migration thread writes the state into the file while we stage RAM; "completed" is set
// only after its last flush, so the file then holds the whole stream. Whatever happens, no
// migration is left running: one that completed after our `cont` would stop the guest again.
Status Checkpointer::WaitDeviceStateSave() {
  const auto deadline = clock_.Now() + device_state_timeout_;
  for (;;) {
    auto st = QmpCall(hv_, uuid_, {{"execute", "query-migrate"}});
    if (!st.ok()) {
      (void)Qmp("migrate_cancel");
      return st.status();
    }
    const std::string status = st->value("status", "");
    if (status == "completed") break;
    if (status == "failed" || status == "cancelled") {
      return absl::FailedPreconditionError("device-state save " + status + ": " +
                                           st->value("error-desc", ""));
    }
    if (clock_.Now() >= deadline) {
      (void)Qmp("migrate_cancel");
      return absl::DeadlineExceededError("device-state save did not finish in time (still '" +
                                         status + "')");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return absl::OkStatus();
}

Status Checkpointer::ReadDeviceState(std::string& out) {
  struct stat sb;
  if (::fstat(state_file_.get(), &sb) != 0) {
    return absl::InternalError(std::string("device-state file: ") + std::strerror(errno));
  }
  if (sb.st_size == 0) return absl::FailedPreconditionError("QEMU saved no device state");
  out.resize(static_cast<size_t>(sb.st_size));
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::pread(state_file_.get(), out.data() + done, out.size() - done,
                              static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::InternalError(std::string("reading device state: ") +
                                 (n < 0 ? std::strerror(errno) : "file shrank"));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

StatusOr<PauseTimings> Checkpointer::Take(uint64_t epoch, core::StagedEpoch& out,
                                          const ExtraDirty& extra_dirty, After after) {
  PauseTimings t;
  // Before the pause, while the guest runs. Opening the next epoch's egress buffer now rather
  // than during the pause is safe: frames the guest sends until `stop` are then held one epoch
  // longer than needed, never shorter (they are released only after a checkpoint taken after
  // they were sent). It saves a QMP round trip inside the pause, as does passing the fd now.
  const auto t_prepare = clock_.Now();
  NOVA_DT_RETURN_IF_ERROR(egress_.Open(epoch + 1));
  Status st = PassDeviceStateFd();
  const auto t_stop = clock_.Now();
  if (st.ok()) st = Qmp("stop");
  if (!st.ok()) {  // the guest never stopped
    (void)egress_.Cancel(epoch + 1);
    return st;
  }
  const auto t0 = clock_.Now();

  // From here on the guest must be resumed whatever happens. QEMU's migration thread saves the
  // device state while this thread collects and stages the dirty pages. (Sending `migrate` from
  // a second thread as well hides its round trip only where a core is free: on this 2-core
  // sandbox the reply then waited for the scan and the pause grew by 3-6 ms.)
  out.epoch = epoch;
  Status saved = StartDeviceStateSave();
  st = saved;
  const auto t1 = clock_.Now();
  Clock::TimePoint t2 = t1, t3 = t1;
  if (saved.ok()) {
    auto dirty = tracker_.Collect();
    t2 = clock_.Now();
    if (!dirty.ok()) {
      st = dirty.status();
    } else {
      if (extra_dirty) extra_dirty(*dirty);
      st = stager_.Stage(*dirty, out);
    }
    out.disk_writes = take_disk_writes_ ? take_disk_writes_() : std::vector<core::DiskWrite>{};
    t3 = clock_.Now();
    // No migration may outlive the pause: one completing after `cont` would stop the guest.
    saved = WaitDeviceStateSave();
    if (saved.ok()) saved = ReadDeviceState(out.device_state);
    if (st.ok()) st = saved;
  }
  const auto t4 = clock_.Now();
  // A failed checkpoint opens no epoch: the new buffer's frames fall back into the one before.
  if (!st.ok()) (void)egress_.Cancel(epoch + 1);
  // Availability first: a failed checkpoint resumes the guest even when it was to stay paused.
  Status resumed = (after == After::kStayPaused && st.ok()) ? absl::OkStatus() : Qmp("cont");
  const auto t5 = clock_.Now();
  if (!resumed.ok()) {
    // The guest is stuck paused: that is worse than any lost epoch; say so loudly.
    return absl::InternalError("cannot resume the guest after checkpoint " +
                               std::to_string(epoch) + ": " + std::string(resumed.message()) +
                               (st.ok() ? "" : " (after: " + std::string(st.message()) + ")"));
  }
  NOVA_DT_RETURN_IF_ERROR(st);
  t.prepare = t_stop - t_prepare;
  t.stop = t0 - t_stop;
  t.save_start = t1 - t0;
  t.dirty = t2 - t1;
  t.copy = t3 - t2;
  t.device_state = t4 - t3;
  t.resume = t5 - t4;
  t.total = t5 - t_stop;
  return t;
}

}  // namespace novadt::engine
