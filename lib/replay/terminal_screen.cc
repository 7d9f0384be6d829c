// TerminalScreen on libvterm (see dispatch/screen.h).
//
// libvterm keeps some state it does not let us read back: the saved cursor,
// tab stops, character sets, the main screen while the alternate one is
// shown, whether the cursor sits in the "phantom" column after a glyph at the
// right margin, and half-parsed input. To save a state that continues
// exactly like the original, the input is split into whole units
// (VtSegmenter) and fed one at a time, and this file tracks what libvterm
// hides as it goes. Modes and the scroll region are asked from libvterm
// itself (DECRQM, DECRQSS) when a repaint is made. The repaint is then the
// saved state: loading a state replays its repaint into a fresh emulator.
#include "dispatch/screen.h"

#include <lz4.h>
#include <vterm.h>

#include <cereal/archives/portable_binary.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/utility.hpp>
#include <cereal/types/vector.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <optional>
#include <sstream>
#include <unordered_map>
#include <utility>
#include <vector>

#include "replay/vt_segmenter.h"

namespace dispatch {
namespace {

using internal::VtSegment;
using internal::VtSegmenter;

constexpr uint32_t kWideTail = 0xFFFFFFFFu;

// ---- pens and cells ----

struct Pen {
  bool bold = false;
  uint8_t underline = 0;
  bool italic = false;
  bool blink = false;
  bool reverse = false;
  bool strike = false;
  uint8_t font = 0;
  VTermColor fg{};
  VTermColor bg{};
};

bool SameColor(const VTermColor& a, const VTermColor& b) {
  uint8_t da = a.type & VTERM_COLOR_DEFAULT_MASK, db = b.type & VTERM_COLOR_DEFAULT_MASK;
  if (da != db) return false;
  if (da != 0) return true;  // both the default colour
  if (VTERM_COLOR_IS_INDEXED(&a) != VTERM_COLOR_IS_INDEXED(&b)) return false;
  if (VTERM_COLOR_IS_INDEXED(&a)) return a.indexed.idx == b.indexed.idx;
  return a.rgb.red == b.rgb.red && a.rgb.green == b.rgb.green && a.rgb.blue == b.rgb.blue;
}

bool SamePen(const Pen& a, const Pen& b) {
  return a.bold == b.bold && a.underline == b.underline && a.italic == b.italic &&
         a.blink == b.blink && a.reverse == b.reverse && a.strike == b.strike &&
         a.font == b.font && SameColor(a.fg, b.fg) && SameColor(a.bg, b.bg);
}

Pen PenOf(const VTermScreenCell& c) {
  Pen p;
  p.bold = c.attrs.bold;
  p.underline = static_cast<uint8_t>(c.attrs.underline);
  p.italic = c.attrs.italic;
  p.blink = c.attrs.blink;
  p.reverse = c.attrs.reverse;
  p.strike = c.attrs.strike;
  p.font = static_cast<uint8_t>(c.attrs.font);
  p.fg = c.fg;
  p.bg = c.bg;
  return p;
}

Pen PenOf(const VTermState* state) {
  Pen p;
  VTermValue v;
  vterm_state_get_penattr(state, VTERM_ATTR_BOLD, &v);
  p.bold = v.boolean;
  vterm_state_get_penattr(state, VTERM_ATTR_UNDERLINE, &v);
  p.underline = static_cast<uint8_t>(v.number);
  vterm_state_get_penattr(state, VTERM_ATTR_ITALIC, &v);
  p.italic = v.boolean;
  vterm_state_get_penattr(state, VTERM_ATTR_BLINK, &v);
  p.blink = v.boolean;
  vterm_state_get_penattr(state, VTERM_ATTR_REVERSE, &v);
  p.reverse = v.boolean;
  vterm_state_get_penattr(state, VTERM_ATTR_STRIKE, &v);
  p.strike = v.boolean;
  vterm_state_get_penattr(state, VTERM_ATTR_FONT, &v);
  p.font = static_cast<uint8_t>(v.number);
  vterm_state_get_penattr(state, VTERM_ATTR_FOREGROUND, &v);
  p.fg = v.color;
  vterm_state_get_penattr(state, VTERM_ATTR_BACKGROUND, &v);
  p.bg = v.color;
  return p;
}

void AppendColor(std::string* out, const VTermColor& c, bool fg) {
  if (c.type & VTERM_COLOR_DEFAULT_MASK) return;  // SGR 0 already reset it
  if (VTERM_COLOR_IS_INDEXED(&c)) {
    int i = c.indexed.idx;
    if (i < 8) {
      fmt::format_to(std::back_inserter(*out), ";{}", (fg ? 30 : 40) + i);
    } else if (i < 16) {
      fmt::format_to(std::back_inserter(*out), ";{}", (fg ? 90 : 100) + i - 8);
    } else {
      fmt::format_to(std::back_inserter(*out), ";{};5;{}", fg ? 38 : 48, i);
    }
  } else {
    fmt::format_to(std::back_inserter(*out), ";{};2;{};{};{}", fg ? 38 : 48, c.rgb.red,
                   c.rgb.green, c.rgb.blue);
  }
}

// SGR that sets exactly `p` (from any previous pen).
void AppendSgr(std::string* out, const Pen& p) {
  out->append("\x1b[0");
  if (p.bold) out->append(";1");
  if (p.italic) out->append(";3");
  if (p.underline == 1) out->append(";4");
  if (p.underline == 2) out->append(";21");
  if (p.underline == 3) out->append(";4:3");
  if (p.blink) out->append(";5");
  if (p.reverse) out->append(";7");
  if (p.strike) out->append(";9");
  if (p.font > 0 && p.font <= 9) fmt::format_to(std::back_inserter(*out), ";{}", 10 + p.font);
  AppendColor(out, p.fg, true);
  AppendColor(out, p.bg, false);
  out->push_back('m');
}

void AppendUtf8(std::string* out, uint32_t cp) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x110000) {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

void AppendCellChars(std::string* out, const VTermScreenCell& c) {
  for (int i = 0; i < VTERM_MAX_CHARS_PER_CELL && c.chars[i]; ++i) AppendUtf8(out, c.chars[i]);
}

// (Hot: every cell of every line that scrolls off; no Pen built.)
bool IsBlankDefault(const VTermScreenCell& c) {
  const VTermScreenCellAttrs& a = c.attrs;
  return c.chars[0] == 0 && c.width == 1 && !a.bold && a.underline == 0 && !a.italic && !a.blink &&
         !a.reverse && !a.strike && a.font == 0 && (c.fg.type & VTERM_COLOR_DEFAULT_FG) &&
         (c.bg.type & VTERM_COLOR_DEFAULT_BG);
}

// How many columns libvterm advances for code point `cp` printed on its own
// (0: a combining mark with nothing to combine with) (asked of a scratch
// emulator once per code point and thread, so it always agrees).
int GlyphWidth(uint32_t cp) {
  if (cp < 0x300) return 1;
  thread_local std::unordered_map<uint32_t, int> cache;
  auto it = cache.find(cp);
  if (it != cache.end()) return it->second;
  VTerm* vt = vterm_new(1, 4);
  vterm_set_utf8(vt, 1);
  VTermState* st = vterm_obtain_state(vt);
  vterm_state_reset(st, 1);
  std::string b;
  AppendUtf8(&b, cp);
  vterm_input_write(vt, b.data(), b.size());
  VTermPos p;
  vterm_state_get_cursorpos(st, &p);
  vterm_free(vt);
  int w = p.col;  // 0 for a combining mark, which libvterm puts without advancing
  if (cache.size() < 65536) cache.emplace(cp, w);
  return w;
}

// Paints one row of cells starting with the cursor at its first column.
// `pen` is the pen in effect (nullopt: unknown) and is updated.
//
// libvterm marks the right half of a wide glyph with a placeholder cell and
// derives widths from it, so a row can hold placeholders whose wide glyph
// was overwritten ("orphans"), and wide glyphs whose right half was
// overwritten. Both are made here the way they came about: an orphan by
// printing a wide filler over it first and then the real cell over the
// filler's left half.
void AppendRow(std::string* out, const VTermScreenCell* cells, int n, std::optional<Pen>* pen) {
  auto tail = [&](int i) { return i >= 0 && i < n && cells[i].chars[0] == kWideTail; };
  int last = n - 1;
  while (last >= 0 && IsBlankDefault(cells[last])) --last;
  if (last < 0) return;
  // Scratch space reused across calls (this runs for every line that
  // scrolls off).
  thread_local std::vector<int> gw, fillers, shifted;
  thread_local std::vector<char> must;
  gw.assign(static_cast<size_t>(last + 2), 1);
  must.assign(static_cast<size_t>(last + 2), 0);  // paint even if blank
  fillers.clear();
  shifted.clear();  // orphans made by a filler one column right, then DCH
  for (int i = 0; i <= last; ++i) {
    if (!tail(i) && cells[i].chars[0] != 0) gw[i] = GlyphWidth(cells[i].chars[0]);
  }
  auto natural = [&](int i) { return tail(i) && i > 0 && !tail(i - 1) && gw[i - 1] == 2; };
  for (int i = 0; i <= last; ++i) {
    if (tail(i)) {
      // An orphan: a filler at i-1 makes it, if what is painted at i-1
      // afterwards (a cell, or the right half of the glyph at i-2) does not.
      if (!natural(i) && i > 0 && (!tail(i - 1) || natural(i - 1))) {
        fillers.push_back(i - 1);
        if (!tail(i - 1)) must[i - 1] = 1;
      } else if (!natural(i) && i + 1 < n) {
        // In the first column, or right of another orphan (a DCH left it
        // there): no filler to its left can make it, so make it the same
        // way, with a filler at i and a DCH at i.
        shifted.push_back(i);
      }
    } else if (gw[i] == 2 && i + 1 < n && !tail(i + 1)) {
      must[i + 1] = 1;  // its right half was overwritten: overwrite it again
    }
  }
  auto set_pen = [&](const Pen& p) {
    if (!pen->has_value() || !SamePen(**pen, p)) {
      AppendSgr(out, p);
      *pen = p;
    }
  };
  // The cursor column; -1 after a glyph that reached the right margin: the
  // terminal then waits to wrap, and the next glyph would go to the next
  // line, so the next move must be absolute (it also cancels the wrap).
  int cur = 0;
  auto move_to = [&](int col) {
    if (cur < 0) {
      fmt::format_to(std::back_inserter(*out), "\x1b[{}G", col + 1);
      cur = col;
      return;
    }
    if (col == cur) return;
    if (col > cur && col - cur == 1) out->append("\x1b[C");
    else if (col > cur) fmt::format_to(std::back_inserter(*out), "\x1b[{}C", col - cur);
    else fmt::format_to(std::back_inserter(*out), "\x1b[{}G", col + 1);
    cur = col;
  };
  // Shifted orphans first, left to right (a DCH moves what is right of it),
  // with the default pen so that the cell the DCH brings in is a blank one.
  if (!shifted.empty()) {
    Pen dp;
    dp.fg.type = VTERM_COLOR_DEFAULT_FG;
    dp.bg.type = VTERM_COLOR_DEFAULT_BG;
    set_pen(dp);
    for (int f : shifted) {
      move_to(f);
      out->append("\xe4\xb8\x80");  // U+4E00 over f, f+1
      fmt::format_to(std::back_inserter(*out), "\x1b[{}G\x1b[P", f + 1);
      cur = f;
    }
  }
  // A cell that starts with a combining mark (one that came with nothing to
  // combine with) must be painted before its left neighbour, else it would
  // combine with it.
  for (int i = 0; i <= last; ++i) {
    if (!tail(i) && cells[i].chars[0] != 0 && gw[i] == 0) {
      move_to(i);
      set_pen(PenOf(cells[i]));
      AppendCellChars(out, cells[i]);
    }
  }
  // A wide glyph in the last column, its right half cut off (by an insert
  // or a narrower window): print it one column to the left and push it
  // right with ICH; the cell it leaves is painted below.
  // So is a glyph with combining marks there: printed in the last column,
  // its marks would come after the wrap (libvterm joins a mark to the glyph
  // before only if the cursor is just after it).
  int clipped = -1;
  if (n >= 2 && last == n - 1 && !tail(n - 1) && cells[n - 1].chars[0] != 0 &&
      (gw[n - 1] == 2 || (gw[n - 1] == 1 && cells[n - 1].chars[1] != 0))) {
    clipped = n - 1;
    move_to(n - 2);
    set_pen(PenOf(cells[n - 1]));
    AppendCellChars(out, cells[n - 1]);
    fmt::format_to(std::back_inserter(*out), "\x1b[{}G\x1b[@", n - 1);
    cur = n - 2;
    must[static_cast<size_t>(n - 2)] = 1;
  }
  for (int f : fillers) {
    move_to(f);
    out->append("\xe4\xb8\x80");  // U+4E00, two columns
    cur = f + 2 >= n ? -1 : f + 2;
  }
  // The cell right of the last one may have to be painted (a wide glyph's
  // overwritten right half).
  int end = last + 1 < n && must[static_cast<size_t>(last + 1)] ? last + 1 : last;
  for (int i = 0; i <= end;) {
    const VTermScreenCell& c = cells[i];
    if (tail(i) || (IsBlankDefault(c) && !must[i]) || (c.chars[0] != 0 && gw[i] == 0)) {
      ++i;
      continue;
    }
    if (c.chars[0] == 0) {  // erased: ECH the run with its pen
      Pen p = PenOf(c);
      int j = i + 1;
      while (j <= end && cells[j].chars[0] == 0 && SamePen(PenOf(cells[j]), p)) ++j;
      move_to(i);
      set_pen(p);
      if (j - i == 1) out->append("\x1b[X");
      else fmt::format_to(std::back_inserter(*out), "\x1b[{}X", j - i);
      i = j;
      continue;
    }
    if (i == clipped) {
      ++i;
      continue;
    }
    move_to(i);
    set_pen(PenOf(c));
    AppendCellChars(out, c);
    cur = i + gw[i] >= n ? -1 : i + gw[i];
    ++i;
  }
}

// A fresh terminal's pen: default colours, no attributes.
Pen DefaultPen() {
  Pen p;
  p.fg.type = VTERM_COLOR_DEFAULT_FG;
  p.bg.type = VTERM_COLOR_DEFAULT_BG;
  return p;
}

// Repaint output that tracks the receiving terminal's pen (a fresh
// terminal's at first; nullopt when unknown), so SGR is written only when
// the pen changes.
struct PaintOut {
  std::string& out;
  std::optional<Pen> pen = DefaultPen();

  void Cup(int r, int c) { fmt::format_to(std::back_inserter(out), "\x1b[{};{}H", r + 1, c + 1); }
  void SetPen(const Pen& p) {
    if (!pen || !SamePen(*pen, p)) {
      AppendSgr(&out, p);
      pen = p;
    }
  }
};

ScreenCell ToPublicCell(const VTermScreenCell& c) {
  ScreenCell out;
  if (c.chars[0] == kWideTail) {
    out.width = 0;  // the right half of a wide glyph: nothing of its own
    return out;
  } else {
    for (int i = 0; i < VTERM_MAX_CHARS_PER_CELL && c.chars[i]; ++i) {
      out.chars.push_back(static_cast<char32_t>(c.chars[i]));
    }
    out.width = static_cast<uint8_t>(c.width);
  }
  out.bold = c.attrs.bold;
  out.italic = c.attrs.italic;
  out.blink = c.attrs.blink;
  out.reverse = c.attrs.reverse;
  out.strike = c.attrs.strike;
  out.underline = static_cast<uint8_t>(c.attrs.underline);
  out.font = static_cast<uint8_t>(c.attrs.font);
  auto conv = [](const VTermColor& v) {
    TermColor t;
    if (v.type & VTERM_COLOR_DEFAULT_MASK) return t;
    if (VTERM_COLOR_IS_INDEXED(&v)) {
      t.kind = TermColor::Kind::kIndexed;
      t.index = v.indexed.idx;
    } else {
      t.kind = TermColor::Kind::kRgb;
      t.r = v.rgb.red;
      t.g = v.rgb.green;
      t.b = v.rgb.blue;
    }
    return t;
  };
  out.fg = conv(c.fg);
  out.bg = conv(c.bg);
  return out;
}

std::string CellsText(const VTermScreenCell* cells, int n) {
  std::string s;
  size_t keep = 0;
  for (int i = 0; i < n; ++i) {
    const VTermScreenCell& c = cells[i];
    if (c.chars[0] == kWideTail) continue;
    if (c.chars[0] == 0) {
      s.push_back(' ');
      continue;
    }
    AppendCellChars(&s, c);
    keep = s.size();
  }
  s.resize(keep);
  return s;
}

VTerm* NewVterm(int rows, int cols) {
  VTerm* vt = vterm_new(rows, cols);
  vterm_set_utf8(vt, 1);
  return vt;
}

// The cells of one encoded row (see AppendRow), decoded by a scratch
// emulator `cols` wide.
std::vector<VTermScreenCell> DecodeRow(std::string_view encoded, int cols) {
  // (At least kMinScreenCols wide: a double-width glyph in a one-column
  // libvterm writes through a null pointer. Saved states may hold such
  // lines, from before the limit or crafted.)
  VTerm* vt = NewVterm(1, std::max(cols, kMinScreenCols));
  VTermScreen* screen = vterm_obtain_screen(vt);
  vterm_screen_reset(screen, 1);
  vterm_input_write(vt, encoded.data(), encoded.size());
  std::vector<VTermScreenCell> cells(static_cast<size_t>(cols));
  for (int c = 0; c < cols; ++c) vterm_screen_get_cell(screen, VTermPos{0, c}, &cells[c]);
  vterm_free(vt);
  return cells;
}

uint64_t Fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// The serialised form of a state (inside a magic + checksum envelope).
struct StateData {
  int32_t cols = 0;
  int32_t rows = 0;
  std::string repaint;                                   // without scrollback
  std::vector<std::pair<int32_t, std::string>> scrollback;  // (width, encoded row)
  // (Class version 2.) What to replay after the repaint when the repaint
  // alone cannot make the state (see Impl::Repaint): output bytes and
  // resizes, as records (kOpBytes, u32 length, bytes) or (kOpResize, u16
  // cols, u16 rows), little-endian. cols/rows are then the size before them.
  std::string ops;

  template <class Archive>
  void serialize(Archive& ar, const std::uint32_t version) {
    ar(cols, rows, repaint, scrollback);
    if (version >= 2) ar(ops);
  }
};

constexpr char kOpBytes = 'B';
constexpr char kOpResize = 'R';

// Version 1: "DSCR", checksum, cereal body. Version 2: "DSC2", checksum
// (of what follows), the body's size (uint32 LE), the body LZ4-compressed
// (a state is mostly scrollback text: ~3x smaller). Load reads both.
constexpr char kStateMagic[4] = {'D', 'S', 'C', 'R'};
constexpr char kStateMagicLz4[4] = {'D', 'S', 'C', '2'};
constexpr uint32_t kMaxStateBody = uint32_t{256} << 20;

}  // namespace
}  // namespace dispatch

CEREAL_CLASS_VERSION(dispatch::StateData, 2);

namespace dispatch {

struct TerminalScreen::Impl {
  VTerm* vt = nullptr;
  VTermScreen* screen = nullptr;
  VTermState* state = nullptr;
  int rows = 24, cols = 80;
  size_t sb_limit = 1000;
  std::deque<std::pair<int32_t, std::string>> scrollback;

  // Properties reported by libvterm.
  std::string title, icon;
  bool cursor_visible = true, cursor_blink = true;
  int cursor_shape = VTERM_PROP_CURSORSHAPE_BLOCK;
  bool alt = false;

  // What libvterm hides, tracked from the input.
  VtSegmenter segmenter;
  bool irm = false, lnm = false, keypad = false, declrmm = false, autowrap = true;
  std::vector<bool> tabs;
  char charset[4] = {0, 0, 0, 0};  // designated G0–G3 ('0', 'A', 'B'); 0 = default
  int gl = 0;
  // The DECSC slot. Before any DECSC, libvterm's slot is zeroed memory: the
  // cursor at 0,0, a pen of RGB 0,0,0 colours and no attributes, the cursor
  // hidden, not blinking, shape 0; a DECRC then restores exactly that (and
  // RIS does not reset the slot). `valid`: a DECSC happened.
  struct Saved {
    bool valid = false;
    VTermPos pos{0, 0};
    Pen pen;  // zero-initialised colours: RGB 0,0,0, as libvterm's slot
    bool visible = false, blink = false;
    int shape = 0;
  } saved;
  std::vector<VTermScreenCell> primary;  // the main screen while alt is shown
  int primary_rows = 0, primary_cols = 0;
  bool phantom = false;  // the cursor waits in the phantom column
  // libvterm's scroll region bottom: -1 = the whole screen (it follows a
  // resize), else an explicit row count — which DECRQSS reports the same
  // when it equals the screen height, and which a resize keeps (a screen
  // shrunk below a region leaves it so). Tracked (SetRegion). Only the
  // difference matters (at the next resize): no DECSTBM makes an explicit
  // region of the whole height, so such a state is replayed (Repaint).
  int sr_bottom = -1;
  bool decom = false;    // origin mode, tracked (see QueryDecMode)
  std::unordered_map<int, int> mode_cache;
  bool mode_cache_fresh = false;
  struct Glyph {
    bool valid = false;
    VTermPos pos{0, 0};
    int width = 1;
    bool autowrap = true;
  } glyph;
  // libvterm's combining state: the last glyph a text write put (its chars,
  // width and position). A combining mark written while the cursor is at
  // pos + width is added to these chars and the glyph put again at pos —
  // whatever the cell holds by then. Never reset (not even by RIS).
  struct Combine {
    bool set = false;
    VTermPos pos{0, 0};
    int width = 0;
    uint32_t chars[VTERM_MAX_CHARS_PER_CELL] = {};
  } combine;

  // Exactness (see Repaint): the newest state whose repaint was checked to
  // reproduce it exactly ("" = the fresh screen), and the bytes written
  // since, so that base + log replays to the current state.
  bool logging = true;       // false in the scratch emulator of a check
  bool base_ok = true;       // base + log is the current state
  std::string base;          // a repaint body (no RIS, no scrollback)
  int base_cols = 0, base_rows = 0;
  std::string log;           // ops since base (StateData::ops records)
  size_t log_bytes_at = std::string::npos;  // the length of the last bytes record
  bool log_resized = false;  // the log holds a resize
  int64_t pushed_since_base = 0;  // scrollback lines pushed since base (still there)
  std::vector<std::pair<int32_t, std::string>> base_popped;  // base lines a resize pulled back
  int64_t exact_count = 0, replayed_count = 0, inexact_count = 0;

  // Per-unit observation.
  int damage_count = 0;
  VTermRect last_damage{0, 0, 0, 0};
  std::string* query_out = nullptr;

  ~Impl() {
    if (vt) vterm_free(vt);
  }

  static int OnDamage(VTermRect rect, void* user) {
    auto* self = static_cast<Impl*>(user);
    ++self->damage_count;
    self->last_damage = rect;
    return 1;
  }
  static int OnMoveRect(VTermRect, VTermRect, void* user) {
    ++static_cast<Impl*>(user)->damage_count;
    return 1;
  }
  static int OnMoveCursor(VTermPos, VTermPos, int, void*) { return 1; }
  static int OnBell(void*) { return 1; }
  static int OnResize(int, int, void*) { return 1; }
  static int OnProp(VTermProp prop, VTermValue* val, void* user) {
    auto* self = static_cast<Impl*>(user);
    switch (prop) {
      case VTERM_PROP_CURSORVISIBLE: self->cursor_visible = val->boolean; break;
      case VTERM_PROP_CURSORBLINK: self->cursor_blink = val->boolean; break;
      case VTERM_PROP_CURSORSHAPE: self->cursor_shape = val->number; break;
      case VTERM_PROP_ALTSCREEN: self->alt = val->boolean; break;
      case VTERM_PROP_TITLE: self->title = val->string ? val->string : ""; break;
      case VTERM_PROP_ICONNAME: self->icon = val->string ? val->string : ""; break;
      default: break;
    }
    return 1;
  }
  static int OnPushLine(int cols, const VTermScreenCell* cells, void* user) {
    auto* self = static_cast<Impl*>(user);
    if (self->sb_limit == 0) return 1;
    ++self->pushed_since_base;
    std::string enc;
    std::optional<Pen> pen = Pen{};
    pen->fg.type = VTERM_COLOR_DEFAULT_FG;
    pen->bg.type = VTERM_COLOR_DEFAULT_BG;
    AppendRow(&enc, cells, cols, &pen);
    self->scrollback.emplace_back(cols, std::move(enc));
    while (self->scrollback.size() > self->sb_limit) self->scrollback.pop_front();
    return 1;
  }
  static int OnPopLine(int cols, VTermScreenCell* cells, void* user) {
    auto* self = static_cast<Impl*>(user);
    if (self->scrollback.empty()) return 0;
    auto line = std::move(self->scrollback.back());
    self->scrollback.pop_back();
    if (self->pushed_since_base > 0) {
      --self->pushed_since_base;
    } else if (self->logging && self->base_ok) {
      self->base_popped.push_back(line);
    }
    std::vector<VTermScreenCell> dec = DecodeRow(line.second, std::max(line.first, 1));
    VTermScreenCell blank{};
    blank.width = 1;
    blank.fg.type = VTERM_COLOR_DEFAULT_FG;
    blank.bg.type = VTERM_COLOR_DEFAULT_BG;
    for (int c = 0; c < cols; ++c) cells[c] = c < static_cast<int>(dec.size()) ? dec[c] : blank;
    // The line may come back into a narrower window: a wide glyph cut by
    // the right edge is dropped (libvterm 0.1.4 would write its right half
    // one cell past the row: a NULL pointer write, found by the property
    // test, seed 1463).
    if (cols > 0 && cells[cols - 1].width == 2) cells[cols - 1] = blank;
    return 1;
  }
  static void OnOutput(const char* s, size_t len, void* user) {
    auto* self = static_cast<Impl*>(user);
    if (self->query_out) self->query_out->append(s, len);
  }

  void Init(int r, int c) {
    rows = r;
    cols = c;
    vt = NewVterm(rows, cols);
    screen = vterm_obtain_screen(vt);
    state = vterm_obtain_state(vt);
    static const VTermScreenCallbacks kCallbacks = {
        &Impl::OnDamage, &Impl::OnMoveRect, &Impl::OnMoveCursor, &Impl::OnProp,
        &Impl::OnBell,   &Impl::OnResize,   &Impl::OnPushLine,   &Impl::OnPopLine,
    };
    // Without scrollback, no push callback: libvterm then does not copy out
    // every line that scrolls off (the pop callback stays; it finds nothing).
    static const VTermScreenCallbacks kNoScrollbackCallbacks = {
        &Impl::OnDamage, &Impl::OnMoveRect, &Impl::OnMoveCursor, &Impl::OnProp,
        &Impl::OnBell,   &Impl::OnResize,   nullptr,             &Impl::OnPopLine,
    };
    vterm_screen_set_callbacks(screen, sb_limit == 0 ? &kNoScrollbackCallbacks : &kCallbacks, this);
    vterm_output_set_callback(vt, &Impl::OnOutput, this);
    vterm_screen_enable_altscreen(screen, 1);
    vterm_screen_reset(screen, 1);
    ResetTracked();
    base_cols = cols;  // the fresh screen is the first base
    base_rows = rows;
  }

  void ResetTracked() {
    irm = lnm = keypad = declrmm = false;
    autowrap = true;
    tabs.assign(static_cast<size_t>(cols), false);
    for (int i = 0; i < cols; i += 8) tabs[static_cast<size_t>(i)] = true;
    std::fill(std::begin(charset), std::end(charset), 0);
    gl = 0;
  }

  VTermPos Cursor() const {
    VTermPos p;
    vterm_state_get_cursorpos(state, &p);
    return p;
  }

  void SaveCursor() {
    saved.valid = true;
    saved.pos = Cursor();
    saved.pen = PenOf(state);
    saved.visible = cursor_visible;
    saved.blink = cursor_blink;
    saved.shape = cursor_shape;
  }

  void CapturePrimary() {
    primary.resize(static_cast<size_t>(rows) * cols);
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < cols; ++c) {
        vterm_screen_get_cell(screen, VTermPos{r, c}, &primary[static_cast<size_t>(r) * cols + c]);
      }
    }
    primary_rows = rows;
    primary_cols = cols;
  }

  // Before libvterm sees the unit: record what it will hide.
  void Before(const VtSegment& s) {
    using K = VtSegment::Kind;
    if (s.kind == K::kEscape && s.intermed.empty()) {
      switch (s.final) {
        case '7': SaveCursor(); break;
        case '8':
          if (decom && !mode_cache_fresh) RefreshModeCache();
          break;
        case 'H': {
          int col = Cursor().col;
          if (col >= 0 && col < cols) tabs[static_cast<size_t>(col)] = true;
          break;
        }
        default: break;
      }
    } else if (s.kind == K::kCsi && s.intermed.empty()) {
      // (libvterm 0.1 does not implement CSI s / CSI u as save/restore.)
      if (s.leader == "?" && s.final == 'h') {
        for (long a : s.args) {
          if (a == 1049) SaveCursor();
          if ((a == 1047 || a == 1049) && !alt) CapturePrimary();
        }
      }
      if (s.leader.empty() && s.final == 'g') {
        long a = s.args.empty() ? VtSegment::kMissing : s.args[0];
        if (a == VtSegment::kMissing || a == 0) {
          int col = Cursor().col;
          if (col >= 0 && col < cols) tabs[static_cast<size_t>(col)] = false;
        } else if (a == 3) {
          std::fill(tabs.begin(), tabs.end(), false);
        }
      }
    }
  }

  // After libvterm has seen the unit: mirror its effect on hidden state.
  void After(const VtSegment& s) {
    using K = VtSegment::Kind;
    if (s.kind == K::kControl) {
      if (s.final == 0x0e) gl = 1;
      if (s.final == 0x0f) gl = 0;
    } else if (s.kind == K::kEscape) {
      if (s.intermed.empty()) {
        switch (s.final) {
          case '=': keypad = true; break;
          case '>': keypad = false; break;
          case 'c':
            ResetTracked();
            decom = false;
            mode_cache_fresh = false;
            sr_bottom = -1;
            break;
          case 'n': gl = 2; break;
          case 'o': gl = 3; break;
          default: break;
        }
      } else if (s.intermed.size() == 1 && s.intermed[0] >= '(' && s.intermed[0] <= '+') {
        if (s.final == '0' || s.final == 'A' || s.final == 'B') {
          charset[s.intermed[0] - '('] = s.final;
        }
      }
    } else if (s.kind == K::kCsi) {
      if (s.intermed.empty() && s.leader.empty() && s.final == 'r') {
        long t = s.args.empty() || s.args[0] == VtSegment::kMissing ? 1 : s.args[0];
        long b = s.args.size() < 2 || s.args[1] == VtSegment::kMissing ? -1 : s.args[1];
        SetRegion(t, b);
        return;
      }
      // (libvterm 0.1 does not implement DECSTR, CSI ! p.)
      if (!s.intermed.empty() || (s.final != 'h' && s.final != 'l')) return;
      bool on = s.final == 'h';
      for (long a : s.args) {
        if (s.leader.empty()) {
          if (a == 4) irm = on;
          if (a == 20) lnm = on;
        } else if (s.leader == "?") {
          if (a == 69) declrmm = on;
          if (a == 7) autowrap = on;
          if (a == 6) decom = on;
        }
      }
    }
  }

  // Mirrors libvterm's DECSTBM (1-based top; bottom -1 when absent).
  void SetRegion(long top, long bottom) {
    long t = std::clamp(top - 1, 0L, static_cast<long>(rows));
    long b = std::max(bottom, -1L);
    if (t == 0 && b == rows) {
      b = -1;
    } else {
      b = std::min(b, static_cast<long>(rows));
    }
    if ((b == -1 ? rows : b) <= t) b = -1;
    sr_bottom = static_cast<int>(b);
  }

  // libvterm decodes a text write by its first byte: from ASCII through
  // the charset in GL (DEC graphics, …), from a UTF-8 byte as UTF-8 to the
  // end of the write — ASCII included, untranslated — grouping combining
  // marks with their base. So how the text was cut into writes would
  // change the screen (and a repaint or a replay, cut differently, would
  // differ). Text goes in canonical writes instead: each ASCII run, each
  // other character on its own (a combining mark then joins its base
  // through libvterm's combining state, as it does after an ASCII base).
  void FeedText(std::string_view t) {
    size_t i = 0, n = t.size();
    while (i < n) {
      size_t j = i + 1;
      if (static_cast<unsigned char>(t[i]) < 0x80) {
        while (j < n && static_cast<unsigned char>(t[j]) < 0x80) ++j;
      } else {
        while (j < n && (static_cast<unsigned char>(t[j]) & 0xC0) == 0x80) ++j;
      }
      vterm_input_write(vt, t.data() + i, j - i);
      i = j;
    }
  }

  // libvterm's cursor-positioning CSIs (CUU CUD CUF CUB CNL CPL CHA CUP
  // HPA HPR VPA VPR HVP HPB VPB) clear its phantom flag even when the
  // cursor does not move (CUP to where it is, CUF at the margin); other
  // sequences clear it only by moving the cursor.
  static bool ClearsPhantom(const VtSegment& s) {
    return s.kind == VtSegment::Kind::kCsi && s.leader.empty() && s.intermed.empty() &&
           std::strchr("ABCDEFGH`adefjk", s.final) != nullptr && s.final != 0;
  }

  void Feed(const VtSegment& s) {
    // Only SM/RM change the cached modes (and RIS, below); any other CSI,
    // even one libvterm does not know (which leaves the cursor where it
    // is), keeps the cache.
    if (s.kind == VtSegment::Kind::kCsi && (s.final == 'h' || s.final == 'l')) mode_cache_fresh = false;
    Before(s);
    VTermPos before = Cursor();
    damage_count = 0;
    if (s.kind == VtSegment::Kind::kText) {
      FeedText(s.bytes);
    } else {
      vterm_input_write(vt, s.bytes.data(), s.bytes.size());
    }
    VTermPos after = Cursor();
    bool moved = before.row != after.row || before.col != after.col;
    if (s.kind == VtSegment::Kind::kText) {
      if (damage_count > 0 && last_damage.end_row == last_damage.start_row + 1) {
        glyph.valid = true;
        glyph.pos = VTermPos{last_damage.start_row, last_damage.start_col};
        glyph.width = last_damage.end_col - last_damage.start_col;
        glyph.autowrap = autowrap;
        combine.set = true;
        combine.pos = glyph.pos;
        combine.width = glyph.width;
        VTermScreenCell cc{};
        vterm_screen_get_cell(screen, combine.pos, &cc);
        std::copy(std::begin(cc.chars), std::end(cc.chars), std::begin(combine.chars));
        // libvterm sets its phantom flag when a glyph ends at the margin
        // with autowrap on, and clears it when the cursor moves (or a
        // cursor-positioning CSI runs: ClearsPhantom).
        phantom = autowrap && last_damage.end_col >= cols && after.row == glyph.pos.row &&
                  after.col == glyph.pos.col;
      } else if (moved) {
        phantom = false;
      }
    } else {
      if (damage_count > 0 || moved) glyph.valid = false;
      if (moved || ClearsPhantom(s)) phantom = false;
    }
    After(s);
  }

  static constexpr size_t kMaxLog = size_t{64} << 10;

  void Write(std::string_view bytes) {
    if (logging && base_ok && !bytes.empty()) {
      // (Text goes to libvterm in canonical writes, so how the bytes were
      // cut does not matter: consecutive writes share one record.)
      if (log_bytes_at == std::string::npos) {
        log.push_back(kOpBytes);
        log_bytes_at = log.size();
        log.append(4, '\0');
      }
      uint32_t n = 0;
      std::memcpy(&n, log.data() + log_bytes_at, 4);
      n += static_cast<uint32_t>(bytes.size());
      std::memcpy(log.data() + log_bytes_at, &n, 4);
      log.append(bytes);
    }
    segmenter.Feed(bytes, [this](const VtSegment& s) { Feed(s); });
    if (logging && base_ok && log.size() > kMaxLog) TryRebase();
  }

  // A resize, logged like output (the check after it usually starts a new
  // base; a state only a resize could make keeps the log).
  void ResizeOp(int c, int r) {
    if (logging && base_ok) {
      log.push_back(kOpResize);
      uint16_t cc = static_cast<uint16_t>(c), rr = static_cast<uint16_t>(r);
      log.append(reinterpret_cast<const char*>(&cc), 2);
      log.append(reinterpret_cast<const char*>(&rr), 2);
      log_bytes_at = std::string::npos;
      log_resized = true;
    }
    DoResize(c, r);
    if (!logging) return;
    std::string body = Body();
    if (Verify(body)) Rebase(body);
  }

  // Replays StateData::ops records; false if they are malformed.
  bool ReplayOps(std::string_view ops) {
    size_t i = 0;
    while (i < ops.size()) {
      char k = ops[i++];
      if (k == kOpBytes && ops.size() - i >= 4) {
        uint32_t n = 0;
        std::memcpy(&n, ops.data() + i, 4);
        i += 4;
        if (ops.size() - i < n) return false;
        Write(ops.substr(i, n));
        i += n;
      } else if (k == kOpResize && ops.size() - i >= 4) {
        uint16_t c = 0, r = 0;
        std::memcpy(&c, ops.data() + i, 2);
        std::memcpy(&r, ops.data() + i + 2, 2);
        i += 4;
        if (!ScreenSizeInRange(c, r)) return false;
        if (c != cols || r != rows) ResizeOp(c, r);
      } else {
        return false;
      }
    }
    return true;
  }

  // The scrollback as it was at base (oldest first).
  std::vector<std::pair<int32_t, std::string>> BaseScrollback() const {
    size_t keep = scrollback.size() - std::min(scrollback.size(), static_cast<size_t>(pushed_since_base));
    std::vector<std::pair<int32_t, std::string>> out(scrollback.begin(),
                                                     scrollback.begin() + static_cast<std::ptrdiff_t>(keep));
    out.insert(out.end(), base_popped.rbegin(), base_popped.rend());
    return out;
  }

  void DoResize(int c, int r) {
    // (The cursor may be left outside the scroll region: the modes are
    // known before, see QueryDecMode.)
    if (decom && !mode_cache_fresh) RefreshModeCache();
    VTermPos before = Cursor();
    Pen pen = PenOf(state);
    int old_cols = cols;
    vterm_set_size(vt, r, c);
    rows = r;
    cols = c;
    if (sr_bottom > r) sr_bottom = r;
    VTermPos after = Cursor();
    if (before.row != after.row || before.col != after.col || old_cols != c) {
      glyph.valid = false;
      phantom = false;
    }
    ClampCursor();
    ClampMargins();
    ClampSavedCursor();
    // Tab stops: kept where they were, the default every 8 in new columns.
    std::vector<bool> t(static_cast<size_t>(c), false);
    for (int i = 0; i < c; ++i) {
      t[static_cast<size_t>(i)] = i < old_cols ? tabs[static_cast<size_t>(i)] : (i % 8 == 0);
    }
    tabs.swap(t);
    if (alt && !primary.empty()) {
      // libvterm crops or extends the hidden main screen, new cells erased
      // with the current pen.
      VTermScreenCell fill{};
      fill.width = 1;
      fill.attrs.bold = pen.bold;
      fill.attrs.underline = pen.underline;
      fill.attrs.italic = pen.italic;
      fill.attrs.blink = pen.blink;
      fill.attrs.reverse = pen.reverse;
      fill.attrs.strike = pen.strike;
      fill.attrs.font = pen.font;
      fill.fg = pen.fg;
      fill.bg = pen.bg;
      std::vector<VTermScreenCell> np(static_cast<size_t>(r) * c, fill);
      for (int y = 0; y < r && y < primary_rows; ++y) {
        for (int x = 0; x < c && x < primary_cols; ++x) {
          np[static_cast<size_t>(y) * c + x] = primary[static_cast<size_t>(y) * primary_cols + x];
        }
      }
      primary.swap(np);
      primary_rows = r;
      primary_cols = c;
    }
  }

  // libvterm 0.1 keeps the scroll region and left/right margins when the
  // screen shrinks below them, and then writes out of bounds (memmove with
  // a negative size). Shrink them to the screen, as xterm does, and put the
  // cursor back where it was.
  void ClampMargins() {
    auto [top, bottom] = QueryRegion("r");
    bool lr = declrmm;
    auto [left, right] = lr ? QueryRegion("s") : std::pair<int, int>{1, cols};
    bool rows_ok = top < bottom && bottom <= rows;
    bool cols_ok = left < right && right <= cols;
    if (rows_ok && cols_ok) return;
    VTermPos cur = Cursor();
    std::string fix;
    if (!rows_ok) {
      int nb = std::min(bottom, rows);
      if (top < nb) {
        fix += fmt::format("\x1b[{};{}r", top, nb);
        SetRegion(top, nb);
      } else {
        fix += "\x1b[r";
        SetRegion(1, -1);
      }
    }
    if (!cols_ok) {
      int nr = std::min(right, cols);
      if (left < nr) fix += fmt::format("\x1b[{};{}s", left, nr);
      else fix += "\x1b[s";
    }
    bool origin = QueryDecMode(6) == 1;
    vterm_input_write(vt, fix.data(), fix.size());
    int ntop = QueryRegion("r").first;
    int row = cur.row - (origin ? ntop - 1 : 0);
    std::string cup = fmt::format("\x1b[{};{}H", std::max(row, 0) + 1, cur.col + 1);
    vterm_input_write(vt, cup.data(), cup.size());
    glyph.valid = false;
    phantom = false;
  }

  // libvterm 0.1 can move the cursor above the screen when it shrinks
  // (content below scrolls up, the cursor with it, unclamped), and then
  // reads out of bounds. Put it back on the screen.
  void ClampCursor() {
    VTermPos cur = Cursor();
    if (cur.row >= 0 && cur.col >= 0 && cur.row < rows && cur.col < cols) return;
    int row = std::clamp(cur.row, 0, rows - 1), col = std::clamp(cur.col, 0, cols - 1);
    bool origin = QueryDecMode(6) == 1;
    int top = origin ? QueryRegion("r").first - 1 : 0;
    std::string fix = fmt::format("\x1b[{};{}H", std::max(row - top, 0) + 1, col + 1);
    vterm_input_write(vt, fix.data(), fix.size());
    glyph.valid = false;
    phantom = false;
  }

  // libvterm 0.1 also keeps a saved cursor (DECSC) outside a shrunken
  // screen and restores it there. Move it inside, as xterm does, keeping the
  // saved pen and cursor style, and leave everything else as it was.
  void ClampSavedCursor() {
    if (!saved.valid || (saved.pos.row >= 0 && saved.pos.col >= 0 && saved.pos.row < rows &&
                         saved.pos.col < cols)) {
      return;
    }
    VTermPos cur = Cursor();
    Pen pen = PenOf(state);
    bool vis = cursor_visible, blink = cursor_blink;
    int shape = cursor_shape;
    bool origin = QueryDecMode(6) == 1;
    VTermPos clamped{std::clamp(saved.pos.row, 0, rows - 1), std::clamp(saved.pos.col, 0, cols - 1)};
    std::string fix;
    if (origin) fix += "\x1b[?6l";
    // Not DECRC: libvterm would put the cursor outside the screen.
    fix += fmt::format("\x1b[{};{}H", clamped.row + 1, clamped.col + 1);
    AppendSgr(&fix, saved.pen);
    {
      int sn = saved.shape == VTERM_PROP_CURSORSHAPE_UNDERLINE  ? 3
               : saved.shape == VTERM_PROP_CURSORSHAPE_BAR_LEFT ? 5
                                                                : 1;
      if (!saved.blink) ++sn;
      fix += fmt::format("\x1b[{} q\x1b[?25{}\x1b" "7", sn, saved.visible ? 'h' : 'l');
    }
    if (origin) fix += "\x1b[?6h";
    int top = origin ? QueryRegion("r").first - 1 : 0;
    fix += fmt::format("\x1b[{};{}H", cur.row - top + 1, cur.col + 1);
    AppendSgr(&fix, pen);
    int n = shape == VTERM_PROP_CURSORSHAPE_UNDERLINE ? 3 : shape == VTERM_PROP_CURSORSHAPE_BAR_LEFT ? 5 : 1;
    if (!blink) ++n;
    fix += fmt::format("\x1b[{} q\x1b[?25{}", n, vis ? 'h' : 'l');
    vterm_input_write(vt, fix.data(), fix.size());
    saved.pos = clamped;
    // DECSCUSR cannot set shape 0 (the zeroed slot's, see Body): the slot
    // now holds a block, and so does the cursor if it had shape 0 too (the
    // latter libvterm reports; the slot it does not).
    if (saved.shape == 0) saved.shape = VTERM_PROP_CURSORSHAPE_BLOCK;
    glyph.valid = false;
    phantom = false;
  }

  // Asks libvterm for a DEC private mode: 1 set, 2 reset, 0 unknown.
  //
  // A DECRQM is a CSI, and libvterm ends every CSI by clamping the cursor
  // into the scroll region in origin mode. A program can leave the cursor
  // outside the region there (DECRC to a cursor saved outside it) until its
  // next CSI that libvterm knows; asking then would move it. So the modes
  // are cached before such a DECRC or a resize (only SM/RM change them, and
  // those clamp the cursor) and the cache answers while the cursor is
  // outside.
  int QueryDecMode(int mode) {
    if (decom && mode_cache_fresh && CursorOutsideRegion()) {
      auto it = mode_cache.find(mode);
      if (it != mode_cache.end()) return it->second;
    }
    return RawQueryDecMode(mode);
  }

  bool CursorOutsideRegion() {
    VTermPos c = Cursor();
    auto [top, bottom] = QueryRegion("r");  // a DCS: libvterm does not clamp after it
    if (c.row < top - 1 || c.row > bottom - 1) return true;
    if (!declrmm) return false;
    auto [left, right] = QueryRegion("s");
    return c.col < left - 1 || c.col > right - 1;
  }

  void RefreshModeCache() {
    static constexpr int kCached[] = {1, 5, 6, 7, 1000, 1002, 1003, 1004, 1005, 1006, 1015, 2004};
    for (int m : kCached) mode_cache[m] = RawQueryDecMode(m);
    mode_cache_fresh = true;
  }

  int RawQueryDecMode(int mode) {
    std::string out;
    query_out = &out;
    std::string q = fmt::format("\x1b[?{}$p", mode);
    vterm_input_write(vt, q.data(), q.size());
    query_out = nullptr;
    // Reply: ESC [ ? mode ; value $ y
    size_t semi = out.find(';');
    if (semi == std::string::npos || semi + 1 >= out.size()) return 0;
    return out[semi + 1] - '0';
  }

  // Asks libvterm for the scroll region (DECRQSS r): 1-based top, bottom.
  // Or the left/right margins (DECRQSS s) with which = "s".
  std::pair<int, int> QueryRegion(const char* which = "r") {
    std::string out;
    query_out = &out;
    std::string q = fmt::format("\x1bP$q{}\x1b\\", which);
    vterm_input_write(vt, q.data(), q.size());
    query_out = nullptr;
    int top = 1, bottom = which[0] == 's' ? cols : rows;
    size_t p = out.find("$r");
    if (p != std::string::npos &&
        std::sscanf(out.c_str() + p + 2, "%d;%d", &top, &bottom) != 2) {
      top = 1;
      bottom = which[0] == 's' ? cols : rows;
    }
    return {top, bottom};
  }

  // The repaint (see screen.h). Its body is checked by writing it to a
  // scratch emulator and comparing every state this file can read or
  // tracks (SameState). If it does not reproduce the state exactly (a state
  // no escape sequence can make: doc/replay.md, "Exactness"), the answer is
  // the last checked body (`base`) plus the output written since (`log`),
  // which replays to exactly this state. Only if that is gone too (more
  // than kMaxLog bytes since, or a resize: bytes cannot resize the
  // receiving terminal) is the unchecked body used (inexact_count).
  enum class Made { kExact, kReplayed, kInexact };

  // Checks the body; on success it is the new base.
  Made Check(std::string* body) {
    *body = Body();
    if (Verify(*body)) {
      Rebase(*body);
      return Made::kExact;
    }
    return base_ok ? Made::kReplayed : Made::kInexact;
  }

  std::string Repaint(const RepaintOptions& options) {
    std::string body;
    Made made = Check(&body);
    if (made == Made::kReplayed && log_resized) made = Made::kInexact;
    std::string out;
    if (options.reset) out.append("\x1b" "c");
    if (made == Made::kReplayed) {
      ++replayed_count;
      if (options.include_scrollback) {
        auto sb = BaseScrollback();
        AppendScrollbackLines(&out, sb.begin(), sb.end());
      }
      out.append(base);
      for (size_t i = 0; i + 5 <= log.size();) {  // bytes records only (no resize)
        uint32_t n = 0;
        std::memcpy(&n, log.data() + i + 1, 4);
        out.append(log, i + 5, n);
        i += 5 + n;
      }
      return out;
    }
    ++(made == Made::kExact ? exact_count : inexact_count);
    if (options.include_scrollback) AppendScrollbackLines(&out, scrollback.begin(), scrollback.end());
    out.append(body);
    return out;
  }

  void Rebase(const std::string& body) {
    base = body;
    base_cols = cols;
    base_rows = rows;
    log.clear();
    log_bytes_at = std::string::npos;
    log_resized = false;
    pushed_since_base = 0;
    base_popped.clear();
    base_ok = true;
  }

  // After a resize (which the log cannot carry) or a long log: a new base
  // if the state is reproducible now, else none until it is again.
  void TryRebase() {
    if (!logging) return;
    std::string body = Body();
    if (Verify(body)) {
      Rebase(body);
    } else {
      Rebase(std::string());
      base_ok = false;
    }
  }

  // True if `body` written to a fresh emulator of this size gives this state.
  bool Verify(const std::string& body) {
    Impl scratch;
    scratch.sb_limit = 0;
    scratch.logging = false;
    scratch.Init(rows, cols);
    scratch.Write(body);
    return SameState(scratch);
  }

  // (The right half of a wide glyph shows nothing of its own: its pen is
  // not compared.)
  static bool SameCell(const VTermScreenCell& a, const VTermScreenCell& b) {
    if (a.chars[0] == kWideTail || b.chars[0] == kWideTail) return a.chars[0] == b.chars[0];
    for (int i = 0; i < VTERM_MAX_CHARS_PER_CELL; ++i) {
      if (a.chars[i] != b.chars[i]) return false;
      if (a.chars[i] == 0) break;
    }
    const VTermScreenCellAttrs &x = a.attrs, &y = b.attrs;
    return a.width == b.width && x.bold == y.bold && x.underline == y.underline &&
           x.italic == y.italic && x.blink == y.blink && x.reverse == y.reverse &&
           x.strike == y.strike && x.font == y.font &&
           x.dwl == y.dwl && x.dhl == y.dhl && SameColor(a.fg, b.fg) && SameColor(a.bg, b.bg);
  }

  // Every state of libvterm this file can read, and what it tracks.
  bool SameState(Impl& o) {
    if (rows != o.rows || cols != o.cols || alt != o.alt) return false;
    VTermScreenCell a, b;
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < cols; ++c) {
        vterm_screen_get_cell(screen, VTermPos{r, c}, &a);
        vterm_screen_get_cell(o.screen, VTermPos{r, c}, &b);
        if (!SameCell(a, b)) return false;
      }
    }
    if (alt) {
      if (primary.empty() != o.primary.empty()) return false;
      if (!primary.empty()) {
        if (primary_rows != o.primary_rows || primary_cols != o.primary_cols) return false;
        for (size_t i = 0; i < primary.size(); ++i) {
          if (!SameCell(primary[i], o.primary[i])) return false;
        }
      }
    }
    VTermPos p = Cursor(), q = o.Cursor();
    if (p.row != q.row || p.col != q.col || phantom != o.phantom) return false;
    if (cursor_visible != o.cursor_visible || cursor_blink != o.cursor_blink ||
        cursor_shape != o.cursor_shape || title != o.title || icon != o.icon) {
      return false;
    }
    if (!SamePen(PenOf(state), PenOf(o.state))) return false;
    if (saved.valid != o.saved.valid || saved.pos.row != o.saved.pos.row ||
        saved.pos.col != o.saved.pos.col || !SamePen(saved.pen, o.saved.pen) ||
        saved.visible != o.saved.visible || saved.blink != o.saved.blink ||
        saved.shape != o.saved.shape) {
      return false;
    }
    if (tabs != o.tabs || !std::equal(std::begin(charset), std::end(charset), std::begin(o.charset)) ||
        gl != o.gl || keypad != o.keypad || irm != o.irm || lnm != o.lnm ||
        autowrap != o.autowrap || declrmm != o.declrmm || decom != o.decom) {
      return false;
    }
    if (combine.set != o.combine.set) return false;
    if (combine.set && (combine.pos.row != o.combine.pos.row || combine.pos.col != o.combine.pos.col ||
                        combine.width != o.combine.width ||
                        !std::equal(std::begin(combine.chars), std::end(combine.chars),
                                    std::begin(o.combine.chars)))) {
      return false;
    }
    if (segmenter.pending() != o.segmenter.pending()) return false;
    if ((sr_bottom == -1) != (o.sr_bottom == -1)) return false;
    if (QueryRegion("r") != o.QueryRegion("r") || QueryRegion("s") != o.QueryRegion("s")) return false;
    static constexpr int kModes[] = {1, 5, 6, 7, 1000, 1002, 1003, 1004, 1005, 1006, 1015, 2004};
    for (int m : kModes) {
      if (QueryDecMode(m) != o.QueryDecMode(m)) return false;
    }
    return true;
  }

  // The scrollback lines [0, n) painted and scrolled into the receiving
  // terminal's own scrollback, leaving a blank screen.
  template <class It>
  void AppendScrollbackLines(std::string* outp, It first, It last) {
    size_t lines = static_cast<size_t>(std::distance(first, last));
    if (lines == 0) return;
    std::string& out = *outp;
    const Pen def = DefaultPen();
    PaintOut w{out};
    {
      out.append("\x1b[H");
      for (It it = first; it != last; ++it) {
        const auto& [width, enc] = *it;
        std::vector<VTermScreenCell> cells = DecodeRow(enc, std::max(width, 1));
        int n = std::min(width, cols);
        // A wide glyph cut at the right edge would wrap: drop it.
        if (n > 0 && n < width && cells[static_cast<size_t>(n) - 1].width == 2) --n;
        AppendRow(&out, cells.data(), n, &w.pen);
        w.SetPen(def);
        out.append("\r\n");
      }
      w.Cup(rows - 1, 0);
      size_t lfs = std::min(lines, static_cast<size_t>(rows - 1));
      out.append(lfs, '\n');
      out.append("\x1b[H");
    }
  }

  // The repaint without RIS and scrollback, for a fresh terminal (or one
  // that is blank after the scrollback lines, pen and modes the defaults).
  std::string Body() {
    std::string out;
    out.reserve(static_cast<size_t>(rows) * cols);
    const Pen def = DefaultPen();
    PaintOut w{out};
    // The receiving terminal's cursor style as the repaint goes.
    bool term_visible = true, term_blink = true;
    int term_shape = VTERM_PROP_CURSORSHAPE_BLOCK;
    // Cursor shape 0 (no DECSCUSR sets it) is what DECRC restores from a
    // slot no DECSC ever wrote (libvterm's zeroed one: also hidden, not
    // blinking, the pen RGB 0,0,0). A fresh terminal has that slot: use it
    // first if the cursor or the saved cursor has that shape.
    if (cursor_shape == 0 || (saved.valid && saved.shape == 0)) {
      out.append("\x1b" "8");
      term_visible = term_blink = false;
      term_shape = 0;
      w.pen = std::nullopt;
    }
    // Sets the terminal's cursor style (shape 0 cannot be set: left as is,
    // the check in Repaint sees it).
    auto cursor_style = [&](bool visible, bool blink, int shape) {
      if ((blink != term_blink || shape != term_shape) && shape != 0) {
        int n = shape == VTERM_PROP_CURSORSHAPE_UNDERLINE  ? 3
                : shape == VTERM_PROP_CURSORSHAPE_BAR_LEFT ? 5
                                                           : 1;
        if (!blink) ++n;
        fmt::format_to(std::back_inserter(out), "\x1b[{} q", n);
        term_blink = blink;
        term_shape = shape;
      }
      if (visible != term_visible) out.append(visible ? "\x1b[?25h" : "\x1b[?25l");
      term_visible = visible;
    };

    // The main screen (from our copy while the alternate one is shown).
    std::vector<VTermScreenCell> row(static_cast<size_t>(cols));
    auto paint_current = [&] {
      for (int r = 0; r < rows; ++r) {
        for (int c = 0; c < cols; ++c) vterm_screen_get_cell(screen, VTermPos{r, c}, &row[c]);
        int last = cols - 1;
        while (last >= 0 && IsBlankDefault(row[static_cast<size_t>(last)])) --last;
        if (last < 0) continue;
        w.Cup(r, 0);
        AppendRow(&out, row.data(), cols, &w.pen);
      }
    };
    if (alt && !primary.empty()) {
      for (int r = 0; r < primary_rows && r < rows; ++r) {
        const VTermScreenCell* cells = &primary[static_cast<size_t>(r) * primary_cols];
        int n = std::min(primary_cols, cols);
        int last = n - 1;
        while (last >= 0 && IsBlankDefault(cells[last])) --last;
        if (last < 0) continue;
        w.Cup(r, 0);
        AppendRow(&out, cells, n, &w.pen);
      }
      w.SetPen(def);
      out.append("\x1b[?1047h");
      paint_current();
    } else if (alt) {
      w.SetPen(def);
      out.append("\x1b[?1047h");
      paint_current();
    } else {
      paint_current();
    }

    // The saved cursor (DECSC), with its pen and cursor style.
    if (saved.valid) {
      w.Cup(saved.pos.row, saved.pos.col);
      w.SetPen(saved.pen);
      cursor_style(saved.visible, saved.blink, saved.shape);
      out.append("\x1b" "7");
    }

    // libvterm's combining state (the last glyph put): its glyph is printed
    // again, last of all text (unless the phantom column below does it), so
    // that a combining mark written next joins what it would have joined.
    // In place if the cell still holds it; else, while the main screen is
    // shown, on the alternate screen (which every switch to it erases).
    // (Before the modes: no insert mode, margins or charsets yet.)
    if (combine.set && !phantom && combine.chars[0] != 0 && combine.chars[0] != kWideTail &&
        combine.pos.row >= 0 && combine.pos.row < rows && combine.pos.col >= 0 &&
        combine.pos.col + std::max(combine.width, 1) <= cols &&
        combine.width > 0 && GlyphWidth(combine.chars[0]) == combine.width &&
        (combine.chars[1] == 0 || combine.pos.col + combine.width < cols)) {
      // (A lone combining mark, width 0, is left alone: printed again it
      // would join the glyph printed before it. So is a glyph with marks at
      // the right margin, whose marks would come after the wrap.)
      VTermScreenCell cc{};
      vterm_screen_get_cell(screen, combine.pos, &cc);
      bool same = cc.width == std::max(combine.width, 1);
      for (int i = 0; same && i < VTERM_MAX_CHARS_PER_CELL; ++i) {
        same = cc.chars[i] == combine.chars[i];
        if (cc.chars[i] == 0) break;
      }
      auto put = [&] {
        for (int i = 0; i < VTERM_MAX_CHARS_PER_CELL && combine.chars[i]; ++i) {
          AppendUtf8(&out, combine.chars[i]);
        }
      };
      if (same) {
        w.Cup(combine.pos.row, combine.pos.col);
        w.SetPen(PenOf(cc));
        put();
      } else if (!alt) {
        out.append("\x1b[?1047h");
        w.Cup(combine.pos.row, combine.pos.col);
        put();
        out.append("\x1b[?1047l");
      }
    }

    // Tab stops.
    bool default_tabs = true;
    for (int i = 0; i < cols; ++i) default_tabs &= tabs[static_cast<size_t>(i)] == (i % 8 == 0);
    if (!default_tabs) {
      out.append("\x1b[3g");
      for (int i = 0; i < cols; ++i) {
        if (tabs[static_cast<size_t>(i)]) {
          w.Cup(0, i);
          out.append("\x1bH");
        }
      }
    }

    // DEC private modes, as libvterm reports them (default: only 7 set).
    static constexpr int kModes[] = {1, 5, 1000, 1002, 1003, 1004, 1005, 1006, 1015, 2004};
    for (int m : kModes) {
      if (QueryDecMode(m) == 1) fmt::format_to(std::back_inserter(out), "\x1b[?{}h", m);
    }
    if (keypad) out.append("\x1b=");
    if (lnm) out.append("\x1b[20h");

    // Scroll region and origin mode (both home the cursor).
    auto [top, bottom] = QueryRegion();
    if (top != 1 || bottom != rows) fmt::format_to(std::back_inserter(out), "\x1b[{};{}r", top, bottom);
    bool origin = QueryDecMode(6) == 1;
    if (origin) out.append("\x1b[?6h");
    if (declrmm) out.append("\x1b[?69h");

    // Cursor style, title.
    cursor_style(cursor_visible, cursor_blink, cursor_shape);
    if (!icon.empty()) fmt::format_to(std::back_inserter(out), "\x1b]1;{}\x07", icon);
    if (!title.empty()) fmt::format_to(std::back_inserter(out), "\x1b]2;{}\x07", title);

    // The cursor. In the phantom column (after a glyph at the right margin,
    // before the wrap) print what that cell holds so the next glyph wraps.
    VTermPos cur = Cursor();
    int origin_row = origin ? top - 1 : 0;
    bool real_autowrap = QueryDecMode(7) != 2;
    VTermScreenCell ccell{};
    vterm_screen_get_cell(screen, cur, &ccell);
    VTermPos target = cur;
    // Move somewhere else first so a phantom column left by painting is
    // cancelled even if the target is where the cursor already is.
    int tr = target.row - origin_row, tc = target.col;
    if (tr == 0 && tc == 0) fmt::format_to(std::back_inserter(out), "\x1b[{};{}H", 1, 2);
    else out.append("\x1b[H");
    // In origin mode CUP cannot leave the scroll region, but DECRC can (and
    // a program that restores a cursor saved outside it is left there until
    // its next CSI: libvterm clamps the cursor after every CSI). If the
    // saved cursor is on the same side of the region as the cursor, with
    // the same pen and cursor style (DECRC restores those too), the repaint
    // ends with DECRC and a walk by IND/RI and HT/BS, after its last CSI.
    // If only the pen differs, the walk still puts the cursor where it is
    // (the pen is then the saved one: the check in Repaint sees it, and a
    // saved state replays the output instead). If the cursor style differs
    // too, the cursor lands clamped into the region (the same fallback).
    // Only a resize can make such states: see doc/replay.md, "Exactness".
    const int region_top = top - 1, region_bottom = bottom - 1;
    auto same_side = [&](int a, int b) {
      return (a < region_top && b < region_top) || (a > region_bottom && b > region_bottom);
    };
    Pen now_pen = PenOf(state);
    bool walk = origin && !phantom && (target.row < region_top || target.row > region_bottom) &&
                same_side(target.row, saved.pos.row) && saved.pos.col < cols &&
                saved.pos.row < rows && saved.visible == cursor_visible && saved.blink == cursor_blink &&
                saved.shape == cursor_shape;
    // (Clamped: CUP cannot express a row outside the region in origin mode.)
    bool clamped = !walk && origin && (tr < 0 || tr > bottom - top);
    if (!walk) w.Cup(origin ? std::clamp(tr, 0, bottom - top) : tr, tc);
    if (clamped || walk) {
      // Not where the cursor is (or not there yet): print nothing now.
    } else if (phantom) {
      // (Not a glyph with combining marks: they would come after the wrap.)
      if (ccell.chars[0] != 0 && ccell.chars[0] != kWideTail && ccell.chars[1] == 0 &&
          GlyphWidth(ccell.chars[0]) >= 1 && cur.col + GlyphWidth(ccell.chars[0]) >= cols) {
        w.SetPen(PenOf(ccell));
        AppendCellChars(&out, ccell);
      } else if (ccell.chars[0] == 0) {
        out.push_back('x');  // sets the phantom column; then erase the cell
        w.SetPen(PenOf(ccell));
        out.append("\x1b[X");
      }
    }
    if (!real_autowrap) out.append("\x1b[?7l");
    if (irm) out.append("\x1b[4h");
    for (int g = 0; g < 4; ++g) {
      if (charset[g]) {
        out.push_back('\x1b');
        out.push_back(static_cast<char>('(' + g));
        out.push_back(charset[g]);
      }
    }
    if (gl == 1) out.push_back('\x0e');
    if (gl == 2) out.append("\x1bn");
    if (gl == 3) out.append("\x1bo");
    w.SetPen(now_pen);
    if (walk) {
      out.append("\x1b" "8");
      for (int r = saved.pos.row; r < target.row; ++r) out.append("\x1b" "D");
      for (int r = saved.pos.row; r > target.row; --r) out.append("\x1b" "M");
      int c = saved.pos.col;
      while (c < target.col) {  // HT: to the next tab stop or the last column
        out.push_back('\t');
        do {
          ++c;
        } while (c < cols - 1 && !tabs[static_cast<size_t>(c)]);
      }
      for (; c > target.col; --c) out.push_back('\b');
    }
    out.append(segmenter.pending());
    return out;
  }
};

TerminalScreen::TerminalScreen(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TerminalScreen::~TerminalScreen() = default;

static Status CheckSize(int cols, int rows) {
  if (!ScreenSizeInRange(cols, rows)) {
    return Status::InvalidArgument(fmt::format(
        "terminal size {}x{} is out of range ({}..{} columns, 1..{} rows)", cols, rows,
        kMinScreenCols, kMaxScreenCols, kMaxScreenRows));
  }
  return Status::Ok();
}

Result<std::unique_ptr<TerminalScreen>> TerminalScreen::Create(const ScreenOptions& options) {
  if (Status s = CheckSize(options.cols, options.rows); !s.ok()) return s;
  auto impl = std::make_unique<Impl>();
  impl->sb_limit = options.scrollback_lines;
  impl->Init(options.rows, options.cols);
  return std::unique_ptr<TerminalScreen>(new TerminalScreen(std::move(impl)));
}

Result<std::unique_ptr<TerminalScreen>> TerminalScreen::Load(std::string_view data,
                                                             const ScreenOptions& options) {
  bool lz4 = data.size() >= 12 && std::memcmp(data.data(), kStateMagicLz4, 4) == 0;
  if (data.size() < 12 || (!lz4 && std::memcmp(data.data(), kStateMagic, 4) != 0)) {
    return Status::Corruption("not a terminal screen state");
  }
  uint64_t sum = 0;
  std::memcpy(&sum, data.data() + 4, 8);
  std::string_view body = data.substr(12);
  if (Fnv1a(body) != sum) return Status::Corruption("terminal screen state checksum mismatch");
  std::string raw;
  if (lz4) {
    if (body.size() < 4) return Status::Corruption("terminal screen state is truncated");
    uint32_t n = 0;
    for (int i = 0; i < 4; ++i) n |= static_cast<uint32_t>(static_cast<unsigned char>(body[i])) << (8 * i);
    if (n > kMaxStateBody || body.size() - 4 > static_cast<size_t>(LZ4_MAX_INPUT_SIZE)) {
      return Status::Corruption("terminal screen state is too large");
    }
    raw.resize(n);
    int got = LZ4_decompress_safe(body.data() + 4, raw.data(), static_cast<int>(body.size() - 4),
                                  static_cast<int>(n));
    if (got < 0 || static_cast<uint32_t>(got) != n) {
      return Status::Corruption("terminal screen state does not decompress");
    }
    body = raw;
  }
  StateData st;
  try {
    std::istringstream in{std::string(body)};
    cereal::PortableBinaryInputArchive ar(in);
    ar(st);
  } catch (const std::exception& e) {
    return Status::Corruption(std::string("terminal screen state is malformed: ") + e.what());
  }
  if (Status s = CheckSize(st.cols, st.rows); !s.ok()) {
    return Status::Corruption("terminal screen state has a bad size: " + s.message());
  }
  auto impl = std::make_unique<Impl>();
  impl->sb_limit = options.scrollback_lines;
  impl->Init(st.rows, st.cols);
  for (auto& line : st.scrollback) {
    if (line.first < 1 || line.first > kMaxScreenCols) {
      return Status::Corruption("terminal screen state has a bad scrollback line");
    }
    impl->scrollback.push_back(std::move(line));
  }
  while (impl->scrollback.size() > impl->sb_limit) impl->scrollback.pop_front();
  impl->Write(st.repaint);
  // The repaint makes this state by construction: it is the base the ops
  // (if any) continue from, as they did where the state was saved.
  std::string_view b = st.repaint;
  if (b.substr(0, 2) == "\x1b" "c") b.remove_prefix(2);
  impl->Rebase(std::string(b));
  if (!impl->ReplayOps(st.ops)) return Status::Corruption("terminal screen state has malformed ops");
  return std::unique_ptr<TerminalScreen>(new TerminalScreen(std::move(impl)));
}

void TerminalScreen::Write(std::string_view bytes) { impl_->Write(bytes); }

Status TerminalScreen::Resize(int cols, int rows) {
  if (Status s = CheckSize(cols, rows); !s.ok()) return s;
  if (cols == impl_->cols && rows == impl_->rows) return Status::Ok();
  impl_->ResizeOp(cols, rows);
  return Status::Ok();
}

int TerminalScreen::cols() const { return impl_->cols; }
int TerminalScreen::rows() const { return impl_->rows; }

CursorState TerminalScreen::cursor() const {
  CursorState c;
  VTermPos p = impl_->Cursor();
  c.row = p.row;
  c.col = p.col;
  c.visible = impl_->cursor_visible;
  c.blink = impl_->cursor_blink;
  c.shape = impl_->cursor_shape == VTERM_PROP_CURSORSHAPE_UNDERLINE  ? CursorShape::kUnderline
            : impl_->cursor_shape == VTERM_PROP_CURSORSHAPE_BAR_LEFT ? CursorShape::kBar
                                                                     : CursorShape::kBlock;
  return c;
}

bool TerminalScreen::alt_screen() const { return impl_->alt; }
const std::string& TerminalScreen::title() const { return impl_->title; }
const std::string& TerminalScreen::icon_name() const { return impl_->icon; }

ScreenCell TerminalScreen::cell(int row, int col) const {
  if (row < 0 || col < 0 || row >= impl_->rows || col >= impl_->cols) return ScreenCell{};
  VTermScreenCell c;
  vterm_screen_get_cell(impl_->screen, VTermPos{row, col}, &c);
  return ToPublicCell(c);
}

std::string TerminalScreen::RowText(int row) const {
  if (row < 0 || row >= impl_->rows) return {};
  std::vector<VTermScreenCell> cells(static_cast<size_t>(impl_->cols));
  for (int c = 0; c < impl_->cols; ++c) {
    vterm_screen_get_cell(impl_->screen, VTermPos{row, c}, &cells[c]);
  }
  return CellsText(cells.data(), impl_->cols);
}

std::string TerminalScreen::Text() const {
  std::string s;
  for (int r = 0; r < impl_->rows; ++r) {
    if (r) s.push_back('\n');
    s.append(RowText(r));
  }
  return s;
}

size_t TerminalScreen::scrollback_size() const { return impl_->scrollback.size(); }

std::string TerminalScreen::ScrollbackText(size_t index) const {
  if (index >= impl_->scrollback.size()) return {};
  const auto& line = impl_->scrollback[index];
  std::vector<VTermScreenCell> cells = DecodeRow(line.second, std::max(line.first, 1));
  return CellsText(cells.data(), static_cast<int>(cells.size()));
}

std::string TerminalScreen::Repaint(const RepaintOptions& options) const {
  return impl_->Repaint(options);
}

RepaintStats TerminalScreen::repaint_stats() const {
  return RepaintStats{impl_->exact_count, impl_->replayed_count, impl_->inexact_count};
}

std::string TerminalScreen::Save() const {
  StateData st;
  Impl& m = *impl_;
  std::string checked;
  Impl::Made made = m.Check(&checked);
  if (made == Impl::Made::kReplayed) {
    // The base, at its size, and what came after it.
    ++m.replayed_count;
    st.cols = m.base_cols;
    st.rows = m.base_rows;
    st.repaint = "\x1b" "c" + m.base;
    st.ops = m.log;
    st.scrollback = m.BaseScrollback();
  } else {
    ++(made == Impl::Made::kExact ? m.exact_count : m.inexact_count);
    st.cols = m.cols;
    st.rows = m.rows;
    st.repaint = "\x1b" "c" + checked;
    st.scrollback.assign(m.scrollback.begin(), m.scrollback.end());
  }
  std::ostringstream os;
  {
    cereal::PortableBinaryOutputArchive ar(os);
    ar(st);
  }
  std::string body = std::move(os).str();
  // (A state is far below LZ4's input limit: the screen is bounded, and so
  // is the scrollback.)
  std::string packed(4 + static_cast<size_t>(LZ4_compressBound(static_cast<int>(body.size()))), '\0');
  for (int i = 0; i < 4; ++i) packed[i] = static_cast<char>((body.size() >> (8 * i)) & 0xff);
  int n = LZ4_compress_default(body.data(), packed.data() + 4, static_cast<int>(body.size()),
                               static_cast<int>(packed.size() - 4));
  packed.resize(4 + static_cast<size_t>(std::max(n, 0)));
  std::string out(kStateMagicLz4, 4);
  uint64_t sum = Fnv1a(packed);
  out.append(reinterpret_cast<const char*>(&sum), 8);
  out.append(packed);
  return out;
}

}  // namespace dispatch
