// asciicast v2 export, JSON Lines export and import (dispatch/recording.h).
#include "dispatch/recording.h"

#include <fmt/format.h>

#include <algorithm>
#include <istream>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>

#include "util/json_check.h"
#include "util/text_codec.h"

namespace dispatch {
namespace {

using json = nlohmann::json;
using internal::Base64Decode;
using internal::Base64Encode;
using internal::IncompleteUtf8Tail;
using internal::IsValidUtf8;
using internal::SanitizeUtf8;

constexpr size_t kReadBatch = 8192;

json ObjectOf(const EventView& e) {
  if (e.payload.empty() || e.payload.front() != '{') return json();
  json j = json::parse(e.payload, nullptr, false);
  return (j.is_discarded() || !j.is_object()) ? json() : j;
}

bool SizeIn(const json& j, int* cols, int* rows) {
  auto get = [&](const json& o) {
    if (!o.is_object()) return false;
    auto c = o.find("cols"), r = o.find("rows");
    if (c == o.end() || r == o.end() || !c->is_number_integer() || !r->is_number_integer()) {
      return false;
    }
    if (c->get<int64_t>() < 1 || r->get<int64_t>() < 1 || c->get<int64_t>() > 100000 ||
        r->get<int64_t>() > 100000) {
      return false;
    }
    *cols = static_cast<int>(c->get<int64_t>());
    *rows = static_cast<int>(r->get<int64_t>());
    return true;
  };
  if (get(j)) return true;
  return j.is_object() && j.contains("options") && get(j["options"]);
}

bool IsRedacted(const EventView& e) {
  if (e.encoding != Encoding::kJson) return false;
  json j = ObjectOf(e);
  return j.is_object() && j.value("redacted", false);
}

// Reads a whole run in batches.
Status ReadRun(EventStore& store, std::string_view run_id,
               const std::function<bool(const EventView&)>& visit) {
  int64_t cursor = 0;
  for (;;) {
    ReadOptions ro;
    ro.limit = kReadBatch;
    bool stop = false;
    auto r = store.Read(
        run_id, cursor,
        [&](const EventView& e) {
          cursor = e.seq;
          if (!visit(e)) {
            stop = true;
            return false;
          }
          return true;
        },
        ro);
    if (!r.ok()) return r.status();
    if (stop || r->count < static_cast<int64_t>(kReadBatch)) return Status::Ok();
  }
}

Status CheckOut(std::ostream& out) {
  return out ? Status::Ok() : Status::IOError("writing the recording failed");
}

}  // namespace

Result<AsciicastStats> ExportAsciicast(EventStore& store, std::string_view run_id,
                                       std::ostream& out, const AsciicastOptions& options) {
  if (Status s = ValidateRunId(run_id); !s.ok()) return s;
  auto info = store.GetRun(run_id);
  if (!info.ok()) return info.status();
  if (info->first_seq > 1) {
    return Status::Truncated(
        fmt::format("run '{}' starts at seq {}: retention removed its beginning", run_id,
                    info->first_seq),
        info->first_seq);
  }
  // The initial size and shell: from the lifecycle events before any output.
  int cols = options.default_cols, rows = options.default_rows;
  std::string shell;
  int64_t start_us = 0;
  {
    ReadOptions ro;
    ro.limit = 64;
    auto r = store.Read(
        run_id, 0,
        [&](const EventView& e) {
          if (start_us == 0) start_us = e.ts_us;
          if (e.channel == "pty:stdout") return false;
          if (e.channel == "system:status" || e.channel == "pty:resize") {
            json j = ObjectOf(e);
            SizeIn(j, &cols, &rows);
            if (j.is_object() && j.contains("shell") && j["shell"].is_string()) {
              shell = j["shell"].get<std::string>();
            }
          }
          return true;
        },
        ro);
    if (!r.ok()) return r.status();
  }
  json header = {{"version", 2}, {"width", cols}, {"height", rows}, {"timestamp", start_us / 1000000}};
  json env = {{"TERM", options.term}};
  if (!shell.empty()) env["SHELL"] = shell;
  header["env"] = env;
  if (!options.title.empty()) header["title"] = options.title;
  out << header.dump() << '\n';

  AsciicastStats st;
  std::string carry;  // an unfinished UTF-8 character, continued by the next chunk
  double last_t = 0;
  int cur_cols = cols, cur_rows = rows;
  bool seen_output = false;
  auto emit = [&](int64_t ts_us, const char* code, const std::string& text) {
    double t = std::max(last_t, static_cast<double>(ts_us - start_us) / 1e6);
    last_t = t;
    out << fmt::format("[{:.6f}, \"{}\", {}]\n", t, code,
                       json(text).dump(-1, ' ', false, json::error_handler_t::replace));
  };
  Status read = ReadRun(store, run_id, [&](const EventView& e) {
    if (e.channel == "pty:stdout") {
      seen_output = true;
      std::string bytes = carry;
      bytes.append(e.payload);
      size_t tail = IncompleteUtf8Tail(bytes);
      carry.assign(bytes, bytes.size() - tail, tail);
      bytes.resize(bytes.size() - tail);
      if (bytes.empty()) return true;
      std::string text;
      text.reserve(bytes.size());
      st.invalid_utf8_bytes += static_cast<int64_t>(SanitizeUtf8(bytes, &text));
      emit(e.ts_us, "o", text);
      st.output_events++;
    } else if ((e.channel == "pty:resize" && e.type == "dimensions") ||
               (e.channel == "system:status" && (e.type == "started" || e.type == "resumed"))) {
      int c = 0, r = 0;
      if (SizeIn(ObjectOf(e), &c, &r) && (c != cur_cols || r != cur_rows || !seen_output)) {
        if (c != cur_cols || r != cur_rows) {
          emit(e.ts_us, "r", fmt::format("{}x{}", c, r));
          st.resize_events++;
        }
        cur_cols = c;
        cur_rows = r;
      }
    } else if (options.include_input && e.channel == "pty:stdin") {
      if (IsRedacted(e)) {
        st.redacted_skipped++;
        return true;
      }
      std::string text;
      SanitizeUtf8(e.payload, &text);
      emit(e.ts_us, "i", text);
      st.input_events++;
    } else if (e.channel == "pty:stdin" && IsRedacted(e)) {
      st.redacted_skipped++;
    }
    return static_cast<bool>(out);
  });
  if (!read.ok()) return read;
  if (!carry.empty()) {
    std::string text;
    st.invalid_utf8_bytes += static_cast<int64_t>(SanitizeUtf8(carry, &text));
    emit(start_us + static_cast<int64_t>(last_t * 1e6), "o", text);
    st.output_events++;
  }
  out.flush();
  if (Status s = CheckOut(out); !s.ok()) return s;
  return st;
}

Result<JsonlExportStats> ExportJsonl(EventStore& store, std::string_view run_id,
                                     std::ostream& out) {
  if (Status s = ValidateRunId(run_id); !s.ok()) return s;
  auto info = store.GetRun(run_id);
  if (!info.ok()) return info.status();
  auto sess = store.catalog().GetSession(run_id);
  if (sess.ok()) {
    json meta = json::parse(sess->meta, nullptr, false);
    if (meta.is_discarded()) meta = json::object();
    json s = {{"runId", sess->run_id},
              {"kind", sess->kind},
              {"status", std::string(SessionStatusName(sess->status))},
              {"workspace", sess->workspace},
              {"meta", meta},
              {"createdUs", sess->created_us},
              {"updatedUs", sess->updated_us}};
    out << json{{"session", s}}.dump() << '\n';
  }
  JsonlExportStats st;
  Status read = ReadRun(store, run_id, [&](const EventView& e) {
    std::string line = "{\"runId\":";
    line += json(std::string(e.run_id)).dump();
    line += fmt::format(",\"seq\":{},\"ts\":{},\"channel\":", e.seq, e.ts_us);
    line += json(std::string(e.channel)).dump();
    line += ",\"type\":";
    line += json(std::string(e.type)).dump();
    line += ",\"encoding\":\"";
    line += EncodingName(e.encoding);
    line += '"';
    if (!e.id.empty()) {
      line += ",\"id\":";
      line += json(std::string(e.id)).dump(-1, ' ', false, json::error_handler_t::replace);
    }
    switch (e.encoding) {
      case Encoding::kBytes:
        line += ",\"payload\":\"" + Base64Encode(e.payload) + "\"";
        break;
      case Encoding::kText:
        if (IsValidUtf8(e.payload)) {
          line += ",\"payload\":" + json(std::string(e.payload)).dump();
        } else {
          line += ",\"payloadB64\":\"" + Base64Encode(e.payload) + "\"";
        }
        break;
      case Encoding::kJson: {
        bool one_line = e.payload.find_first_of("\r\n") == std::string_view::npos;
        if (one_line && !e.payload.empty()) {
          line += ",\"payload\":";
          line.append(e.payload);  // verbatim: stored JSON is valid
        } else {
          json v = json::parse(e.payload, nullptr, false);
          line += ",\"payload\":" + (v.is_discarded() ? std::string("null") : v.dump());
        }
        break;
      }
    }
    line += "}\n";
    out << line;
    st.events++;
    return static_cast<bool>(out);
  });
  if (!read.ok()) return read;
  out.flush();
  if (Status s = CheckOut(out); !s.ok()) return s;
  return st;
}

namespace {

struct RunImport {
  bool checked = false;
  int64_t last_source_seq = 0;
  int64_t written = 0;
  std::vector<NewEvent> batch;
  size_t batch_bytes = 0;
};

Status FlushRun(EventStore& store, const std::string& run, RunImport& ri) {
  if (ri.batch.empty()) return Status::Ok();
  AppendOptions ao;
  ao.expected_last_seq = ri.written;
  auto r = store.Append(run, ri.batch, ao);
  if (!r.ok()) return r.status();
  ri.written = r->last_seq;
  ri.batch.clear();
  ri.batch_bytes = 0;
  return Status::Ok();
}

}  // namespace

Result<ImportStats> ImportJsonl(EventStore& store, std::istream& in) {
  ImportStats st;
  std::map<std::string, RunImport> runs;
  std::string line;
  int64_t lineno = 0;
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument(fmt::format("line {}: {}", lineno, why));
  };
  auto check_new = [&](const std::string& run, RunImport& ri) -> Status {
    if (ri.checked) return Status::Ok();
    if (Status s = ValidateRunId(run); !s.ok()) return bad(s.message());
    auto last = store.LastSeq(run);
    if (!last.ok()) return last.status();
    if (*last != 0) {
      return Status::Conflict(
          fmt::format("run '{}' already has {} events in this store; not importing it", run, *last),
          *last);
    }
    ri.checked = true;
    st.runs.push_back(run);
    return Status::Ok();
  };
  Status failure;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (!internal::JsonDepthWithin(line)) {
      failure = bad("nested more than 256 deep");
      break;
    }
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      failure = bad("not a JSON object");
      break;
    }
    if (j.contains("session")) {
      const json& s = j["session"];
      if (!s.is_object() || !s.contains("runId") || !s["runId"].is_string()) {
        failure = bad("session without runId");
        break;
      }
      std::string run = s["runId"].get<std::string>();
      RunImport& ri = runs[run];
      if (Status c = check_new(run, ri); !c.ok()) {
        failure = c;
        break;
      }
      SessionRecord rec;
      rec.run_id = run;
      rec.kind = s.value("kind", std::string());
      rec.status = ParseSessionStatus(s.value("status", std::string("stopped")))
                       .value_or(SessionStatus::kStopped);
      rec.workspace = s.value("workspace", std::string());
      rec.meta = s.contains("meta") ? s["meta"].dump() : "{}";
      rec.created_us = s.value("createdUs", int64_t{0});
      if (Status p = store.catalog().PutSession(rec); !p.ok()) {
        failure = p;
        break;
      }
      st.sessions++;
      continue;
    }
    auto str = [&](const char* k) -> std::optional<std::string> {
      auto it = j.find(k);
      if (it == j.end() || !it->is_string()) return std::nullopt;
      return it->get<std::string>();
    };
    auto run = str("runId");
    auto channel = str("channel");
    auto type = str("type");
    auto enc_name = str("encoding");
    if (!run || !channel || !type || !enc_name || !j.contains("seq") ||
        !j["seq"].is_number_integer()) {
      failure = bad("an event needs runId, seq, channel, type and encoding");
      break;
    }
    auto enc = ParseEncoding(*enc_name);
    if (!enc) {
      failure = bad("unknown encoding '" + *enc_name + "'");
      break;
    }
    RunImport& ri = runs[*run];
    if (Status c = check_new(*run, ri); !c.ok()) {
      failure = c;
      break;
    }
    int64_t seq = j["seq"].get<int64_t>();
    if (seq <= ri.last_source_seq) {
      failure = bad(fmt::format("seq {} of run '{}' is not after {}", seq, *run, ri.last_source_seq));
      break;
    }
    if (seq != ri.last_source_seq + 1 &&
        std::find(st.renumbered.begin(), st.renumbered.end(), *run) == st.renumbered.end()) {
      st.renumbered.push_back(*run);
    }
    ri.last_source_seq = seq;
    NewEvent ev;
    ev.channel = *channel;
    ev.type = *type;
    ev.encoding = *enc;
    ev.id = str("id").value_or("");
    ev.ts_us = j.contains("ts") && j["ts"].is_number_integer() ? j["ts"].get<int64_t>() : 0;
    if (j.contains("payloadB64")) {
      auto b = j["payloadB64"].is_string() ? Base64Decode(j["payloadB64"].get<std::string>())
                                           : std::nullopt;
      if (!b) {
        failure = bad("payloadB64 is not base64");
        break;
      }
      ev.payload = std::move(*b);
    } else if (!j.contains("payload")) {
      failure = bad("the event has no payload");
      break;
    } else if (*enc == Encoding::kBytes) {
      auto b = j["payload"].is_string() ? Base64Decode(j["payload"].get<std::string>())
                                        : std::nullopt;
      if (!b) {
        failure = bad("a bytes payload must be a base64 string");
        break;
      }
      ev.payload = std::move(*b);
    } else if (*enc == Encoding::kText) {
      if (!j["payload"].is_string()) {
        failure = bad("a text payload must be a string");
        break;
      }
      ev.payload = j["payload"].get<std::string>();
    } else {
      // The stored JSON text, byte for byte, when the line was written by
      // ExportJsonl (payload last); else the value re-serialised.
      size_t at = line.find(",\"payload\":");
      std::string raw;
      if (at != std::string::npos) {
        size_t b = at + 11, e = line.find_last_not_of(" \t");
        if (e != std::string::npos && e > b && line[e] == '}') raw = line.substr(b, e - b);
      }
      json v = raw.empty() ? json() : json::parse(raw, nullptr, false);
      ev.payload = (!raw.empty() && !v.is_discarded() && v == j["payload"]) ? raw : j["payload"].dump();
    }
    ri.batch_bytes += ev.payload.size();
    ri.batch.push_back(std::move(ev));
    st.events++;
    if (ri.batch.size() >= 10000 || ri.batch_bytes >= (size_t{32} << 20)) {
      if (Status f = FlushRun(store, *run, ri); !f.ok()) {
        failure = f;
        break;
      }
    }
  }
  if (!failure.ok()) return failure;
  for (auto& [run, ri] : runs) {
    if (Status f = FlushRun(store, run, ri); !f.ok()) return f;
  }
  if (in.bad()) return Status::IOError("reading the recording failed");
  return st;
}

}  // namespace dispatch
