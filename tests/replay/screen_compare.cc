// DiffScreens: see screen_compare.h.
#include "screen_compare.h"

#include <fmt/format.h>

namespace dispatch::testing {
namespace {

std::string Describe(const ScreenCell& c) {
  std::string s = "chars=[";
  for (char32_t ch : c.chars) s += fmt::format("U+{:04X} ", static_cast<uint32_t>(ch));
  s += fmt::format("] w={} b={} i={} u={} bl={} r={} s={} f={} fg={}/{} bg={}/{}", c.width, c.bold,
                   c.italic, c.underline, c.blink, c.reverse, c.strike, c.font,
                   static_cast<int>(c.fg.kind), c.fg.index, static_cast<int>(c.bg.kind), c.bg.index);
  return s;
}

}  // namespace

std::string DiffScreens(const TerminalScreen& want, const TerminalScreen& got,
                        bool compare_scrollback) {
  if (want.cols() != got.cols() || want.rows() != got.rows()) {
    return fmt::format("size {}x{} vs {}x{}", want.cols(), want.rows(), got.cols(), got.rows());
  }
  for (int r = 0; r < want.rows(); ++r) {
    for (int c = 0; c < want.cols(); ++c) {
      ScreenCell a = want.cell(r, c), b = got.cell(r, c);
      if (!(a == b)) {
        return fmt::format("cell ({},{}): want {} got {}\n want row: '{}'\n got row:  '{}'", r, c,
                           Describe(a), Describe(b), want.RowText(r), got.RowText(r));
      }
    }
  }
  CursorState a = want.cursor(), b = got.cursor();
  if (!(a == b)) {
    return fmt::format("cursor: want {},{} vis={} blink={} shape={} got {},{} vis={} blink={} shape={}",
                       a.row, a.col, a.visible, a.blink, static_cast<int>(a.shape), b.row, b.col,
                       b.visible, b.blink, static_cast<int>(b.shape));
  }
  if (want.title() != got.title()) return "title: '" + want.title() + "' vs '" + got.title() + "'";
  if (want.icon_name() != got.icon_name()) return "icon name differs";
  if (want.alt_screen() != got.alt_screen()) return "alt screen differs";
  if (compare_scrollback) {
    if (want.scrollback_size() != got.scrollback_size()) {
      return fmt::format("scrollback size {} vs {}", want.scrollback_size(), got.scrollback_size());
    }
    for (size_t i = 0; i < want.scrollback_size(); ++i) {
      if (want.ScrollbackText(i) != got.ScrollbackText(i)) {
        return fmt::format("scrollback line {}: '{}' vs '{}'", i, want.ScrollbackText(i),
                           got.ScrollbackText(i));
      }
    }
  }
  return "";
}

}  // namespace dispatch::testing
