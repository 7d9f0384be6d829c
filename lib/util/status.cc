// Status names and formatting.
#include "dispatch/status.h"

#include <fmt/format.h>

namespace dispatch {

std::string_view StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kNotFound: return "not_found";
    case StatusCode::kInvalidArgument: return "invalid_argument";
    case StatusCode::kConflict: return "conflict";
    case StatusCode::kTruncated: return "truncated";
    case StatusCode::kIOError: return "io_error";
    case StatusCode::kCorruption: return "corruption";
    case StatusCode::kBusy: return "busy";
    case StatusCode::kClosed: return "closed";
    case StatusCode::kTimeout: return "timeout";
    case StatusCode::kReadOnly: return "read_only";
    case StatusCode::kInternal: return "internal";
  }
  return "unknown";
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  return fmt::format("{}: {}", StatusCodeName(code_), message_);
}

}  // namespace dispatch
