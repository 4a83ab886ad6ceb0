// libvirt errors as Status values, for the adapter files of this folder only.
#pragma once

#include <string>

#include <libvirt/virterror.h>

#include "agent/common/status.h"

namespace novadt::libvirt {

// The last libvirt error of the calling thread as a Status with `what` as context: NotFound for
// a missing domain, FailedPrecondition for an operation the domain's state refuses,
// InvalidArgument for bad input (XML, arguments, unsupported), Unavailable for the rest
// (daemon and connection trouble: retry).
inline Status LastError(const std::string& what) {
  virErrorPtr err = virGetLastError();
  const std::string msg = what + ": " + (err && err->message ? err->message : "unknown error");
  switch (err ? err->code : VIR_ERR_INTERNAL_ERROR) {
    case VIR_ERR_NO_DOMAIN:
      return absl::NotFoundError(msg);
    case VIR_ERR_OPERATION_INVALID:
    case VIR_ERR_OPERATION_FAILED:
      return absl::FailedPreconditionError(msg);
    case VIR_ERR_XML_ERROR:
    case VIR_ERR_CONFIG_UNSUPPORTED:
    case VIR_ERR_INVALID_ARG:
    case VIR_ERR_NO_SUPPORT:
      return absl::InvalidArgumentError(msg);
    default:
      return absl::UnavailableError(msg);
  }
}

}  // namespace novadt::libvirt
