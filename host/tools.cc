// Operator subcommands of dispatch-host that work on a store file:
//   export RUN_ID --format asciicast|jsonl [--data DIR] [-o FILE] [--input]
//   import FILE|- [--data DIR]
//   sessions [--data DIR]
//   events RUN_ID [--after-seq N] [--limit N] [--data DIR]
// The store is DIR/dispatch.db; DIR is --data, else $DISPATCH_DATA, else
// ./data. Read-only commands open the store read-only, so they can run next
// to a live server.
#include "tools.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "dispatch/event_store.h"
#include "dispatch/projection.h"
#include "dispatch/recording.h"
#include "dispatch/replay.h"

namespace dispatch::host {
namespace {

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> opts;  // "--data" → value
  std::vector<std::string> flags;           // "--input"
};

// Options that take a value; everything else starting with '-' is a flag.
bool TakesValue(const std::string& o) {
  return o == "--data" || o == "--format" || o == "-o" || o == "--output" || o == "--after-seq" ||
         o == "--limit";
}

std::optional<Args> Parse(int argc, char** argv, std::string* err) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    if (s.size() > 1 && s[0] == '-' && s != "-") {
      std::string key = s, val;
      size_t eq = s.find('=');
      bool has_eq = s.rfind("--", 0) == 0 && eq != std::string::npos;
      if (has_eq) {
        key = s.substr(0, eq);
        val = s.substr(eq + 1);
      }
      if (TakesValue(key)) {
        if (!has_eq) {
          if (i + 1 >= argc) {
            *err = key + " needs a value";
            return std::nullopt;
          }
          val = argv[++i];
        }
        a.opts[key == "--output" ? "-o" : key] = val;
      } else if (key == "--input" || key == "-h" || key == "--help") {
        a.flags.push_back(key);
      } else {
        *err = "unknown option " + s;
        return std::nullopt;
      }
    } else {
      a.positional.push_back(s);
    }
  }
  return a;
}

bool HasFlag(const Args& a, const std::string& f) {
  for (const auto& x : a.flags) {
    if (x == f) return true;
  }
  return false;
}

std::string DataDir(const Args& a) {
  auto it = a.opts.find("--data");
  if (it != a.opts.end()) return it->second;
  const char* env = std::getenv("DISPATCH_DATA");
  if (env && *env) return env;
  return "./data";
}

std::string StorePath(const std::string& dir) { return dir + "/dispatch.db"; }

int Fail(const std::string& msg) {
  std::fprintf(stderr, "dispatch-host: %s\n", msg.c_str());
  return 1;
}

int Usage(const std::string& msg) {
  std::fprintf(stderr, "dispatch-host: %s (see dispatch-host --help)\n", msg.c_str());
  return 2;
}

Result<std::unique_ptr<EventStore>> OpenExisting(const Args& a) {
  std::string path = StorePath(DataDir(a));
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return Status::NotFound(
        fmt::format("no store at {} (give --data DIR or set DISPATCH_DATA)", path));
  }
  StoreOptions o;
  o.path = path;
  o.read_only = true;
  o.create_if_missing = false;
  return EventStore::Open(o);
}

bool MakeDirs(const std::string& dir) {
  std::string cur;
  for (size_t i = 0; i <= dir.size(); ++i) {
    if (i == dir.size() || dir[i] == '/') {
      if (!cur.empty() && ::mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST) return false;
    }
    if (i < dir.size()) cur.push_back(dir[i]);
  }
  return true;
}

std::string Iso(int64_t us) {
  std::time_t t = static_cast<std::time_t>(us / 1000000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03d}Z", buf, static_cast<int>((us / 1000) % 1000));
}

// A payload for humans: printable ASCII and UTF-8 as is, the rest escaped.
std::string Preview(std::string_view p, size_t max = 160) {
  std::string s;
  for (size_t i = 0; i < p.size() && s.size() < max; ++i) {
    auto c = static_cast<unsigned char>(p[i]);
    switch (c) {
      case '\n': s += "\\n"; break;
      case '\r': s += "\\r"; break;
      case '\t': s += "\\t"; break;
      case 0x1b: s += "\\e"; break;
      case '\\': s += "\\\\"; break;
      default:
        if (c < 0x20 || c == 0x7f) s += fmt::format("\\x{:02x}", c);
        else s.push_back(static_cast<char>(c));
    }
  }
  if (s.size() >= max) s += fmt::format("… ({} bytes)", p.size());
  return s;
}

int CmdExport(const Args& a) {
  if (a.positional.size() != 1) return Usage("export needs exactly one RUN_ID");
  auto fmt_it = a.opts.find("--format");
  if (fmt_it == a.opts.end()) return Usage("export needs --format asciicast|jsonl");
  const std::string& format = fmt_it->second;
  if (format != "asciicast" && format != "jsonl") {
    return Usage("unknown format '" + format + "' (asciicast or jsonl)");
  }
  auto store = OpenExisting(a);
  if (!store.ok()) return Fail(store.status().ToString());
  std::ofstream file;
  std::ostream* out = &std::cout;
  auto o = a.opts.find("-o");
  if (o != a.opts.end() && o->second != "-") {
    file.open(o->second, std::ios::binary | std::ios::trunc);
    if (!file) return Fail(fmt::format("cannot write {}: {}", o->second, std::strerror(errno)));
    out = &file;
  }
  const std::string& run = a.positional[0];
  Status st;
  if (format == "asciicast") {
    AsciicastOptions ao;
    ao.include_input = HasFlag(a, "--input");
    ao.title = run;
    auto r = ExportAsciicast(**store, run, *out, ao);
    st = r.status();
    if (r.ok() && r->invalid_utf8_bytes > 0) {
      std::fprintf(stderr,
                   "dispatch-host: note: %lld bytes of output were not UTF-8 and were written "
                   "as U+FFFD\n",
                   static_cast<long long>(r->invalid_utf8_bytes));
    }
  } else {
    st = ExportJsonl(**store, run, *out).status();
  }
  if (!st.ok()) return Fail(st.ToString());
  return 0;
}

int CmdImport(const Args& a) {
  if (a.positional.size() != 1) return Usage("import needs exactly one FILE (or - for stdin)");
  std::string dir = DataDir(a);
  if (!MakeDirs(dir)) return Fail(fmt::format("cannot create {}: {}", dir, std::strerror(errno)));
  StoreOptions o;
  o.path = StorePath(dir);
  auto store = EventStore::Open(o);
  if (!store.ok()) return Fail(store.status().ToString());
  std::ifstream file;
  std::istream* in = &std::cin;
  if (a.positional[0] != "-") {
    file.open(a.positional[0], std::ios::binary);
    if (!file) {
      return Fail(fmt::format("cannot read {}: {}", a.positional[0], std::strerror(errno)));
    }
    in = &file;
  }
  auto r = ImportJsonl(**store, *in);
  if (!r.ok()) return Fail(r.status().ToString());
  std::string runs;
  for (const auto& x : r->runs) runs += (runs.empty() ? "" : ", ") + x;
  std::printf("imported %lld events in %zu run(s): %s\n", static_cast<long long>(r->events),
              r->runs.size(), runs.c_str());
  for (const auto& x : r->renumbered) {
    std::printf("note: run %s did not start at seq 1 in the file; its events were renumbered\n",
                x.c_str());
  }
  return (*store)->Close().ok() ? 0 : 1;
}

int CmdSessions(const Args& a) {
  if (!a.positional.empty()) return Usage("sessions takes no arguments");
  auto store = OpenExisting(a);
  if (!store.ok()) return Fail(store.status().ToString());
  auto runs = (*store)->ListRuns();
  if (!runs.ok()) return Fail(runs.status().ToString());
  ReplayEngine engine(store->get());
  std::printf("%-40s %-8s %-9s %10s %10s  %s\n", "RUN_ID", "KIND", "STATUS", "EVENTS", "LAST_SEQ",
              "UPDATED");
  for (const RunInfo& r : *runs) {
    std::string kind = "-", status;
    auto sess = (*store)->catalog().GetSession(r.run_id);
    if (sess.ok()) {
      kind = sess->kind.empty() ? "-" : sess->kind;
      status = std::string(SessionStatusName(sess->status));
    }
    if (status.empty() || kind == "-") {
      SessionStatusProjection p;
      if (engine.Rebuild(r.run_id, p).ok()) {
        if (status.empty()) status = p.state().status;
        if (kind == "-" && !p.state().kind.empty()) kind = p.state().kind;
      }
      if (status.empty()) status = "unknown";
    }
    std::printf("%-40s %-8s %-9s %10lld %10lld  %s\n", r.run_id.c_str(), kind.c_str(),
                status.c_str(), static_cast<long long>(r.event_count),
                static_cast<long long>(r.last_seq), Iso(r.updated_us).c_str());
  }
  return 0;
}

int CmdEvents(const Args& a) {
  if (a.positional.size() != 1) return Usage("events needs exactly one RUN_ID");
  int64_t after = 0;
  size_t limit = SIZE_MAX;
  auto parse_num = [](const std::string& s, int64_t* v) {
    char* end = nullptr;
    errno = 0;
    long long x = std::strtoll(s.c_str(), &end, 10);
    if (errno != 0 || end == s.c_str() || *end != '\0' || x < 0) return false;
    *v = x;
    return true;
  };
  if (auto it = a.opts.find("--after-seq"); it != a.opts.end() && !parse_num(it->second, &after)) {
    return Usage("--after-seq needs a number >= 0");
  }
  if (auto it = a.opts.find("--limit"); it != a.opts.end()) {
    int64_t l = 0;
    if (!parse_num(it->second, &l)) return Usage("--limit needs a number >= 0");
    limit = static_cast<size_t>(l);
  }
  auto store = OpenExisting(a);
  if (!store.ok()) return Fail(store.status().ToString());
  ReadOptions ro;
  ro.limit = limit;
  auto r = (*store)->Read(
      a.positional[0], after,
      [](const EventView& e) {
        std::string chan = fmt::format("{}/{}", e.channel, e.type);
        std::printf("%8lld  %s  %-24s %-5s %s\n", static_cast<long long>(e.seq), Iso(e.ts_us).c_str(),
                    chan.c_str(), std::string(EncodingName(e.encoding)).c_str(),
                    Preview(e.payload).c_str());
        return true;
      },
      ro);
  if (!r.ok()) return Fail(r.status().ToString());
  if (r->count == 0) std::fprintf(stderr, "dispatch-host: no events after seq %lld\n", static_cast<long long>(after));
  return 0;
}

}  // namespace

bool IsToolCommand(std::string_view name) {
  return name == "export" || name == "import" || name == "sessions" || name == "events";
}

int RunToolCommand(int argc, char** argv) {
  std::string cmd = argv[0];
  std::string err;
  auto a = Parse(argc, argv, &err);
  if (!a) return Usage(err);
  if (HasFlag(*a, "-h") || HasFlag(*a, "--help")) {
    std::printf(
        "dispatch-host export RUN_ID --format asciicast|jsonl [--input] [--data DIR] [-o FILE]\n"
        "dispatch-host import FILE|- [--data DIR]\n"
        "dispatch-host sessions [--data DIR]\n"
        "dispatch-host events RUN_ID [--after-seq N] [--limit N] [--data DIR]\n"
        "The store is DIR/dispatch.db; DIR defaults to $DISPATCH_DATA, else ./data.\n");
    return 0;
  }
  if (cmd == "export") return CmdExport(*a);
  if (cmd == "import") return CmdImport(*a);
  if (cmd == "sessions") return CmdSessions(*a);
  if (cmd == "events") return CmdEvents(*a);
  return Usage("unknown command " + cmd);
}

}  // namespace dispatch::host
