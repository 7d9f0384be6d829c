// TerminalScreen: the state of a terminal — screen cells, cursor, pen,
// modes, title, alternate screen and a bounded scrollback — computed by a real
// terminal emulator (libvterm) from the bytes a program wrote to its pty.
//
// It answers "what does the terminal show now" and encodes that as a compact
// escape sequence (Repaint) that, written to a fresh VT100/xterm-compatible
// terminal of the same size (xterm.js, libvterm, …), reproduces exactly that
// screen: cells, attributes, colours, cursor, title, alternate screen, modes.
// Save/Load turn the whole emulator state into bytes and back, so that
// loading a saved state and writing the rest of the stream gives the same
// screen as writing the whole stream (see doc/replay.md for what is kept).
//
// Thread-safety: not thread-safe. One thread at a time may use an instance;
// distinct instances are independent.
#ifndef DISPATCH_SCREEN_H_
#define DISPATCH_SCREEN_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "dispatch/export.h"
#include "dispatch/status.h"

namespace dispatch {

// A cell colour: the terminal's default, a palette index, or RGB.
struct TermColor {
  enum class Kind : uint8_t { kDefault, kIndexed, kRgb };
  Kind kind = Kind::kDefault;
  uint8_t index = 0;  // kIndexed
  uint8_t r = 0, g = 0, b = 0;  // kRgb
  bool operator==(const TermColor&) const = default;
};

// One screen cell. `chars` is the base character and any combining marks;
// it is empty for an erased cell and for the right half of a wide character
// (which has width 0).
struct ScreenCell {
  std::u32string chars;
  uint8_t width = 1;
  bool bold = false;
  bool italic = false;
  bool blink = false;
  bool reverse = false;
  bool strike = false;
  uint8_t underline = 0;  // 0 none, 1 single, 2 double, 3 curly
  uint8_t font = 0;       // 0–9 (SGR 10–19)
  TermColor fg, bg;
  bool operator==(const ScreenCell&) const = default;
};

enum class CursorShape : uint8_t { kBlock = 1, kUnderline = 2, kBar = 3 };

struct CursorState {
  int row = 0;  // 0-based, on the screen
  int col = 0;
  bool visible = true;
  bool blink = true;
  CursorShape shape = CursorShape::kBlock;
  bool operator==(const CursorState&) const = default;
};

struct ScreenOptions {
  int cols = 80;
  int rows = 24;
  // Lines kept after they scroll off the top of the main screen. 0 = none.
  size_t scrollback_lines = 1000;
};

// How the repaints made so far (Repaint and Save) came about. Every repaint
// is checked by writing it to a scratch emulator: `exact` ones reproduced
// the state; `replayed` ones did not (a state no escape sequence can make,
// doc/replay.md "Exactness") and were answered with the last exact repaint
// plus the output written since, which replays to the state exactly;
// `inexact` ones could do neither (a resize since the last exact repaint,
// or more than 64 KiB of output) and reproduce the state only approximately.
struct RepaintStats {
  int64_t exact = 0;
  int64_t replayed = 0;
  int64_t inexact = 0;
};

struct RepaintOptions {
  // Start with RIS (ESC c) so a terminal that is not fresh is reset first.
  bool reset = true;
  // Also write the scrollback lines (oldest first), so they scroll into the
  // receiving terminal's own scrollback before the screen is painted.
  bool include_scrollback = false;
};

// Size limits for Create/Resize (InvalidArgument outside). At least two
// columns: libvterm writes outside its buffers when a double-width character
// meets a one-column screen. (A pty may still be one column wide; its
// screen then keeps the size it had before, or the default.)
inline constexpr int kMinScreenCols = 2;
inline constexpr int kMaxScreenCols = 2000;
inline constexpr int kMaxScreenRows = 1000;

// Whether a screen of `cols` x `rows` is within those limits.
constexpr bool ScreenSizeInRange(int64_t cols, int64_t rows) {
  return cols >= kMinScreenCols && cols <= kMaxScreenCols && rows >= 1 && rows <= kMaxScreenRows;
}

class DISPATCH_EXPORT TerminalScreen {
 public:
  // The version of the format Save() writes (2: LZ4-compressed). Load()
  // also reads version 1.
  static constexpr int32_t kStateVersion = 2;

  // A blank screen. InvalidArgument if the size is out of limits.
  static Result<std::unique_ptr<TerminalScreen>> Create(const ScreenOptions& options = {});
  // Restores a state written by Save(). `options` gives the scrollback
  // bound (its cols/rows are ignored: the state has its own size).
  // Corruption if `state` is not a valid state; InvalidArgument if its
  // version is unknown.
  static Result<std::unique_ptr<TerminalScreen>> Load(std::string_view state,
                                                      const ScreenOptions& options = {});

  ~TerminalScreen();
  TerminalScreen(const TerminalScreen&) = delete;
  TerminalScreen& operator=(const TerminalScreen&) = delete;

  // Feeds bytes the program wrote (any bytes; split anywhere).
  void Write(std::string_view bytes);
  // Resizes like a terminal window does. InvalidArgument outside limits.
  Status Resize(int cols, int rows);

  int cols() const;
  int rows() const;
  CursorState cursor() const;
  bool alt_screen() const;
  const std::string& title() const;
  const std::string& icon_name() const;

  // A cell of the visible screen; a default cell outside the screen.
  ScreenCell cell(int row, int col) const;
  // The characters of one row as UTF-8, trailing blanks removed.
  std::string RowText(int row) const;
  // All rows joined with '\n' (trailing blank rows kept as empty lines).
  std::string Text() const;

  // Scrollback, oldest first; its text as UTF-8 without trailing blanks.
  size_t scrollback_size() const;
  std::string ScrollbackText(size_t index) const;

  // The escape sequence that repaints this state on a fresh terminal of the
  // same size. Ends with any bytes of an unfinished escape sequence or UTF-8
  // character, so that the following output continues correctly.
  std::string Repaint(const RepaintOptions& options = {}) const;

  // The whole state as bytes (cereal, LZ4-compressed, checksummed).
  std::string Save() const;

  // Counts of the repaints so far, by how they were made (see RepaintStats).
  RepaintStats repaint_stats() const;

 private:
  struct Impl;
  explicit TerminalScreen(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dispatch

#endif  // DISPATCH_SCREEN_H_
