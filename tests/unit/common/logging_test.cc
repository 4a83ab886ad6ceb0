#include "agent/common/logging.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <sstream>

namespace novadt {
namespace {

class LoggingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    previous_ = spdlog::default_logger();
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("test", sink));
    spdlog::set_pattern("%l %v");
    spdlog::set_level(spdlog::level::info);
  }
  void TearDown() override { spdlog::set_default_logger(previous_); }

  std::ostringstream out_;
  std::shared_ptr<spdlog::logger> previous_;
};

TEST_F(LoggingTest, InstanceLinesCarryNovasInstanceContext) {
  InstanceLog log("3f0c2b8e-6d41-4a5e-9c3a-7b2d1e0f4a10");
  log.Info("epoch {} committed", 42);
  log.Warn("degraded: {}", "backup not acking");
  EXPECT_EQ(out_.str(),
            "info [instance: 3f0c2b8e-6d41-4a5e-9c3a-7b2d1e0f4a10] epoch 42 committed\n"
            "warning [instance: 3f0c2b8e-6d41-4a5e-9c3a-7b2d1e0f4a10] degraded: backup not acking\n");
}

TEST_F(LoggingTest, LinesBelowTheLevelAreNotFormatted) {
  InstanceLog log("u");
  log.Debug("hidden {}", 1);
  EXPECT_EQ(out_.str(), "");
}

TEST(InitLoggingTest, KnownAndUnknownLevels) {
  auto previous = spdlog::default_logger();
  spdlog::drop("nova-dt-agent");
  EXPECT_TRUE(InitLogging("warning"));
  EXPECT_EQ(spdlog::get_level(), spdlog::level::warn);
  spdlog::drop("nova-dt-agent");
  EXPECT_FALSE(InitLogging("chatty"));
  EXPECT_EQ(spdlog::get_level(), spdlog::level::info);
  spdlog::drop("nova-dt-agent");
  spdlog::set_default_logger(previous);
}

}  // namespace
}  // namespace novadt
