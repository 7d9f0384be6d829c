// The HTTP API of dispatch-host (DESIGN §5): routing, auth, sessions,
// history, workspaces, settings, health and Prometheus metrics. Every error
// is JSON {error, code} with a matching status.
#include <algorithm>
#include <unordered_map>

#include "dispatch/version.h"
#include "log.h"
#include "paths.h"
#include "server.h"
#include "util/json_check.h"

namespace dispatch::host {
namespace {

using nlohmann::json;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

HttpResponse Json(int status, const json& j) {
  HttpResponse r;
  r.status = status;
  r.body = Dump(j);
  return r;
}

HttpResponse Error(int status, std::string_view code, std::string_view message) {
  return Json(status, json{{"error", std::string(message)}, {"code", std::string(code)}});
}

int HttpStatusFor(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return 200;
    case StatusCode::kNotFound: return 404;
    case StatusCode::kInvalidArgument: return 400;
    case StatusCode::kConflict: return 409;
    case StatusCode::kTruncated: return 410;
    case StatusCode::kBusy: return 503;
    case StatusCode::kClosed: return 503;
    case StatusCode::kTimeout: return 504;
    case StatusCode::kReadOnly: return 403;
    default: return 500;
  }
}

HttpResponse FromStatus(const Status& s) {
  return Error(HttpStatusFor(s.code()), StatusCodeName(s.code()), s.message());
}

std::vector<std::string> SplitPath(std::string_view path) {
  std::vector<std::string> parts;
  while (!path.empty()) {
    while (!path.empty() && path.front() == '/') path.remove_prefix(1);
    if (path.empty()) break;
    size_t slash = path.find('/');
    parts.emplace_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash);
  }
  return parts;
}

Result<json> ParseBody(const std::string& body) {
  if (body.empty()) return json::object();
  // (Copying or serialising a document recurses once per level: tens of
  // thousands of levels would overflow the loop thread's stack.)
  if (!internal::JsonDepthWithin(body)) {
    return Status::InvalidArgument(
        fmt::format("the body is nested more than {} deep", internal::kMaxJsonDepth));
  }
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) return Status::InvalidArgument("the body is not valid JSON");
  return j;
}

json SessionJson(const SessionRecord& s) {
  json meta = json::parse(s.meta, nullptr, false);
  if (meta.is_discarded()) meta = json::object();
  return json{{"runId", s.run_id},
              {"kind", s.kind},
              {"status", std::string(SessionStatusName(s.status))},
              {"workspace", s.workspace},
              {"meta", meta},
              {"createdAt", s.created_us / 1000},
              {"updatedAt", s.updated_us / 1000}};
}

json WorkspaceJson(const WorkspaceRecord& w) {
  json meta = json::parse(w.metadata, nullptr, false);
  if (meta.is_discarded()) meta = json::object();
  return json{{"id", w.id},
              {"name", w.name},
              {"path", w.path},
              {"status", std::string(WorkspaceStatusName(w.status))},
              {"metadata", meta},
              {"createdAt", w.created_us / 1000},
              {"lastAccessed", w.last_accessed_us / 1000}};
}

bool ParseInt64(const std::string& s, int64_t* out) {
  if (s.empty() || s.size() > 18) return false;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *out = v;
  return true;
}

bool ValidId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == ':';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

HttpResponse Server::Route(HttpRequest& req, const std::string& bearer) {
  const std::string& p = req.path;
  bool get = req.method == "GET" || req.method == "HEAD";
  // Open endpoints.
  if (p == "/health" || p == "/live" || p == "/ready") {
    if (!get) return Error(405, "method_not_allowed", "use GET");
    if (p == "/health") return Json(200, json{{"status", "ok"}});
    if (p == "/live") return Json(200, json{{"status", "alive"}});
    if (phase_ != Phase::kRunning) return Json(503, json{{"status", "shutting_down"}});
    return Json(200, json{{"status", "ready"}});
  }
  // Everything else needs the key.
  if (auth_.enabled()) {
    int64_t now = NowMs();
    if (auth_.Blocked(req.address, now)) {
      HttpResponse r = Error(429, "rate_limited", "too many failed key checks; try later");
      r.headers.emplace_back("retry-after", std::to_string(auth_.RetryAfterSeconds(req.address, now)));
      return r;
    }
    std::string candidate = bearer;
    if (candidate.empty()) {
      auto k = req.query.find("authKey");
      if (k != req.query.end()) candidate = k->second;
    }
    if (candidate.empty()) {
      HttpResponse r = Error(401, "unauthorized", "a key is required (Authorization: Bearer KEY)");
      r.headers.emplace_back("www-authenticate", "Bearer");
      return r;
    }
    if (!auth_.Check(req.address, candidate, now)) {
      LogWarn("http {} {} from {}: wrong key", req.method, req.path, req.address);
      HttpResponse r = Error(401, "unauthorized", "wrong key");
      r.headers.emplace_back("www-authenticate", "Bearer");
      return r;
    }
  }
  if (phase_ != Phase::kRunning) return Error(503, "shutting_down", "the server is shutting down");
  std::vector<std::string> parts = SplitPath(p);
  if (p == "/health/status") {
    if (!get) return Error(405, "method_not_allowed", "use GET");
    return HealthStatus();
  }
  if (p == "/metrics") {
    if (!get) return Error(405, "method_not_allowed", "use GET");
    return MetricsText();
  }
  if (parts.size() >= 2 && parts[0] == "api") {
    if (parts[1] == "sessions") return ApiSessions(req, parts);
    if (parts[1] == "workspaces") return ApiWorkspaces(req, parts);
    if (parts[1] == "settings") return ApiSettings(req, parts);
  }
  return Error(404, "not_found", "no route for " + req.method + " " + p);
}

HttpResponse Server::ApiSessions(HttpRequest& req, const std::vector<std::string>& parts) {
  const std::string& m = req.method;
  if (parts.size() == 2) {
    if (m == "GET") {
      Result<std::vector<SessionRecord>> list = store_->catalog().ListSessions();
      if (!list.ok()) return FromStatus(list.status());
      std::unordered_map<std::string, RunInfo> runs;
      if (Result<std::vector<RunInfo>> r = store_->ListRuns(); r.ok()) {
        for (RunInfo& ri : *r) runs.emplace(ri.run_id, std::move(ri));
      }
      json out = json::array();
      for (const SessionRecord& s : *list) {
        json j = SessionJson(s);
        auto it = runs.find(s.run_id);
        j["lastSeq"] = it == runs.end() ? 0 : it->second.last_seq;
        j["live"] = manager_ && manager_->GetSession(s.run_id).ok();
        out.push_back(std::move(j));
      }
      return Json(200, json{{"sessions", out}});
    }
    if (m == "POST") {
      Result<json> body = ParseBody(req.body);
      if (!body.ok()) return FromStatus(body.status());
      if (!body->is_object()) return Error(400, "invalid_argument", "the body must be an object");
      SessionConfig cfg;
      auto kind = body->find("kind");
      if (kind == body->end() || !kind->is_string())
        return Error(400, "invalid_argument", "kind (string) is required");
      cfg.kind = *kind;
      if (auto w = body->find("workspace"); w != body->end() && !w->is_null()) {
        if (!w->is_string()) return Error(400, "invalid_argument", "workspace must be a string");
        Result<std::string> path = ConfineWorkspacePath(config_.workspaces_root, w->get<std::string>());
        if (!path.ok()) {
          if (path.status().code() == StatusCode::kNotFound) return FromStatus(path.status());
          return Error(403, "forbidden", path.status().message());
        }
        cfg.workspace = *path;
      } else {
        cfg.workspace = config_.workspaces_root;
      }
      if (auto o = body->find("options"); o != body->end() && !o->is_null()) {
        if (!o->is_object()) return Error(400, "invalid_argument", "options must be an object");
        cfg.options_json = Dump(*o);
      }
      if (auto r = body->find("runId"); r != body->end() && !r->is_null()) {
        if (!r->is_string()) return Error(400, "invalid_argument", "runId must be a string");
        cfg.run_id = *r;
        if (Status s = ValidateRunId(cfg.run_id); !s.ok()) return FromStatus(s);
      }
      if (!manager_) return Error(503, "unavailable", "no session runtime");
      Result<std::string> run = manager_->CreateSession(cfg);
      if (!run.ok()) {
        LogWarn("create session ({}) failed: {}", cfg.kind, run.status().ToString());
        return FromStatus(run.status());
      }
      LogInfo("session {} created ({}, {})", *run, cfg.kind, cfg.workspace);
      return Json(201, json{{"runId", *run}});
    }
    return Error(405, "method_not_allowed", "use GET or POST");
  }
  const std::string& run = parts[2];
  if (Status s = ValidateRunId(run); !s.ok()) return FromStatus(s);
  if (parts.size() == 3) {
    if (m == "GET") {
      Result<SessionRecord> rec = store_->catalog().GetSession(run);
      if (!rec.ok()) return FromStatus(rec.status());
      json j = SessionJson(*rec);
      Result<int64_t> last = store_->LastSeq(run);
      j["lastSeq"] = last.ok() ? *last : 0;
      j["live"] = manager_ && manager_->GetSession(run).ok();
      return Json(200, j);
    }
    if (m == "DELETE") {
      if (!manager_) return Error(503, "unavailable", "no session runtime");
      bool live = manager_->GetSession(run).ok();
      bool recorded = store_->catalog().GetSession(run).ok();
      if (!live && !recorded) return Error(404, "not_found", "no such session");
      // Closes it if live and removes its record; its events stay.
      Status s = manager_->Destroy(run);
      if (!s.ok()) return FromStatus(s);
      LogInfo("session {} deleted", run);
      return Json(200, json{{"runId", run}, {"deleted", true}});
    }
    return Error(405, "method_not_allowed", "use GET or DELETE");
  }
  if (parts.size() == 4 && parts[3] == "history") {
    if (m != "GET") return Error(405, "method_not_allowed", "use GET");
    int64_t after = 0, limit = 1000;
    if (auto a = req.query.find("afterSeq"); a != req.query.end() && !ParseInt64(a->second, &after))
      return Error(400, "invalid_argument", "afterSeq must be an integer >= 0");
    if (auto l = req.query.find("limit"); l != req.query.end() &&
                                          (!ParseInt64(l->second, &limit) || limit < 1))
      return Error(400, "invalid_argument", "limit must be an integer >= 1");
    limit = std::min<int64_t>(limit, 10000);
    bool known = store_->catalog().GetSession(run).ok() || store_->GetRun(run).ok();
    if (!known) return Error(404, "not_found", "no such session");
    json events = json::array();
    size_t bytes = 0;
    ReadOptions opts;
    opts.limit = static_cast<size_t>(limit);
    int64_t last_seen = after;
    bool stopped_early = false;
    Result<ReadSummary> r = store_->Read(
        run, after,
        [&](const EventView& e) {
          json ej = EventToJson(e);
          bytes += e.payload.size() + 128;
          events.push_back(std::move(ej));
          last_seen = e.seq;
          if (bytes >= (size_t{8} << 20)) {
            stopped_early = true;
            return false;
          }
          return true;
        },
        opts);
    if (!r.ok()) {
      if (r.status().code() == StatusCode::kTruncated) {
        json j = {{"error", r.status().message()},
                  {"code", "truncated"},
                  {"earliestSeq", r.status().earliest_available()}};
        return Json(410, j);
      }
      return FromStatus(r.status());
    }
    Result<int64_t> last = store_->LastSeq(run);
    int64_t last_seq = last.ok() ? *last : last_seen;
    return Json(200, json{{"runId", run},
                          {"events", events},
                          {"nextAfterSeq", last_seen},
                          {"lastSeq", last_seq},
                          {"hasMore", stopped_early || last_seen < last_seq}});
  }
  return Error(404, "not_found", "no route for " + m + " " + req.path);
}

HttpResponse Server::ApiWorkspaces(HttpRequest& req, const std::vector<std::string>& parts) {
  const std::string& m = req.method;
  Catalog& cat = store_->catalog();
  auto apply = [&](const json& body, WorkspaceRecord& w, bool creating) -> std::optional<HttpResponse> {
    if (auto n = body.find("name"); n != body.end()) {
      if (!n->is_string()) return Error(400, "invalid_argument", "name must be a string");
      w.name = *n;
    }
    if (auto p = body.find("path"); p != body.end()) {
      if (!p->is_string()) return Error(400, "invalid_argument", "path must be a string");
      Result<std::string> path = ConfineWorkspacePath(config_.workspaces_root, p->get<std::string>());
      if (!path.ok()) {
        if (path.status().code() == StatusCode::kNotFound) return FromStatus(path.status());
        return Error(403, "forbidden", path.status().message());
      }
      w.path = *path;
    } else if (creating) {
      return Error(400, "invalid_argument", "path (string) is required");
    }
    if (auto s = body.find("status"); s != body.end()) {
      if (!s->is_string()) return Error(400, "invalid_argument", "status must be a string");
      auto st = ParseWorkspaceStatus(s->get<std::string>());
      if (!st) return Error(400, "invalid_argument", "status must be active, archived or error");
      w.status = *st;
    }
    if (auto md = body.find("metadata"); md != body.end()) {
      if (!md->is_object()) return Error(400, "invalid_argument", "metadata must be an object");
      w.metadata = Dump(*md);
    }
    return std::nullopt;
  };
  if (parts.size() == 2) {
    if (m == "GET") {
      Result<std::vector<WorkspaceRecord>> list = cat.ListWorkspaces();
      if (!list.ok()) return FromStatus(list.status());
      json out = json::array();
      for (const auto& w : *list) out.push_back(WorkspaceJson(w));
      return Json(200, json{{"workspaces", out}});
    }
    if (m == "POST") {
      Result<json> body = ParseBody(req.body);
      if (!body.ok()) return FromStatus(body.status());
      if (!body->is_object()) return Error(400, "invalid_argument", "the body must be an object");
      WorkspaceRecord w;
      if (auto id = body->find("id"); id != body->end() && !id->is_null()) {
        if (!id->is_string() || !ValidId(id->get<std::string>()))
          return Error(400, "invalid_argument", "id must be 1-128 characters of [A-Za-z0-9._:-]");
        w.id = *id;
      } else {
        w.id = "ws-" + GenerateKey().substr(0, 12);
        for (char& ch : w.id)
          if (ch == '_') ch = 'x';
      }
      if (auto err = apply(*body, w, true)) return *err;
      if (w.name.empty()) w.name = w.path.substr(w.path.rfind('/') + 1);
      int64_t now = NowMicros();
      w.created_us = now;
      w.last_accessed_us = now;
      Status s = cat.CreateWorkspace(w);
      if (!s.ok()) return FromStatus(s);
      Result<WorkspaceRecord> stored = cat.GetWorkspace(w.id);
      return Json(201, WorkspaceJson(stored.ok() ? *stored : w));
    }
    return Error(405, "method_not_allowed", "use GET or POST");
  }
  if (parts.size() != 3) return Error(404, "not_found", "no route for " + m + " " + req.path);
  const std::string& id = parts[2];
  if (!ValidId(id)) return Error(400, "invalid_argument", "bad workspace id");
  if (m == "GET") {
    Result<WorkspaceRecord> w = cat.GetWorkspace(id);
    if (!w.ok()) return FromStatus(w.status());
    return Json(200, WorkspaceJson(*w));
  }
  if (m == "PUT" || m == "PATCH") {
    Result<json> body = ParseBody(req.body);
    if (!body.ok()) return FromStatus(body.status());
    if (!body->is_object()) return Error(400, "invalid_argument", "the body must be an object");
    Result<WorkspaceRecord> w = cat.GetWorkspace(id);
    if (!w.ok()) return FromStatus(w.status());
    WorkspaceRecord rec = *w;
    if (auto err = apply(*body, rec, false)) return *err;
    Status s = cat.UpdateWorkspace(rec);
    if (!s.ok()) return FromStatus(s);
    if (auto la = body->find("lastAccessed"); la != body->end() && !la->is_null() &&
                                              !(la->is_boolean() && !la->get<bool>())) {
      Status t = cat.TouchWorkspace(id);
      if (!t.ok()) return FromStatus(t);
    }
    Result<WorkspaceRecord> stored = cat.GetWorkspace(id);
    if (!stored.ok()) return FromStatus(stored.status());
    return Json(200, WorkspaceJson(*stored));
  }
  if (m == "DELETE") {
    Result<WorkspaceRecord> w = cat.GetWorkspace(id);
    if (!w.ok()) return FromStatus(w.status());
    Status s = cat.DeleteWorkspace(id);
    if (!s.ok()) return FromStatus(s);
    return Json(200, json{{"id", id}, {"deleted", true}});
  }
  return Error(405, "method_not_allowed", "use GET, PUT or DELETE");
}

HttpResponse Server::ApiSettings(HttpRequest& req, const std::vector<std::string>& parts) {
  const std::string& m = req.method;
  Catalog& cat = store_->catalog();
  if (parts.size() == 2) {
    if (m != "GET") return Error(405, "method_not_allowed", "use GET");
    auto list = cat.ListSettings();
    if (!list.ok()) return FromStatus(list.status());
    json out = json::object();
    for (const auto& [k, v] : *list) {
      json j = json::parse(v, nullptr, false);
      out[k] = j.is_discarded() ? json(nullptr) : j;
    }
    return Json(200, json{{"settings", out}});
  }
  if (parts.size() != 3) return Error(404, "not_found", "no route for " + m + " " + req.path);
  const std::string& category = parts[2];
  if (!ValidId(category) || category.size() > 64)
    return Error(400, "invalid_argument", "category must be 1-64 characters of [A-Za-z0-9._:-]");
  if (m == "GET") {
    Result<std::string> s = cat.GetSettings(category);
    if (!s.ok()) return FromStatus(s.status());
    HttpResponse r;
    r.body = *s;
    return r;
  }
  if (m == "PUT") {
    Result<json> body = ParseBody(req.body);
    if (!body.ok()) return FromStatus(body.status());
    if (!body->is_object()) return Error(400, "invalid_argument", "settings must be a JSON object");
    std::string text = Dump(*body);
    Status s = cat.PutSettings(category, text);
    if (!s.ok()) return FromStatus(s);
    HttpResponse r;
    r.body = text;
    return r;
  }
  return Error(405, "method_not_allowed", "use GET or PUT");
}

HttpResponse Server::HealthStatus() {
  json store = json::object();
  bool store_ok = true;
  if (Result<int64_t> pos = store_->LastPosition(); pos.ok()) {
    store["lastPosition"] = *pos;
  } else {
    store_ok = false;
    store["error"] = pos.status().ToString();
  }
  StoreStats st = store_->Stats();
  store["ok"] = store_ok;
  store["path"] = config_.db_path();
  store["eventsAppended"] = st.events_appended;
  store["bytesAppended"] = st.bytes_appended;
  store["groupCommits"] = st.group_commits;
  store["journalAppends"] = st.journal_appends;
  store["subscribers"] = st.subscribers;
  ManagerStats ms = manager_ ? manager_->Stats() : ManagerStats{};
  json sessions = {{"live", ms.live_sessions}, {"created", ms.sessions_created}};
  json by_kind = json::object();
  std::vector<SessionInfo> live;
  if (manager_) live = manager_->ListSessions();
  for (const SessionInfo& s : live) {
    by_kind[s.kind] = by_kind.value(s.kind, 0) + 1;
  }
  sessions["liveByKind"] = by_kind;
  return Json(store_ok ? 200 : 503,
              json{{"status", store_ok ? "ok" : "degraded"},
                   {"version", DISPATCH_VERSION_STRING},
                   {"uptimeSeconds", (NowMs() - started_ms_) / 1000},
                   {"store", store},
                   {"sessions", sessions},
                   {"clients", clients_.size()}});
}

HttpResponse Server::MetricsText() {
  std::string o;
  auto line = [&](const std::string& s) {
    o += s;
    o += '\n';
  };
  auto metric = [&](const char* name, const char* type, const char* help) {
    line(std::string("# HELP ") + name + " " + help);
    line(std::string("# TYPE ") + name + " " + type);
  };
  // A metric with one unlabelled sample.
  auto single = [&](const char* name, const char* type, const char* help, auto value) {
    metric(name, type, help);
    line(fmt::format("{} {}", name, value));
  };
  // Sessions by kind and state, from the catalog.
  metric("dispatch_sessions", "gauge", "Sessions by kind and state.");
  std::map<std::pair<std::string, std::string>, int64_t> counts;
  if (auto list = store_->catalog().ListSessions(); list.ok()) {
    for (const SessionRecord& s : *list)
      counts[{s.kind, std::string(SessionStatusName(s.status))}]++;
  }
  for (const auto& [k, n] : counts)
    line(fmt::format("dispatch_sessions{{kind=\"{}\",state=\"{}\"}} {}", k.first, k.second, n));
  ManagerStats ms = manager_ ? manager_->Stats() : ManagerStats{};
  single("dispatch_live_sessions", "gauge", "Sessions running in this host.", ms.live_sessions);
  single("dispatch_session_pending_bytes", "gauge",
         "Session output not yet committed and delivered.", ms.pending_bytes);
  single("dispatch_session_pauses_total", "counter", "Times a session was paused by backpressure.",
         ms.pauses);
  StoreStats st = store_->Stats();
  single("dispatch_events_appended_total", "counter", "Events written to the store.",
         st.events_appended);
  single("dispatch_event_bytes_appended_total", "counter", "Payload bytes written to the store.",
         st.bytes_appended);
  single("dispatch_store_group_commits_total", "counter",
         "Durable store commits (transactions and append-journal writes).", st.group_commits);
  single("dispatch_store_journal_appends_total", "counter",
         "Appends made durable in the append journal.", st.journal_appends);
  single("dispatch_store_journal_copies_total", "counter",
         "Transactions that copied journaled appends into SQLite.", st.journal_drains);
  single("dispatch_store_subscribers", "gauge", "Live store subscriptions.", st.subscribers);
  single("dispatch_store_subscriber_lags_total", "counter", "Times a store subscriber fell behind.",
         st.subscriber_lags);
  metric("dispatch_store_commit_latency_seconds", "histogram", "Group commit latency.");
  {
    int64_t cum = 0;
    size_t n = std::min(st.commit_latency_bounds_us.size(), st.commit_latency_counts.size());
    for (size_t i = 0; i < n; ++i) {
      cum += st.commit_latency_counts[i];
      int64_t b = st.commit_latency_bounds_us[i];
      std::string le =
          (b == INT64_MAX || (i + 1 == n && b <= 0)) ? "+Inf" : fmt::format("{:g}", b / 1e6);
      line(fmt::format("dispatch_store_commit_latency_seconds_bucket{{le=\"{}\"}} {}", le, cum));
    }
    if (n == 0 || st.commit_latency_bounds_us[n - 1] != INT64_MAX)
      line(fmt::format("dispatch_store_commit_latency_seconds_bucket{{le=\"+Inf\"}} {}",
                       std::max(cum, st.group_commits)));
    line(fmt::format("dispatch_store_commit_latency_seconds_sum {:g}",
                     st.commit_latency_us_total / 1e6));
    line(fmt::format("dispatch_store_commit_latency_seconds_count {}", st.group_commits));
  }
  single("dispatch_ws_clients", "gauge", "Connected WebSocket clients.", clients_.size());
  size_t atts = 0, queued = 0;
  for (auto& [wsi, c] : clients_) {
    atts += c->attachments.size();
    queued += c->queued_bytes;
  }
  single("dispatch_ws_attachments", "gauge", "Attached (client, run) pairs.", atts);
  single("dispatch_ws_queued_bytes", "gauge", "Bytes queued to WebSocket clients.", queued);
  single("dispatch_ws_connections_total", "counter", "WebSocket connections accepted.",
         metrics_.ws_connections_total);
  single("dispatch_ws_messages_received_total", "counter", "WebSocket messages received.",
         metrics_.ws_messages_in);
  single("dispatch_ws_frames_sent_total", "counter", "WebSocket frames sent.",
         metrics_.ws_frames_out);
  single("dispatch_ws_events_sent_total", "counter", "Events sent to WebSocket clients.",
         metrics_.ws_events_out);
  single("dispatch_ws_bytes_sent_total", "counter", "WebSocket payload bytes sent.",
         metrics_.ws_bytes_out);
  metric("dispatch_ws_slow_client_total", "counter", "Slow-client interventions by action.");
  line(fmt::format("dispatch_ws_slow_client_total{{action=\"resync\"}} {}",
                   metrics_.slow_client_resyncs));
  line(fmt::format("dispatch_ws_slow_client_total{{action=\"disconnect\"}} {}",
                   metrics_.slow_client_disconnects));
  single("dispatch_ws_catchup_reads_total", "counter", "Store reads made for attach backlogs.",
         metrics_.catchup_reads);
  metric("dispatch_ws_screen_attach_total", "counter",
         "Attach backlogs sent as a screen (run:screen) instead of the events.");
  line(fmt::format("dispatch_ws_screen_attach_total {}", metrics_.screen_attaches));
  metric("dispatch_ws_screen_snapshots_saved_total", "counter",
         "Screen snapshots stored after an attach rebuilt a long tail.");
  line(fmt::format("dispatch_ws_screen_snapshots_saved_total {}", metrics_.screen_snapshots_saved));
  metric("dispatch_ws_screen_failures_total", "counter",
         "Screen attaches that fell back to sending the events.");
  line(fmt::format("dispatch_ws_screen_failures_total {}", metrics_.screen_failures));
  single("dispatch_ws_origin_rejections_total", "counter", "WebSocket upgrades refused by Origin.",
         metrics_.origin_rejections);
  single("dispatch_auth_failures_total", "counter", "Failed key checks.", auth_.failures_total());
  single("dispatch_auth_blocked_total", "counter", "Requests refused while an address was blocked.",
         auth_.blocked_total());
  metric("dispatch_http_responses_total", "counter", "HTTP responses by status code.");
  for (const auto& [code, n] : metrics_.http_by_status)
    line(fmt::format("dispatch_http_responses_total{{code=\"{}\"}} {}", code, n));
  single("dispatch_uptime_seconds", "gauge", "Seconds since start.",
         (NowMs() - started_ms_) / 1000);
  HttpResponse r;
  r.content_type = "text/plain; version=0.0.4";
  r.body = std::move(o);
  return r;
}

}  // namespace dispatch::host
