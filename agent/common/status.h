// Error values used across every module boundary of nova-dt.
//
// nova-dt uses abseil's Status/StatusOr (gRPC already brings abseil from Debian): a function
// that can fail returns absl::Status or absl::StatusOr<T>; it never throws across a module
// boundary. Codes follow their abseil meaning: InvalidArgument for bad input, NotFound,
// Unavailable for a peer/daemon that can be retried, FailedPrecondition for a wrong state.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace novadt {

using Status = absl::Status;
template <typename T>
using StatusOr = absl::StatusOr<T>;

// Returns early from the enclosing function when `expr` yields a non-OK Status.
#define NOVA_DT_RETURN_IF_ERROR(expr)              \
  do {                                             \
    if (::absl::Status _st = (expr); !_st.ok()) {  \
      return _st;                                  \
    }                                              \
  } while (0)

}  // namespace novadt
