// Bindings of the replay engine and recordings: dispatch.screen (a
// terminal screen rebuilt at any seq of a pty run), dispatch.session_status
// (one run's lifecycle folded from its events), and the recording formats
// (export_asciicast, export_jsonl, import_jsonl).
//
// Every rebuild/export/import runs with the GIL released and keeps the
// store alive (shared_ptr) while it works. A Screen owns its TerminalScreen;
// Python objects are only touched with the GIL held, so the (not
// thread-safe) screen is used by one thread at a time.
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "common.h"
#include "dispatch/projection.h"
#include "dispatch/recording.h"
#include "dispatch/replay.h"
#include "dispatch/screen.h"

namespace dispatch::python {

namespace {

// Text the library produced (UTF-8 in principle) as a str; anything invalid
// becomes U+FFFD rather than an exception.
py::str Text(const std::string& s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
  if (o == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(o);
}

py::object ColorObject(const TermColor& c) {
  switch (c.kind) {
    case TermColor::Kind::kIndexed:
      return py::int_(c.index);
    case TermColor::Kind::kRgb:
      return py::make_tuple(c.r, c.g, c.b);
    case TermColor::Kind::kDefault:
      break;
  }
  return py::none();
}

const char* ShapeName(CursorShape s) {
  switch (s) {
    case CursorShape::kUnderline:
      return "underline";
    case CursorShape::kBar:
      return "bar";
    case CursorShape::kBlock:
      break;
  }
  return "block";
}

// A run's seq argument: None = everything stored now.
int64_t SeqArg(std::optional<int64_t> at_seq) {
  if (!at_seq) return kLatestSeq;
  if (*at_seq < 0) RaiseStatus(Status::InvalidArgument("at_seq must be >= 0"));
  return *at_seq;
}

// Raises NotFound for a run that never had an event (GIL released inside).
void RequireRun(EventStore& store, const std::string& run_id) {
  Result<RunInfo> run = [&] {
    py::gil_scoped_release unlocked;
    return store.GetRun(run_id);
  }();
  if (!run.ok()) RaiseStatus(run.error());
}

// ---------------------------------------------------------------- screen

struct PyScreen {
  std::unique_ptr<TerminalScreen> screen;
  std::string run_id;
  ReplayResult replay;

  const TerminalScreen& s() const { return *screen; }

  py::list Lines() const {
    py::list out;
    for (int r = 0; r < s().rows(); ++r) out.append(Text(s().RowText(r)));
    return out;
  }
  py::list Scrollback() const {
    py::list out;
    for (size_t i = 0; i < s().scrollback_size(); ++i) out.append(Text(s().ScrollbackText(i)));
    return out;
  }
  py::dict Cell(int row, int col) const {
    if (row < 0 || row >= s().rows() || col < 0 || col >= s().cols()) {
      throw py::index_error("cell (" + std::to_string(row) + ", " + std::to_string(col) +
                            ") is outside the " + std::to_string(s().rows()) + "x" +
                            std::to_string(s().cols()) + " screen");
    }
    ScreenCell c = s().cell(row, col);
    PyObject* chars = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, c.chars.data(),
                                                static_cast<Py_ssize_t>(c.chars.size()));
    if (chars == nullptr) throw py::error_already_set();
    py::dict d;
    d["char"] = py::reinterpret_steal<py::str>(chars);
    d["width"] = c.width;
    d["bold"] = c.bold;
    d["italic"] = c.italic;
    d["underline"] = c.underline;
    d["blink"] = c.blink;
    d["reverse"] = c.reverse;
    d["strike"] = c.strike;
    d["font"] = c.font;
    d["fg"] = ColorObject(c.fg);
    d["bg"] = ColorObject(c.bg);
    return d;
  }
};

std::unique_ptr<PyScreen> ScreenOf(py::handle store_object, const std::string& run_id,
                                   std::optional<int64_t> at_seq, int cols, int rows,
                                   size_t scrollback, bool use_snapshots) {
  std::shared_ptr<EventStore> store = StoreOf(store_object);
  int64_t seq = SeqArg(at_seq);
  ScreenOptions options;
  options.cols = cols;
  options.rows = rows;
  options.scrollback_lines = scrollback;
  auto out = std::make_unique<PyScreen>();
  out->run_id = run_id;
  Status failed;
  {
    py::gil_scoped_release unlocked;
    // The default size must be valid even if the run names its own.
    Result<std::unique_ptr<TerminalScreen>> probe = TerminalScreen::Create(options);
    if (!probe.ok()) {
      failed = probe.error();
    } else if (Result<RunInfo> run = store->GetRun(run_id); !run.ok()) {
      failed = run.error();
    } else {
      ScreenProjection p(options);
      RebuildOptions ro;
      ro.use_snapshots = use_snapshots;
      Result<ReplayResult> r = ReplayEngine(store.get()).Rebuild(run_id, p, seq, ro);
      if (r.ok()) {
        out->replay = *r;
        out->screen = p.Release();
      } else {
        failed = r.error();
      }
    }
  }
  Check(failed);
  return out;
}

// ---------------------------------------------------------------- status

py::dict StatusOf(py::handle store_object, const std::string& run_id,
                  std::optional<int64_t> at_seq) {
  std::shared_ptr<EventStore> store = StoreOf(store_object);
  int64_t seq = SeqArg(at_seq);
  RequireRun(*store, run_id);
  SessionStatusProjection p;
  Result<ReplayResult> r = [&] {
    py::gil_scoped_release unlocked;
    return ReplayEngine(store.get()).Rebuild(run_id, p, seq);
  }();
  ReplayResult rr = Take(std::move(r));
  const SessionState& s = p.state();
  auto opt = [](const std::optional<int>& v) -> py::object {
    return v ? py::object(py::int_(*v)) : py::object(py::none());
  };
  py::dict d;
  d["run_id"] = run_id;
  d["seq"] = rr.seq;
  d["status"] = Text(s.status);
  d["kind"] = Text(s.kind);
  d["exit_code"] = opt(s.exit_code);
  d["signal"] = opt(s.signal);
  d["error"] = Text(s.error);
  d["cols"] = s.cols;
  d["rows"] = s.rows;
  d["created_us"] = s.created_us;
  d["started_us"] = s.started_us;
  d["ended_us"] = s.ended_us;
  d["last_seq"] = s.last_seq;
  d["last_ts_us"] = s.last_ts_us;
  d["event_count"] = s.event_count;
  d["output_bytes"] = s.output_bytes;
  d["input_events"] = s.input_events;
  return d;
}

// ---------------------------------------------------------------- recordings

// Where an export writes: a path (written directly, removed again if the
// export fails) or a Python object with write() (given the whole recording
// as bytes once it is complete).
struct Sink {
  std::optional<std::filesystem::path> path;
  py::object file;
};

// A str, bytes or os.PathLike path; TypeError otherwise.
std::filesystem::path PathArg(py::handle p, const char* file_method) {
  try {
    return p.cast<std::filesystem::path>();
  } catch (const py::cast_error&) {
    throw py::type_error(std::string("path must be a str, bytes or os.PathLike path, or a "
                                     "binary file object with ") +
                         file_method + "(), not " +
                         std::string(py::str(p.get_type().attr("__name__"))));
  }
}

Sink SinkArg(py::handle dest) {
  Sink s;
  if (py::hasattr(dest, "write") && !py::isinstance<py::str>(dest)) {
    s.file = py::reinterpret_borrow<py::object>(dest);
  } else {
    s.path = PathArg(dest, "write");
  }
  return s;
}

Status IoError(const std::string& what, const std::filesystem::path& path, int err) {
  return Status::IOError(what + " " + path.string() + ": " + std::strerror(err));
}

// Runs `write(stream)` (GIL released) into the sink and returns its result.
template <typename T, typename F>
T Export(const Sink& sink, F&& write) {
  if (sink.path) {
    Result<T> r = Status::Internal("not run");
    {
      py::gil_scoped_release unlocked;
      std::ofstream out(*sink.path, std::ios::binary | std::ios::trunc);
      if (!out) {
        r = IoError("cannot open", *sink.path, errno);
      } else {
        r = write(out);
        out.close();
        if (r.ok() && out.fail()) r = IoError("cannot write", *sink.path, errno);
        if (!r.ok()) {
          std::error_code ignored;
          std::filesystem::remove(*sink.path, ignored);
        }
      }
    }
    return Take(std::move(r));
  }
  std::ostringstream out;
  Result<T> r = [&] {
    py::gil_scoped_release unlocked;
    return write(out);
  }();
  T stats = Take(std::move(r));
  std::string bytes = std::move(out).str();
  sink.file.attr("write")(py::bytes(bytes));
  return stats;
}

py::dict AsciicastStatsDict(const AsciicastStats& s) {
  py::dict d;
  d["output_events"] = s.output_events;
  d["resize_events"] = s.resize_events;
  d["input_events"] = s.input_events;
  d["redacted_skipped"] = s.redacted_skipped;
  d["invalid_utf8_bytes"] = s.invalid_utf8_bytes;
  return d;
}

}  // namespace

void BindReplay(py::module_& m) {
  py::class_<PyScreen>(m, "Screen",
                       "A terminal screen rebuilt from a pty run's recorded output "
                       "(dispatch.screen). A snapshot: it does not change when the run goes on. "
                       "Not thread-safe beyond the GIL: use one object from one thread at a "
                       "time.")
      .def_readonly("run_id", &PyScreen::run_id, "The run it shows.")
      .def_property_readonly(
          "seq", [](const PyScreen& s) { return s.replay.seq; },
          "The screen is the state after this seq (the run's last seq at or below at_seq).")
      .def_property_readonly("lines", &PyScreen::Lines,
                             "The visible rows as text, top to bottom, trailing blanks removed "
                             "(len(lines) == rows).")
      .def_property_readonly(
          "text", [](const PyScreen& s) { return Text(s.s().Text()); },
          "The visible rows joined with '\\n'.")
      .def_property_readonly(
          "cursor",
          [](const PyScreen& s) {
            CursorState c = s.s().cursor();
            return py::make_tuple(c.row, c.col);
          },
          "The cursor as (row, col), 0-based, on the screen.")
      .def_property_readonly(
          "cursor_visible", [](const PyScreen& s) { return s.s().cursor().visible; },
          "False while the program hides the cursor.")
      .def_property_readonly(
          "cursor_shape", [](const PyScreen& s) { return ShapeName(s.s().cursor().shape); },
          "'block', 'underline' or 'bar'.")
      .def_property_readonly(
          "cols", [](const PyScreen& s) { return s.s().cols(); }, "Width in cells.")
      .def_property_readonly(
          "rows", [](const PyScreen& s) { return s.s().rows(); }, "Height in rows.")
      .def_property_readonly(
          "size", [](const PyScreen& s) { return py::make_tuple(s.s().cols(), s.s().rows()); },
          "(cols, rows).")
      .def_property_readonly(
          "title", [](const PyScreen& s) { return Text(s.s().title()); },
          "The window title the program set (OSC 0/2), or ''.")
      .def_property_readonly(
          "icon_name", [](const PyScreen& s) { return Text(s.s().icon_name()); },
          "The icon name the program set (OSC 0/1), or ''.")
      .def_property_readonly(
          "alt_screen", [](const PyScreen& s) { return s.s().alt_screen(); },
          "True while the program uses the alternate screen (full-screen programs: vim, "
          "less, top).")
      .def_property_readonly("scrollback", &PyScreen::Scrollback,
                             "Lines scrolled off the top of the main screen, oldest first "
                             "(bounded by the scrollback argument).")
      .def("cell", &PyScreen::Cell, py::arg("row"), py::arg("col"),
           "cell(row, col) -> dict\n\nOne cell: char (str, '' for an erased cell or the right "
           "half of a wide one), width, bold, italic, underline (0-3), blink, reverse, strike, "
           "font, fg and bg (None = default, int = palette index, (r, g, b)). Raises "
           "IndexError outside the screen.")
      .def(
          "repaint",
          [](const PyScreen& s, bool reset, bool include_scrollback) {
            RepaintOptions o;
            o.reset = reset;
            o.include_scrollback = include_scrollback;
            return py::bytes(s.s().Repaint(o));
          },
          py::kw_only(), py::arg("reset") = true, py::arg("include_scrollback") = false,
          "repaint(*, reset=True, include_scrollback=False) -> bytes\n\nThe escape sequence "
          "that paints this screen (cells, colours, cursor, title, modes) on a fresh terminal "
          "of the same size.")
      .def_property_readonly(
          "snapshot_seq", [](const PyScreen& s) { return s.replay.snapshot_seq; },
          "The stored snapshot the rebuild started from (0 = from the start).")
      .def_property_readonly(
          "events_applied", [](const PyScreen& s) { return s.replay.events_applied; },
          "Events read and applied after that snapshot.")
      .def("__str__", [](const PyScreen& s) { return Text(s.s().Text()); })
      .def("__repr__", [](const PyScreen& s) {
        CursorState c = s.s().cursor();
        return "<dispatch.Screen " + s.run_id + " seq=" + std::to_string(s.replay.seq) + " " +
               std::to_string(s.s().cols()) + "x" + std::to_string(s.s().rows()) + " cursor=(" +
               std::to_string(c.row) + ", " + std::to_string(c.col) + ")" +
               (s.s().alt_screen() ? " alt" : "") + ">";
      });

  m.def("screen", &ScreenOf, py::arg("store"), py::arg("run_id"), py::arg("at_seq") = py::none(),
        py::kw_only(), py::arg("cols") = 80, py::arg("rows") = 24, py::arg("scrollback") = 1000,
        py::arg("use_snapshots") = true,
        "screen(store, run_id, at_seq=None, *, cols=80, rows=24, scrollback=1000, "
        "use_snapshots=True) -> Screen\n\n"
        "The terminal screen of a pty run after `at_seq` (None = everything stored now): the "
        "run's pty:stdout fed through a terminal emulator, honouring its size (from its "
        "status events and pty:resize; cols/rows are the size used until the run says). "
        "Starts from the newest stored snapshot at or before at_seq when use_snapshots. The "
        "GIL is released while it rebuilds. Raises NotFound (the run has no events), "
        "Truncated (retention removed events it needs), InvalidArgument, Closed.");

  m.def("session_status", &StatusOf, py::arg("store"), py::arg("run_id"),
        py::arg("at_seq") = py::none(),
        "session_status(store, run_id, at_seq=None) -> dict\n\n"
        "One run's lifecycle folded from its events up to at_seq: status (the type of the "
        "last system:status event: 'created', 'started', 'closed', ... or 'unknown'), kind, "
        "exit_code, signal, error, cols, rows, created_us/started_us/ended_us, last_seq, "
        "last_ts_us, event_count, output_bytes, input_events, and seq. Raises NotFound, "
        "Truncated, InvalidArgument, Closed.");

  m.def(
      "export_asciicast",
      [](py::handle store_object, const std::string& run_id, py::handle dest, bool include_input,
         std::optional<std::string> title, int cols, int rows, const std::string& term) {
        std::shared_ptr<EventStore> store = StoreOf(store_object);
        Sink sink = SinkArg(dest);
        AsciicastOptions o;
        o.include_input = include_input;
        o.title = title.value_or("");
        o.default_cols = cols;
        o.default_rows = rows;
        o.term = term;
        AsciicastStats s = Export<AsciicastStats>(
            sink, [&](std::ostream& out) { return ExportAsciicast(*store, run_id, out, o); });
        return AsciicastStatsDict(s);
      },
      py::arg("store"), py::arg("run_id"), py::arg("path"), py::kw_only(),
      py::arg("include_input") = false, py::arg("title") = py::none(), py::arg("cols") = 80,
      py::arg("rows") = 24, py::arg("term") = "xterm-256color",
      "export_asciicast(store, run_id, path, *, include_input=False, title=None, cols=80, "
      "rows=24, term='xterm-256color') -> dict\n\n"
      "Writes a pty run as an asciicast v2 recording (plays in asciinema): a header with the "
      "size, start time and env, 'o' events with the output, 'r' events for resizes and, "
      "with include_input, 'i' events for input (redacted input never). `path` is a file "
      "path (str or os.PathLike; a partial file is removed on failure) or a binary file "
      "object (its write() gets the whole recording). cols/rows: the size if the run does "
      "not record one. Returns counts: output_events, resize_events, input_events, "
      "redacted_skipped, invalid_utf8_bytes. Raises NotFound (no events), Truncated, "
      "Error(code='io_error'), Closed. The GIL is released while it writes.");

  m.def(
      "export_jsonl",
      [](py::handle store_object, const std::string& run_id, py::handle dest) {
        std::shared_ptr<EventStore> store = StoreOf(store_object);
        Sink sink = SinkArg(dest);
        JsonlExportStats s = Export<JsonlExportStats>(
            sink, [&](std::ostream& out) { return ExportJsonl(*store, run_id, out); });
        return s.events;
      },
      py::arg("store"), py::arg("run_id"), py::arg("path"),
      "export_jsonl(store, run_id, path) -> int\n\n"
      "Writes a run as JSON Lines, byte-exact (its session record first, if any; see "
      "doc/replay.md for the format) to a path or a binary file object; returns the number "
      "of events. Raises NotFound (no events), Error(code='io_error'), Closed.");

  m.def(
      "import_jsonl",
      [](py::handle store_object, py::handle src) {
        std::shared_ptr<EventStore> store = StoreOf(store_object);
        Result<ImportStats> r = Status::Internal("not run");
        if (py::hasattr(src, "read") && !py::isinstance<py::str>(src)) {
          py::object data = src.attr("read")();
          std::string bytes;
          if (PyUnicode_Check(data.ptr())) {
            bytes = data.cast<std::string>();
          } else {
            bytes = py::bytes(data).cast<std::string>();
          }
          py::gil_scoped_release unlocked;
          std::istringstream in(std::move(bytes));
          r = ImportJsonl(*store, in);
        } else {
          std::filesystem::path path = PathArg(src, "read");
          py::gil_scoped_release unlocked;
          std::ifstream in(path, std::ios::binary);
          if (!in) {
            r = IoError("cannot open", path, errno);
          } else {
            r = ImportJsonl(*store, in);
          }
        }
        ImportStats s = Take(std::move(r));
        py::dict d;
        d["runs"] = s.runs;
        d["events"] = s.events;
        d["sessions"] = s.sessions;
        d["renumbered"] = s.renumbered;
        return d;
      },
      py::arg("store"), py::arg("path"),
      "import_jsonl(store, path) -> dict\n\n"
      "Appends the runs of a JSON Lines export (a path or a file object) to `store`, keeping "
      "seqs, timestamps, ids and payloads byte for byte. Returns runs (ids in order), events, "
      "sessions (records written) and renumbered (runs whose export started after seq 1). "
      "Raises Conflict if a run already exists in `store` (nothing of it is written), "
      "InvalidArgument for a malformed line (with its number; earlier batches may already be "
      "imported), Error(code='io_error'), ReadOnly, Closed.");
}

}  // namespace dispatch::python
