// Small files replaced atomically and read back with a size bound: the agent's records of its own
// state (e.g. a replica's owner). Thread-compatible; errors are values naming the file.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "agent/common/status.h"

namespace novadt {

// Replaces `path` with `bytes`, crash-safely: written to "<path>.tmp" (created with `mode`,
// before the umask), fsynced, renamed over `path`, and the directory fsynced. After a crash the
// file holds the old bytes or the new ones, never a mix. ResourceExhausted when the file system
// is full, Internal for other I/O errors (the temporary file is removed either way).
Status WriteFileAtomically(const std::string& path, std::string_view bytes, mode_t mode);

// The whole of `path` if it holds at most `max_bytes`. NotFound when it does not exist;
// DataLoss when it is larger (nothing beyond the bound is read); Internal for I/O errors.
StatusOr<std::string> ReadSmallFile(const std::string& path, size_t max_bytes);

}  // namespace novadt
