// Shared by the fault suites (tests/e2e/*_fault_test.cc): the "fault-row:" line each case prints
// for the fault tables in docs/witness.md, and elapsed-time helpers.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>

namespace novadt::testing {

// "fault-row: <case> | <expected> | <measured>", flushed at once (the suites grep for it).
inline void FaultRow(const std::string& what, const std::string& expected,
                     const std::string& measured) {
  std::printf("fault-row: %s | %s | %s\n", what.c_str(), expected.c_str(), measured.c_str());
  std::fflush(stdout);
}

inline double MsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

// "1234 ms".
inline std::string Ms(double ms) { return std::to_string(static_cast<long>(ms)) + " ms"; }

}  // namespace novadt::testing
