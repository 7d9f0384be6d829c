// The built-in projections (dispatch/projection.h): session status, the
// session list, the terminal screen. States are serialised with cereal
// (portable binary) behind a magic + version + checksum envelope.
#include "dispatch/projection.h"

#include <cereal/archives/portable_binary.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/string.hpp>
#include <fmt/format.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>

#include "replay/envelope.h"

namespace dispatch {
namespace {

using json = nlohmann::json;

constexpr std::string_view kStatusChannel = "system:status";

// The payload as a JSON object, or a null json if it is not one.
json ObjectPayload(const EventView& e) {
  if (e.payload.empty() || e.payload.front() != '{') return json();
  json j = json::parse(e.payload, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return json();
  return j;
}

// cols/rows at top level or under "options"; false if absent or invalid.
bool SizeOf(const json& j, int* cols, int* rows) {
  auto get = [](const json& o, int* c, int* r) {
    if (!o.is_object()) return false;
    auto ic = o.find("cols"), ir = o.find("rows");
    if (ic == o.end() || ir == o.end() || !ic->is_number_integer() || !ir->is_number_integer()) {
      return false;
    }
    int64_t vc = ic->get<int64_t>(), vr = ir->get<int64_t>();
    if (!ScreenSizeInRange(vc, vr)) return false;
    *c = static_cast<int>(vc);
    *r = static_cast<int>(vr);
    return true;
  };
  if (get(j, cols, rows)) return true;
  if (j.is_object()) {
    auto o = j.find("options");
    if (o != j.end() && get(*o, cols, rows)) return true;
  }
  return false;
}

std::optional<int> OptInt(const json& j, const char* key) {
  if (!j.is_object()) return std::nullopt;
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer()) return std::nullopt;
  return static_cast<int>(it->get<int64_t>());
}

std::string OptString(const json& j, const char* key) {
  if (!j.is_object()) return {};
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return {};
  return it->get<std::string>();
}

// `a == lit`, with the literal's length known at compile time so the
// comparison is a few inlined loads, not a memcmp call (this runs for every
// event of a rebuild).
template <size_t N>
inline bool Is(std::string_view a, const char (&lit)[N]) {
  return a.size() == N - 1 && std::memcmp(a.data(), lit, N - 1) == 0;
}

}  // namespace

// ---- SessionStatusProjection ----

void SessionStatusProjection::Apply(const EventView& e) {
  SessionState& s = state_;
  s.last_seq = e.seq;
  s.last_ts_us = e.ts_us;
  s.event_count++;
  // Only system:status and pty:resize payloads are parsed; output and input
  // events are counted from the view alone.
  if (Is(e.channel, "pty:stdout")) {
    s.output_bytes += static_cast<int64_t>(e.payload.size());
  } else if (Is(e.channel, "pty:stdin")) {
    s.input_events++;
  } else if (Is(e.channel, "pty:resize") && Is(e.type, "dimensions")) {
    int c = 0, r = 0;
    if (SizeOf(ObjectPayload(e), &c, &r)) {
      s.cols = c;
      s.rows = r;
    }
  } else if (Is(e.channel, "system:status")) {
    json p = ObjectPayload(e);
    s.status = std::string(e.type);
    int c = 0, r = 0;
    if (e.type == "created") {
      s.created_us = e.ts_us;
      std::string k = OptString(p, "kind");
      if (!k.empty()) s.kind = k;
      if (SizeOf(p, &c, &r)) s.cols = c, s.rows = r;
    } else if (e.type == "started" || e.type == "resumed") {
      s.started_us = e.ts_us;
      s.ended_us = 0;
      s.exit_code.reset();
      s.signal.reset();
      s.error.clear();
      if (SizeOf(p, &c, &r)) s.cols = c, s.rows = r;
    } else if (e.type == "closed" || e.type == "orphaned") {
      s.ended_us = e.ts_us;
      s.exit_code = OptInt(p, "exitCode");
      s.signal = OptInt(p, "signal");
      s.error = OptString(p, "error");
    } else if (e.type == "error") {
      s.ended_us = e.ts_us;
      s.error = OptString(p, "message");
    }
  }
}

namespace {
struct StatusData {
  SessionState s;
  template <class A>
  void serialize(A& ar, const std::uint32_t) {
    ar(s.status, s.exit_code, s.signal, s.error, s.kind, s.cols, s.rows, s.created_us,
       s.started_us, s.ended_us, s.last_seq, s.last_ts_us, s.event_count, s.output_bytes,
       s.input_events);
  }
};
}  // namespace

std::string SessionStatusProjection::Save() const {
  StatusData d{state_};
  return internal::SealState("status", kVersion, d);
}

Status SessionStatusProjection::Load(std::string_view data) {
  StatusData d;
  Status st = internal::OpenState("status", kVersion, data, &d);
  if (!st.ok()) {
    Reset();
    return st;
  }
  state_ = std::move(d.s);
  return Status::Ok();
}

// ---- SessionListProjection ----

void SessionListProjection::Apply(const EventView& e) {
  auto it = entities_.find(e.run_id);
  json ent;
  if (it == entities_.end()) {
    ent = json{{"runId", std::string(e.run_id)}, {"status", "unknown"}, {"eventCount", 0}};
  } else {
    ent = json::parse(it->second, nullptr, false);
    if (!ent.is_object()) ent = json::object();
  }
  if (e.channel == kStatusChannel) {
    json p = ObjectPayload(e);
    if (p.is_object()) {
      for (auto& [k, v] : p.items()) ent[k] = v;  // shallow merge
    }
    ent["status"] = std::string(e.type);
  } else if (e.channel == "pty:resize" && e.type == "dimensions") {
    int c = 0, r = 0;
    if (SizeOf(ObjectPayload(e), &c, &r)) {
      ent["cols"] = c;
      ent["rows"] = r;
    }
  }
  ent["lastSeq"] = e.seq;
  ent["eventCount"] = ent.value("eventCount", int64_t{0}) + 1;
  ent["updatedAt"] = e.ts_us / 1000;
  std::string text = ent.dump();
  if (it == entities_.end()) {
    entities_.emplace(std::string(e.run_id), std::move(text));
  } else {
    it->second = std::move(text);
  }
}

namespace {
struct ListData {
  std::map<std::string, std::string, std::less<>> m;
  template <class A>
  void serialize(A& ar, const std::uint32_t) {
    ar(m);
  }
};
}  // namespace

std::string SessionListProjection::Save() const {
  ListData d{entities_};
  return internal::SealState("sessions", kVersion, d);
}

Status SessionListProjection::Load(std::string_view data) {
  ListData d;
  Status st = internal::OpenState("sessions", kVersion, data, &d);
  if (!st.ok()) {
    Reset();
    return st;
  }
  entities_ = std::move(d.m);
  return Status::Ok();
}

std::vector<std::string> SessionListProjection::run_ids() const {
  std::vector<std::string> v;
  v.reserve(entities_.size());
  for (const auto& [k, _] : entities_) v.push_back(k);
  return v;
}

std::optional<std::string> SessionListProjection::Get(std::string_view run_id) const {
  auto it = entities_.find(run_id);
  if (it == entities_.end()) return std::nullopt;
  return it->second;
}

// ---- ScreenProjection ----

ScreenProjection::ScreenProjection(const ScreenOptions& options) : options_(options) {
  if (options_.cols < kMinScreenCols || options_.cols > kMaxScreenCols) options_.cols = 80;
  if (options_.rows < 1 || options_.rows > kMaxScreenRows) options_.rows = 24;
  Reset();
}

ScreenProjection::~ScreenProjection() = default;

void ScreenProjection::Reset() { screen_ = std::move(TerminalScreen::Create(options_)).value(); }

void ScreenProjection::Apply(const EventView& e) {
  if (e.channel == "pty:stdout") {
    screen_->Write(e.payload);
  } else if (e.channel == "pty:resize" && e.type == "dimensions") {
    int c = 0, r = 0;
    if (SizeOf(ObjectPayload(e), &c, &r)) (void)screen_->Resize(c, r);
  } else if (e.channel == kStatusChannel &&
             (e.type == "created" || e.type == "started" || e.type == "resumed")) {
    int c = 0, r = 0;
    if (SizeOf(ObjectPayload(e), &c, &r)) (void)screen_->Resize(c, r);
  }
}

std::string ScreenProjection::Save() const { return screen_->Save(); }

Status ScreenProjection::Load(std::string_view data) {
  auto r = TerminalScreen::Load(data, options_);
  if (!r.ok()) {
    Reset();
    return r.status();
  }
  screen_ = std::move(r).value();
  return Status::Ok();
}

std::unique_ptr<TerminalScreen> ScreenProjection::Release() {
  auto out = std::move(screen_);
  Reset();
  return out;
}

}  // namespace dispatch
