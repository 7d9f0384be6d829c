// VtSegmenter: see vt_segmenter.h. The state machine follows libvterm
// 0.1.x's parser.c byte for byte where it matters for unit boundaries:
// C0 controls inside a sequence are executed in place (so they stay inside
// the unit), CAN/SUB abort, ESC restarts, BEL or ESC \ end a string.
#include "replay/vt_segmenter.h"

#include "util/text_codec.h"

namespace dispatch::internal {

namespace {

bool AllAscii(std::string_view s) {
  for (unsigned char c : s) {
    if (c >= 0x80) return false;
  }
  return true;
}

enum class State { kEsc, kCsiLeader, kCsiArgs, kCsiIntermed, kString, kEscInString };

void ParseArgs(std::string_view a, std::vector<long>* out) {
  out->clear();
  long cur = VtSegment::kMissing;
  for (char c : a) {
    if (c >= '0' && c <= '9') {
      if (cur == VtSegment::kMissing) cur = 0;
      if (cur < 100000000) cur = cur * 10 + (c - '0');
    } else {  // ';' or ':'
      out->push_back(cur);
      cur = VtSegment::kMissing;
    }
  }
  out->push_back(cur);
}

}  // namespace

void VtSegmenter::Feed(std::string_view data, const Sink& sink) {
  if (pending_.empty()) {
    size_t used = Parse(data, sink, false);
    pending_.assign(data.substr(used));
  } else {
    std::string buf;
    buf.swap(pending_);
    buf.append(data);
    size_t used = Parse(buf, sink, false);
    pending_.assign(std::string_view(buf).substr(used));
  }
  if (pending_.size() > kMaxPending) {
    std::string buf;
    buf.swap(pending_);
    Parse(buf, sink, true);
  }
}

size_t VtSegmenter::Parse(std::string_view buf, const Sink& sink, bool flush) {
  const size_t n = buf.size();
  size_t i = 0;
  VtSegment seg;
  while (i < n) {
    auto c = static_cast<unsigned char>(buf[i]);
    if (c == 0x1b) {
      State st = State::kEsc;
      size_t k = i + 1;
      size_t leader_begin = 0, args_begin = 0, inter_begin = i + 1, inter_end = i + 1;
      bool done = false, restart = false;
      VtSegment::Kind kind = VtSegment::Kind::kAborted;
      char final = 0;
      for (; k < n && !done; ++k) {
        auto b = static_cast<unsigned char>(buf[k]);
        if (b == 0x00 || b == 0x7f) continue;
        if (b == 0x18 || b == 0x1a) {  // CAN, SUB: abort
          kind = VtSegment::Kind::kAborted;
          done = true;
          break;
        }
        if (b == 0x1b) {
          if (st == State::kString) {
            st = State::kEscInString;
            continue;
          }
          restart = true;  // the partial sequence is abandoned
          break;
        }
        if (b == 0x07 && st == State::kString) {
          kind = VtSegment::Kind::kString;
          done = true;
          break;
        }
        if (b < 0x20) continue;  // executed in place
        if (st == State::kEscInString) {
          if (b == 0x5c) {
            kind = VtSegment::Kind::kString;
            done = true;
            break;
          }
          st = State::kEsc;
          inter_begin = inter_end = k;
        }
        switch (st) {
          case State::kEsc:
            if (b == 'P' || b == ']') {
              st = State::kString;
            } else if (b == '[') {
              st = State::kCsiLeader;
              leader_begin = k + 1;
            } else if (b >= 0x20 && b <= 0x2f) {
              inter_end = k + 1;
            } else if ((inter_end == inter_begin && b >= 0x40 && b < 0x60) ||
                       (b >= 0x30 && b < 0x7f)) {
              kind = VtSegment::Kind::kEscape;
              final = static_cast<char>(b);
              done = true;
            }
            break;
          case State::kCsiLeader:
            if (b >= 0x3c && b <= 0x3f) break;
            args_begin = k;
            st = State::kCsiArgs;
            [[fallthrough]];
          case State::kCsiArgs:
            if ((b >= '0' && b <= '9') || b == ';' || b == ':') break;
            inter_begin = inter_end = k;
            st = State::kCsiIntermed;
            [[fallthrough]];
          case State::kCsiIntermed:
            if (b >= 0x20 && b <= 0x2f) {
              inter_end = k + 1;
            } else {
              kind = (b >= 0x40 && b <= 0x7e) ? VtSegment::Kind::kCsi : VtSegment::Kind::kAborted;
              final = static_cast<char>(b);
              done = true;
            }
            break;
          case State::kString:
          case State::kEscInString:
            break;
        }
        if (done) break;
      }
      if (restart) {
        seg = VtSegment{};
        seg.kind = VtSegment::Kind::kAborted;
        seg.bytes = buf.substr(i, k - i);
        sink(seg);
        i = k;
        continue;
      }
      if (!done) {
        if (!flush) return i;  // incomplete: hold from the ESC
        seg = VtSegment{};
        seg.kind = VtSegment::Kind::kAborted;
        seg.bytes = buf.substr(i);
        sink(seg);
        return n;
      }
      seg.kind = kind;
      seg.bytes = buf.substr(i, k + 1 - i);
      seg.final = final;
      seg.leader = {};
      seg.intermed = {};
      seg.args.clear();
      if (kind == VtSegment::Kind::kEscape) {
        seg.intermed = buf.substr(inter_begin, inter_end - inter_begin);
      } else if (kind == VtSegment::Kind::kCsi) {
        seg.leader = buf.substr(leader_begin, args_begin - leader_begin);
        // Intermediates start where the argument bytes end.
        size_t a_end = args_begin;
        while (a_end < k) {
          auto ch = static_cast<unsigned char>(buf[a_end]);
          if ((ch >= '0' && ch <= '9') || ch == ';' || ch == ':' || ch < 0x20 || ch == 0x7f) {
            ++a_end;
          } else {
            break;
          }
        }
        std::string clean;
        for (size_t p = args_begin; p < a_end; ++p) {
          auto ch = static_cast<unsigned char>(buf[p]);
          if (ch >= 0x20 && ch != 0x7f) clean.push_back(static_cast<char>(ch));
        }
        ParseArgs(clean, &seg.args);
        std::string_view inter = buf.substr(a_end, k - a_end);
        seg.intermed = inter;
      }
      sink(seg);
      i = k + 1;
      continue;
    }
    if (c < 0x20) {
      seg = VtSegment{};
      seg.kind = VtSegment::Kind::kControl;
      seg.bytes = buf.substr(i, 1);
      seg.final = static_cast<char>(c);
      sink(seg);
      ++i;
      continue;
    }
    size_t j = i;
    while (j < n) {
      auto b = static_cast<unsigned char>(buf[j]);
      if (b < 0x20) break;  // ESC, NUL and other controls end text
      ++j;
    }
    size_t end = j;
    if (j == n && !flush) end = j - IncompleteUtf8Tail(buf.substr(i, j - i));
    if (end > i) {
      seg = VtSegment{};
      seg.kind = VtSegment::Kind::kText;
      seg.bytes = buf.substr(i, end - i);
      if (!AllAscii(seg.bytes)) {
        // Invalid UTF-8, and a character cut by a control (which can never
        // be completed), become U+FFFD: libvterm's decoder would otherwise
        // keep half a character across units, state no snapshot can see.
        scratch_.clear();
        SanitizeUtf8(seg.bytes, &scratch_);
        seg.bytes = scratch_;
      }
      sink(seg);
    }
    if (end < j) return end;
    i = j;
  }
  return n;
}

}  // namespace dispatch::internal
