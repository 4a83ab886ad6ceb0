// The agent's oslo.config-style INI files (agent/config/config_loader.h): the whole of
// LoadAgentConfig(), reading the input as a configuration file through /proc/self/fd of a
// memfd (no file on disk). Errors are values: any outcome is fine but an exception, a crash or
// an error message that is not one line.
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "agent/config/config_loader.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);  // unknown options are logged as warnings
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const int fd = memfd_create("nova-dt-fuzz.conf", MFD_CLOEXEC);
  static const std::string path = "/proc/self/fd/" + std::to_string(fd);
  FUZZ_CHECK(fd >= 0, "memfd_create failed");
  FUZZ_CHECK(ftruncate(fd, 0) == 0 && pwrite(fd, data, size, 0) == static_cast<ssize_t>(size),
             "cannot write the memfd");
  const auto config = novadt::config::LoadAgentConfig({path});
  if (!config.ok()) {
    const std::string message(config.status().message());
    FUZZ_CHECK(message.find('\n') == std::string::npos, "a multi-line error: %s",
               message.c_str());
  }
  return 0;
}
