#include "agent/common/logging.h"

#include <spdlog/sinks/stdout_sinks.h>

namespace novadt {

bool InitLogging(std::string_view level) {
  // oslo.log-like layout: timestamp, pid, level, logger name, message. Written to stderr so
  // systemd/journald and the rig's log files both capture it.
  auto logger = spdlog::stderr_logger_mt("nova-dt-agent");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %P %^%l%$ %n [%t] %v");
  spdlog::flush_on(spdlog::level::info);
  auto lvl = spdlog::level::from_str(std::string(level == "warning" ? "warn" : level));
  const bool known = !(lvl == spdlog::level::off && level != "off");
  spdlog::set_level(known ? lvl : spdlog::level::info);
  return known;
}

}  // namespace novadt
