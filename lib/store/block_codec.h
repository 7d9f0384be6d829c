// Block codec: how a run's events from one commit are packed into one row.
//
// A block body is the concatenation of its events, each encoded as
//   varint  zigzag(ts_us - previous ts_us)   (previous = block base ts)
//   u8      encoding
//   varint  len, channel bytes
//   varint  len, type bytes
//   varint  len, id bytes
//   varint  len, payload bytes
// seq and position are not stored per event: a block holds contiguous seqs
// (first_seq + i) and contiguous positions (last_pos - count + 1 + i), kept
// in the row's columns. The body is then compressed (codec byte in the row).
// doc/storage.md describes the format for readers outside dispatch.
//
// Thread-safety: stateless functions; BlockReader is a cursor over a buffer
// the caller owns.
#ifndef DISPATCH_LIB_STORE_BLOCK_CODEC_H_
#define DISPATCH_LIB_STORE_BLOCK_CODEC_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "dispatch/event.h"
#include "dispatch/status.h"

namespace dispatch::internal {

enum class Codec : uint8_t { kNone = 0, kLz4 = 1 };

// Appends one event to `body`. `prev_ts` is updated to the event's ts.
void EncodeEvent(const NewEvent& e, int64_t ts_us, int64_t* prev_ts, std::string* body);
// Appends an already stored event (for rewriting blocks).
void EncodeEventView(const EventView& e, int64_t* prev_ts, std::string* body);

// Compresses `body` into `out` (replacing its contents) with the best codec
// for it; returns the codec. Small bodies are stored as they are. LZ4 writes
// into a per-thread scratch buffer (kept, at the largest bound seen), so
// `out` receives only the compressed bytes and nothing is zero-filled.
Codec CompressBody(std::string_view body, std::string* out);

// Decompresses a stored block into `out` (which is reused: pass the same
// string to amortise allocations). Corruption if the data is not valid.
Status DecompressBody(Codec codec, std::string_view data, size_t raw_size, std::string* out);

// Iterates the events of a body. Fills the view's ts/channel/type/id/payload/
// encoding; the caller sets run_id, seq and position.
class BlockReader {
 public:
  BlockReader(std::string_view body, int64_t base_ts) : p_(body.data()), end_(body.data() + body.size()), prev_ts_(base_ts) {}
  // Returns true and fills `v` if there is another event; false at the end.
  // A malformed body sets status() to Corruption and returns false.
  bool Next(EventView* v);
  const Status& status() const { return status_; }

 private:
  const char* p_;
  const char* end_;
  int64_t prev_ts_;
  Status status_;
};

}  // namespace dispatch::internal

#endif  // DISPATCH_LIB_STORE_BLOCK_CODEC_H_
