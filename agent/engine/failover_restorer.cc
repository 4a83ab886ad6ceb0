#include "agent/engine/failover_restorer.h"

#include "agent/common/scoped_fd.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "agent/engine/boot_files.h"
#include "agent/engine/qmp.h"

namespace novadt::engine {
namespace {

constexpr char kLoadFdName[] = "dt-restore";

Status Errno(const std::string& what, int err) {
  const std::string msg = what + ": " + std::strerror(err);
  return err == ENOENT ? absl::NotFoundError(msg) : absl::InternalError(msg);
}

// `st` with `step` prepended to its message, code kept.
Status At(const std::string& step, const Status& st) {
  return Status(st.code(), step + ": " + std::string(st.message()));
}

RestoreTimings::ms Since(const Clock& clock, Clock::TimePoint t0) {
  return std::chrono::duration_cast<RestoreTimings::ms>(clock.Now() - t0);
}

}  // namespace

FailoverRestorer::FailoverRestorer(core::DomainLauncher& launcher, core::Hypervisor& hypervisor,
                                   const Clock& clock, FailoverRestorerOptions options)
    : launcher_(launcher), hv_(hypervisor), clock_(clock), options_(std::move(options)) {}

Status FailoverRestorer::Arm(const RestoreRequest& req) const {
  struct stat ram = {}, dir = {};
  if (::stat(req.ram_path.c_str(), &ram) != 0) return Errno("replica RAM " + req.ram_path, errno);
  if (::stat(options_.arm_dir.c_str(), &dir) != 0) {
    return Errno("hook arm directory " + options_.arm_dir, errno);
  }
  if (ram.st_dev != dir.st_dev) {
    return absl::FailedPreconditionError(
        "replica RAM " + req.ram_path + " is not on the file system of " + options_.arm_dir +
        " (libvirt's memory_backing_dir): the start hook can only hard-link it from there; put "
        "[replication] replica_path inside memory_backing_dir");
  }
  // The hook resolves a relative name against the arm directory: the same text works whether
  // the agent sees the host's file system directly or through a prefix (test rigs).
  std::string name = req.ram_path;
  const std::string prefix = options_.arm_dir + "/";
  if (name.compare(0, prefix.size(), prefix) == 0) name = name.substr(prefix.size());
  const std::string arm = options_.arm_dir + "/" + req.instance_uuid + ".arm";
  const std::string tmp = arm + ".tmp";
  {
    // The hook runs as root and trusts what the file says: only root may write or read it. A
    // new file every time: a leftover .arm.tmp (a crash between open and rename, or something
    // planted: another owner, a hard link, a FIFO that would block the open) is never reused.
    if (::unlink(tmp.c_str()) != 0 && errno != ENOENT) {
      return Errno("cannot remove the leftover " + tmp, errno);
    }
    ScopedFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (fd.get() < 0) return Errno("cannot write " + tmp, errno);
    if (::fchmod(fd.get(), 0600) != 0) {
      const int err = errno;
      ::unlink(tmp.c_str());
      return Errno("cannot chmod " + tmp, err);
    }
    // Line 1: the replica RAM file. Line 2 (when the options name QEMU's ids): "uid:gid", the
    // owner of the guest-RAM directory the hook makes.
    std::string line = name + "\n";
    const FileOwner& q = options_.qemu;
    if (q.uid != FileOwner::kKeepUid && q.gid != FileOwner::kKeepGid) {
      line += std::to_string(q.uid) + ":" + std::to_string(q.gid) + "\n";
    }
    if (::write(fd.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      const int err = errno;
      ::unlink(tmp.c_str());
      return Errno("cannot write " + tmp, err);
    }
  }
  if (::rename(tmp.c_str(), arm.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return Errno("cannot arm " + arm, err);
  }
  return absl::OkStatus();
}

void FailoverRestorer::Disarm(const std::string& uuid) const {
  const std::string arm = options_.arm_dir + "/" + uuid + ".arm";
  if (::unlink(arm.c_str()) != 0 && errno != ENOENT) {
    spdlog::warn("restore {}: cannot remove {}: {}", uuid, arm, std::strerror(errno));
  }
}

Status FailoverRestorer::LoadDeviceState(const RestoreRequest& req) {
  const std::string& uuid = req.instance_uuid;
  auto caps = QmpCall(
      hv_, uuid,
      {{"execute", "migrate-set-capabilities"},
       {"arguments", {{"capabilities", {{{"capability", "x-ignore-shared"}, {"state", true}}}}}}});
  if (!caps.ok()) return caps.status();

  ScopedFd fd(::open(req.device_state_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return Errno("device state " + req.device_state_path, errno);
  const nlohmann::json getfd = {{"execute", "getfd"}, {"arguments", {{"fdname", kLoadFdName}}}};
  auto reply = hv_.QemuMonitorCommandWithFd(uuid, getfd.dump(), fd.get());
  if (!reply.ok()) return reply.status();
  const nlohmann::json j = nlohmann::json::parse(*reply, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("return")) {
    return absl::FailedPreconditionError("QMP getfd failed: " + reply->substr(0, 200));
  }

  auto incoming = QmpCall(hv_, uuid,
                          {{"execute", "migrate-incoming"},
                           {"arguments", {{"uri", std::string("fd:") + kLoadFdName}}}});
  if (!incoming.ok()) return incoming.status();

  const auto deadline = clock_.Now() + options_.load_timeout;
  while (true) {
    auto q = QmpCall(hv_, uuid, {{"execute", "query-migrate"}});
    if (!q.ok()) return q.status();
    const std::string status = q->value("status", "");
    if (status == "completed") return absl::OkStatus();
    if (status == "failed" || status == "cancelled") {
      return absl::FailedPreconditionError("loading the device state " + status + ": " +
                                           q->value("error-desc", "(no description)"));
    }
    if (clock_.Now() >= deadline) {
      return absl::DeadlineExceededError("device state not loaded after " +
                                         std::to_string(options_.load_timeout.count()) +
                                         " ms (query-migrate status '" + status + "')");
    }
    std::this_thread::sleep_for(options_.poll_interval);
  }
}

StatusOr<RestoreResult> FailoverRestorer::Restore(const RestoreRequest& req) {
  const std::string& uuid = req.instance_uuid;
  if (req.committed_epoch == 0) {
    return absl::FailedPreconditionError("restore " + uuid +
                                         ": the replica holds no committed epoch");
  }
  const auto t0 = clock_.Now();
  RestoreResult result;
  result.epoch = req.committed_epoch;

  // Any failure from here on: no half-started domain, no arm file and no instance directory made
  // here stay behind.
  bool started = false;
  std::optional<PreparedInstanceDir> instance_dir;
  auto fail = [&](const std::string& step, const Status& st) -> Status {
    if (started) {
      if (Status d = launcher_.Destroy(uuid); !d.ok()) {
        spdlog::error("restore {}: cannot destroy the half-started domain: {}", uuid, d.ToString());
      }
    }
    if (instance_dir) {
      if (Status d = DiscardInstanceDir(*instance_dir); !d.ok()) {
        spdlog::error("restore {}: cannot remove the instance directory it made: {}", uuid,
                      d.ToString());
      }
    }
    Disarm(uuid);
    Status out =
        At("restore " + uuid + " (epoch " + std::to_string(req.committed_epoch) + "): " + step, st);
    spdlog::error("{}", out.ToString());
    return out;
  };

  auto t = clock_.Now();
  if (req.instance_dir || !req.boot_files.empty()) {
    for (const auto& [name, copy] : req.boot_files) {
      if (copy.empty()) {
        return fail("preparing the instance directory",
                    absl::FailedPreconditionError(
                        "the domain boots from " + options_.instances_path + "/" + uuid + "/" +
                        name + " but the replica holds no copy of it (its primary's agent sent "
                        "no boot files: replication protocol before 4)"));
      }
    }
    auto prepared = PrepareInstanceDir({options_.instances_path}, uuid, req.boot_files);
    if (!prepared.ok()) return fail("preparing the instance directory", prepared.status());
    instance_dir = *std::move(prepared);
  }
  result.timings.instance_dir = Since(clock_, t);

  if (Status st = Arm(req); !st.ok()) return fail("arming the start hook", st);

  core::RestoreSpec spec{req.domain_xml, req.disk_paths};
  t = clock_.Now();
  auto launched = launcher_.StartPausedIncoming(spec);
  if (!launched.ok()) return fail("starting the domain paused for incoming", launched.status());
  if (launched->uuid != uuid) {
    // The definition named another domain (the stream-open check refuses that; this is the
    // last line): stop what was started, and never touch the server's own name.
    if (Status d = launcher_.Destroy(launched->uuid); !d.ok()) {
      spdlog::error("restore {}: cannot destroy the domain {} it started: {}", uuid,
                    launched->uuid, d.ToString());
    }
    return fail("starting the domain paused for incoming",
                absl::InvalidArgumentError("the definition started domain " + launched->uuid +
                                           ", not " + uuid));
  }
  started = true;
  result.domain_id = launched->id;
  result.timings.start_paused = Since(clock_, t);

  auto mapped = launcher_.DomainRamFile(uuid);
  if (!mapped.ok()) return fail("finding the guest RAM file", mapped.status());
  struct stat want = {}, got = {};
  if (::stat(req.ram_path.c_str(), &want) != 0) {
    return fail("checking the guest RAM file", Errno(req.ram_path, errno));
  }
  if (::stat(mapped->c_str(), &got) != 0 || got.st_dev != want.st_dev ||
      got.st_ino != want.st_ino) {
    return fail(
        "checking the guest RAM file",
        absl::FailedPreconditionError("QEMU's guest RAM " + *mapped + " is not the replica RAM " +
                                      req.ram_path + " (is the nova-dt libvirt hook installed?)"));
  }

  t = clock_.Now();
  if (Status st = LoadDeviceState(req); !st.ok()) return fail("loading the device state", st);
  result.timings.load_state = Since(clock_, t);

  t = clock_.Now();
  if (Status st = launcher_.Resume(uuid); !st.ok()) return fail("resuming", st);
  result.timings.resume = Since(clock_, t);
  result.timings.to_running = Since(clock_, t0);

  t = clock_.Now();
  result.persist_error = launcher_.MakePersistent(spec);
  result.persistent = result.persist_error.ok();
  result.timings.define = Since(clock_, t);
  if (!result.persistent) {
    spdlog::error("restore {}: guest runs but is transient: {}", uuid,
                  result.persist_error.ToString());
  }
  // The boot files were written to the page cache only (QEMU read them from there); durable now,
  // for a later boot of the server here. The guest runs either way.
  if (instance_dir) {
    if (Status st = SyncInstanceDir(*instance_dir); !st.ok()) {
      spdlog::warn("restore {}: the instance directory is not durable yet: {}", uuid,
                   st.ToString());
    }
  }
  Disarm(uuid);
  spdlog::info(
      "restore {}: running from epoch {} as domain id {}, {:.1f} ms to running "
      "(instance directory {:.1f}, start {:.1f}, load {:.1f}, resume {:.1f})",
      uuid, req.committed_epoch, result.domain_id, result.timings.to_running.count(),
      result.timings.instance_dir.count(), result.timings.start_paused.count(),
      result.timings.load_state.count(), result.timings.resume.count());
  return result;
}

}  // namespace novadt::engine
