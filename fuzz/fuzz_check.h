// Shared by the fuzz targets: a property that must hold for every input. A broken one aborts,
// which libFuzzer reports as a crash and keeps the input for (as it does for an exception that
// escapes a parser, an ASan or UBSan report, a leak or a timeout).
#pragma once

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond, ...)                                    \
  do {                                                           \
    if (!(cond)) {                                               \
      std::fprintf(stderr, "FUZZ_CHECK(%s) failed: ", #cond);    \
      std::fprintf(stderr, __VA_ARGS__);                         \
      std::fputc('\n', stderr);                                  \
      std::abort();                                              \
    }                                                            \
  } while (0)
