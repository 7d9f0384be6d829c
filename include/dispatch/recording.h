// Recordings: a run written out as a file, and read back into a store.
//
//  - asciicast v2 (https://docs.asciinema.org/manual/asciicast/v2/) of a
//    pty run: a header with the initial size, start time and env, "o"
//    events with the output, "r" events for resizes, and optionally "i"
//    events for input (input recorded as redacted is never written). Plays
//    in asciinema; `asciinema cat` prints the recorded output.
//  - JSON Lines of any run: one event per line, byte-exact, and the import
//    of that format into another store.
//
// JSON Lines format (one object per line, keys in this order):
//   {"session": {…}}   optional first line per run: the catalog record
//   {"runId","seq","ts"(µs since epoch),"channel","type","encoding",
//    "id"(if any),"payload"}
// where payload is, by encoding: bytes → base64 string; text → string
// (or "payloadB64" if the text is not valid UTF-8); json → the JSON value,
// written verbatim (as stored) so it round-trips byte for byte.
//
// Thread-safety: free functions; safe to call from any thread (the store is
// thread-safe); one call per stream at a time.
#ifndef DISPATCH_RECORDING_H_
#define DISPATCH_RECORDING_H_

#include <cstdint>
#include <iosfwd>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/event_store.h"
#include "dispatch/export.h"
#include "dispatch/status.h"

namespace dispatch {

struct AsciicastOptions {
  bool include_input = false;  // also "i" events (never redacted ones)
  std::string title;           // header "title"; empty = none
  // Used when the run does not say its initial size.
  int default_cols = 80;
  int default_rows = 24;
  // Header "env": TERM and SHELL (SHELL from the started event if known).
  std::string term = "xterm-256color";
};

struct AsciicastStats {
  int64_t output_events = 0, resize_events = 0, input_events = 0;
  int64_t redacted_skipped = 0;
  // Bytes of output that were not valid UTF-8 (asciicast holds text): each
  // invalid sequence is written as U+FFFD. 0 for normal terminal output.
  int64_t invalid_utf8_bytes = 0;
};

// Writes `run_id` as asciicast v2 to `out`. NotFound if the run has no
// events; Truncated if retention removed its beginning; IOError if `out`
// fails.
DISPATCH_EXPORT Result<AsciicastStats> ExportAsciicast(EventStore& store, std::string_view run_id,
                                                       std::ostream& out,
                                                       const AsciicastOptions& options = {});

struct JsonlExportStats {
  int64_t events = 0;
};

// Writes `run_id` as JSON Lines to `out` (its session record first, if the
// catalog has one). NotFound if the run has no events.
DISPATCH_EXPORT Result<JsonlExportStats> ExportJsonl(EventStore& store, std::string_view run_id,
                                                     std::ostream& out);

struct ImportStats {
  std::vector<std::string> runs;  // in order of first appearance
  int64_t events = 0;
  int64_t sessions = 0;           // session records written
  // Runs whose first exported seq was not 1 (retention had removed the
  // start): their events were renumbered from 1.
  std::vector<std::string> renumbered;
};

// Reads JSON Lines from `in` and appends every run's events to `store`,
// keeping timestamps, ids and payloads byte for byte. Each run must not
// exist in `store` yet (Conflict otherwise; nothing of that run is written).
// InvalidArgument (with the line number) for a malformed line. Events are
// appended in batches of up to 10000 per run, so on an error some events
// before the bad line may already be imported.
DISPATCH_EXPORT Result<ImportStats> ImportJsonl(EventStore& store, std::istream& in);

}  // namespace dispatch

#endif  // DISPATCH_RECORDING_H_
