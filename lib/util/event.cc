// Event helpers: names, validation, time.
#include "dispatch/event.h"

#include <fmt/format.h>

#include <chrono>

namespace dispatch {

std::string_view EncodingName(Encoding e) {
  switch (e) {
    case Encoding::kBytes: return "bytes";
    case Encoding::kJson: return "json";
    case Encoding::kText: return "text";
  }
  return "bytes";
}

std::optional<Encoding> ParseEncoding(std::string_view name) {
  if (name == "bytes") return Encoding::kBytes;
  if (name == "json") return Encoding::kJson;
  if (name == "text") return Encoding::kText;
  return std::nullopt;
}

Status ValidateRunId(std::string_view run_id) {
  if (run_id.empty()) return Status::InvalidArgument("run id is empty");
  if (run_id.size() > kMaxRunIdBytes) {
    return Status::InvalidArgument(
        fmt::format("run id is {} bytes; the limit is {}", run_id.size(), kMaxRunIdBytes));
  }
  for (unsigned char c : run_id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok) {
      return Status::InvalidArgument(
          fmt::format("run id contains byte 0x{:02x}; allowed are [A-Za-z0-9._:-]", c));
    }
  }
  return Status::Ok();
}

bool IsValidEventName(std::string_view name) {
  if (name.empty() || name.size() > kMaxChannelBytes) return false;
  for (unsigned char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-' || c == '/';
    if (!ok) return false;
  }
  return true;
}

Event EventView::ToEvent() const {
  return Event{std::string(run_id), seq,  position, ts_us, std::string(channel), std::string(type),
               std::string(payload), encoding, std::string(id)};
}

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace dispatch
