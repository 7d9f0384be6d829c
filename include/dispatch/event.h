// The event: the unit of every session's append-only stream (DESIGN §2).
//
// NewEvent is what a writer hands to EventStore::Append; the store assigns
// seq, position and (unless given) the timestamp. Event owns a stored event;
// EventView borrows one and is what read visitors and subscribers receive:
// a view is valid only during the call that handed it out — copy to keep
// (ToEvent()).
//
// Thread-safety: plain values; distinct objects may be used from any thread.
#ifndef DISPATCH_EVENT_H_
#define DISPATCH_EVENT_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "dispatch/export.h"
#include "dispatch/status.h"

namespace dispatch {

// How to read a payload. Recorded with the event, never guessed.
enum class Encoding : uint8_t {
  kBytes = 0,  // raw bytes (terminal output); base64 on JSON wires
  kJson = 1,   // one valid JSON value (checked on append)
  kText = 2,   // UTF-8 text (not checked: terminals emit invalid UTF-8)
};

// "bytes", "json", "text".
DISPATCH_EXPORT std::string_view EncodingName(Encoding e);
// The inverse of EncodingName; nullopt for anything else.
DISPATCH_EXPORT std::optional<Encoding> ParseEncoding(std::string_view name);

// Documented limits, enforced on append with InvalidArgument.
inline constexpr size_t kMaxRunIdBytes = 128;
inline constexpr size_t kMaxChannelBytes = 64;   // also for `type`
inline constexpr size_t kMaxEventIdBytes = 128;
inline constexpr size_t kMaxPayloadBytes = size_t{8} << 20;   // 8 MiB per event
inline constexpr size_t kMaxBatchBytes = size_t{64} << 20;    // 64 MiB per append
inline constexpr size_t kMaxBatchEvents = 100000;

// Checks a run id: 1–128 bytes of [A-Za-z0-9._:-]. InvalidArgument otherwise.
DISPATCH_EXPORT Status ValidateRunId(std::string_view run_id);

// True if `name` is a valid channel or type: 1–64 bytes of [A-Za-z0-9._:/-].
DISPATCH_EXPORT bool IsValidEventName(std::string_view name);

// An event to append.
struct NewEvent {
  std::string channel;  // e.g. "pty:stdout"; 1–64 bytes of [A-Za-z0-9._:/-]
  std::string type;     // e.g. "chunk"; same alphabet and limit
  std::string payload;  // any bytes, byte-exact (NUL and invalid UTF-8 kept)
  Encoding encoding = Encoding::kBytes;
  std::string id;       // optional idempotency key (≤ 128 bytes); empty = none
  int64_t ts_us = 0;    // recording time, µs since epoch; 0 = now
};

struct Event;

// A borrowed stored event. Valid only during the callback that received it.
struct EventView {
  std::string_view run_id;
  int64_t seq = 0;       // per run, from 1, contiguous, never reused
  int64_t position = 0;  // store-wide, strictly increasing in commit order
  int64_t ts_us = 0;
  std::string_view channel;
  std::string_view type;
  std::string_view payload;
  Encoding encoding = Encoding::kBytes;
  std::string_view id;

  DISPATCH_EXPORT Event ToEvent() const;
};

// An owned stored event.
struct Event {
  std::string run_id;
  int64_t seq = 0;
  int64_t position = 0;
  int64_t ts_us = 0;
  std::string channel;
  std::string type;
  std::string payload;
  Encoding encoding = Encoding::kBytes;
  std::string id;

  EventView view() const {
    return EventView{run_id, seq, position, ts_us, channel, type, payload, encoding, id};
  }
  bool operator==(const Event&) const = default;
};

// Microseconds since the Unix epoch, from the system clock.
DISPATCH_EXPORT int64_t NowMicros();

}  // namespace dispatch

#endif  // DISPATCH_EVENT_H_
