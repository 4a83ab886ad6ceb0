// Logging for the agent: spdlog underneath, nova's "[instance: <uuid>]" convention on top.
//
// Call InitLogging() once from main(); afterwards every thread may log. Lines about one server
// go through InstanceLog so operators can grep one instance across nova and nova-dt logs.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include <spdlog/spdlog.h>

namespace novadt {

// Sets the process-wide log format and level ("debug", "info", "warning", "error").
// Returns false (and keeps "info") when the level name is unknown.
bool InitLogging(std::string_view level);

// A view of the log bound to one Nova instance UUID; cheap to copy.
class InstanceLog {
 public:
  explicit InstanceLog(std::string instance_uuid)
      : prefix_("[instance: " + instance_uuid + "] ") {}

  template <typename... Args>
  void Debug(spdlog::format_string_t<Args...> fmt, Args&&... args) const {
    Log(spdlog::level::debug, fmt, std::forward<Args>(args)...);
  }
  template <typename... Args>
  void Info(spdlog::format_string_t<Args...> fmt, Args&&... args) const {
    Log(spdlog::level::info, fmt, std::forward<Args>(args)...);
  }
  template <typename... Args>
  void Warn(spdlog::format_string_t<Args...> fmt, Args&&... args) const {
    Log(spdlog::level::warn, fmt, std::forward<Args>(args)...);
  }
  template <typename... Args>
  void Error(spdlog::format_string_t<Args...> fmt, Args&&... args) const {
    Log(spdlog::level::err, fmt, std::forward<Args>(args)...);
  }

  const std::string& prefix() const { return prefix_; }

 private:
  template <typename... Args>
  void Log(spdlog::level::level_enum lvl, spdlog::format_string_t<Args...> fmt,
           Args&&... args) const {
    if (!spdlog::should_log(lvl)) return;
    spdlog::log(lvl, "{}{}", prefix_, fmt::format(fmt, std::forward<Args>(args)...));
  }

  std::string prefix_;
};

}  // namespace novadt
