// VtSegmenter: splits a terminal output byte stream into whole units — a
// run of text, one C0 control, or one complete escape sequence — mirroring
// libvterm's parser state machine, and holds back an incomplete trailing
// unit (a cut escape sequence or UTF-8 character) until more bytes arrive.
//
// The terminal screen feeds libvterm one unit at a time so that, between
// units, the emulator holds no half-parsed input: what a snapshot cannot see
// is exactly pending(), which the snapshot carries as bytes.
//
// Thread-safety: not thread-safe; one owner.
#ifndef DISPATCH_LIB_REPLAY_VT_SEGMENTER_H_
#define DISPATCH_LIB_REPLAY_VT_SEGMENTER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace dispatch::internal {

struct VtSegment {
  enum class Kind : uint8_t {
    kText,     // printable bytes (UTF-8; a cut character ends as U+FFFD)
    kControl,  // one C0 control byte (not ESC), NUL included
    kEscape,   // ESC [intermediates] final (including ESC-letter C1 forms)
    kCsi,      // ESC [ leader args intermediates final
    kString,   // OSC / DCS, terminated by BEL or ESC backslash
    kAborted,  // a sequence cut short (CAN, SUB, invalid byte, new ESC)
  };
  Kind kind = Kind::kText;
  std::string_view bytes;  // everything to feed, valid during the callback
  // kEscape: intermediates + final; kCsi: leader, args, intermediates, final;
  // kControl: final = the byte.
  std::string_view leader;
  std::string_view intermed;
  char final = 0;
  static constexpr long kMissing = -1;
  std::vector<long> args;  // kCsi only; kMissing where absent
};

class VtSegmenter {
 public:
  using Sink = std::function<void(const VtSegment&)>;

  // Splits `data` (preceded by whatever was pending) into units and calls
  // `sink` for each complete one, in order. An incomplete trailing unit is
  // kept and returned by pending().
  void Feed(std::string_view data, const Sink& sink);

  // Bytes received but not yet handed out (an unfinished unit).
  const std::string& pending() const { return pending_; }

  // Drops any pending bytes and returns to the ground state.
  void Reset() { pending_.clear(); }

  // An unfinished unit longer than this is handed out anyway (as kAborted
  // if it is a sequence) so memory stays bounded.
  static constexpr size_t kMaxPending = size_t{1} << 20;

 private:
  // Parses buf from the start; returns how many bytes were consumed as
  // complete units.
  size_t Parse(std::string_view buf, const Sink& sink, bool flush);

  std::string pending_;
  std::string scratch_;
};

}  // namespace dispatch::internal

#endif  // DISPATCH_LIB_REPLAY_VT_SEGMENTER_H_
