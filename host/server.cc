// The dispatch-host server core: lws on the host's libuv loop, WebSocket
// protocol, attach machinery, shutdown (see server.h). The HTTP API routes
// are in http_api.cc.
#include "server.h"

#include <libwebsockets.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "dispatch/projection.h"
#include "dispatch/replay.h"
#include "dispatch/version.h"
#include "log.h"

#include <fmt/format.h>

namespace dispatch::host {
namespace {

using nlohmann::json;

constexpr size_t kBatchBytes = 256 * 1024;   // one coalesced frame at most
constexpr size_t kBatchEvents = 4096;
constexpr size_t kReadPageBytes = 512 * 1024;  // one catch-up store read
constexpr size_t kHttpChunkBytes = 64 * 1024;  // an HTTP body written per writable callback
constexpr int kSioPingTimeoutMs = 20000;
// run:attach {screen: "auto"}: a screen only for a backlog of this many
// events or (estimated from the run's average event size) output bytes.
constexpr int64_t kScreenAutoMinEvents = 1000;
constexpr int64_t kScreenAutoMinBytes = 64 * 1024;

int Callback(lws* wsi, lws_callback_reasons reason, void* user, void* in, size_t len) {
  lws_context* ctx = lws_get_context(wsi);
  auto* server = ctx ? static_cast<Server*>(lws_context_user(ctx)) : nullptr;
  if (server == nullptr) return lws_callback_http_dummy(wsi, reason, user, in, len);
  return server->OnCallback(wsi, static_cast<int>(reason), user, in, len);
}

// rx_buffer_size 64 KiB; tx_packet_size 4 MiB: with 0 lws sends at most
// rx_buffer_size per send() and copies the rest of the frame aside for later
// writable callbacks — 620 of 650 output frames (~350 KB each) went out that
// way, each with a ~290 KB copy and five more loop turns. Now a frame goes
// to the socket whole, and lws keeps only what the socket does not take.
const lws_protocols kProtocols[] = {
    {"dispatch", Callback, 0, 64 * 1024, 0, nullptr, 4 * 1024 * 1024},
    {nullptr, nullptr, 0, 0, 0, nullptr, 0},
};

void LwsLogEmit(int level, const char* line) {
  std::string_view s = line;
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.remove_suffix(1);
  // lws prefixes its own timestamp; keep only the message.
  if (s.starts_with("[")) {
    size_t close = s.find("] ");
    if (close != std::string_view::npos) s.remove_prefix(close + 2);
  }
  LogLevel l = level & LLL_ERR ? LogLevel::kError
               : level & LLL_WARN ? LogLevel::kWarn
               : level & (LLL_NOTICE | LLL_USER) ? LogLevel::kInfo
                                                 : LogLevel::kDebug;
  LogAt(l, "lws: {}", s);
}

std::string RandomHex(size_t bytes) {
  std::string k = GenerateKey();  // 43 random url-safe characters
  std::string out;
  static const char kHex[] = "0123456789abcdef";
  for (size_t i = 0; i < bytes && i < k.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(k[i]);
    out += kHex[(c * 31u + i) & 15];
    out += kHex[(c >> 2) & 15];
  }
  return out;
}

}  // namespace

std::string GetHeader(lws* wsi, int token) {
  int n = lws_hdr_total_length(wsi, static_cast<lws_token_indexes>(token));
  if (n <= 0) return {};
  std::string s(static_cast<size_t>(n) + 1, '\0');
  int got = lws_hdr_copy(wsi, s.data(), n + 1, static_cast<lws_token_indexes>(token));
  if (got < 0) return {};
  s.resize(static_cast<size_t>(got));
  return s;
}

std::map<std::string, std::string> GetQuery(lws* wsi) {
  std::map<std::string, std::string> q;
  char buf[4096];
  for (int i = 0; i < 64; ++i) {
    int n = lws_hdr_copy_fragment(wsi, buf, sizeof buf, WSI_TOKEN_HTTP_URI_ARGS, i);
    if (n <= 0) break;
    std::string_view item(buf, static_cast<size_t>(n));
    size_t eq = item.find('=');
    std::string k(item.substr(0, eq));
    std::string v = eq == std::string_view::npos ? std::string() : std::string(item.substr(eq + 1));
    q.emplace(std::move(k), std::move(v));
  }
  return q;
}

Server::Server(Config config, uv_loop_t* loop, EventStore* store, RunSessionManager* manager)
    : config_(std::move(config)),
      loop_(loop),
      store_(store),
      manager_(manager),
      auth_(config_.no_auth ? std::string() : config_.key, config_.auth_fail_limit,
            config_.auth_fail_window_s) {}

Server::~Server() = default;

int64_t Server::NowMs() const { return static_cast<int64_t>(uv_now(loop_)); }

Status Server::Start() {
  started_ms_ = NowMs();
  int lws_levels = LLL_ERR | LLL_WARN;
  if (LogEnabled(LogLevel::kDebug)) lws_levels |= LLL_NOTICE;
  lws_set_log_level(lws_levels, LwsLogEmit);

  lws_context_creation_info info;
  std::memset(&info, 0, sizeof info);
  void* foreign[1] = {loop_};
  info.foreign_loops = foreign;
  // lws joins the host's loop (the libuv event-lib plugin); it installs no
  // signal handlers of its own on a foreign loop.
  info.options = LWS_SERVER_OPTION_LIBUV;
  if (!config_.tls_cert.empty()) {
    info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.ssl_cert_filepath = config_.tls_cert.c_str();
    info.ssl_private_key_filepath = config_.tls_key.c_str();
    // HTTP/1.1 only: the immediate error responses are written as HTTP/1.1
    // text, and WebSocket over h2 is not offered.
    info.alpn = "http/1.1";
  }
  info.port = config_.port;  // 0: any free port (reported on stdout)
  std::string iface = config_.listen_host;
  if (iface == "localhost") iface = "127.0.0.1";
  info.iface = iface.c_str();
  info.protocols = kProtocols;
  info.user = this;
  info.pcontext = &ctx_;
  info.timeout_secs = 30;
  info.keepalive_timeout = 30;
  info.vhost_name = "dispatch";
  info.server_string = "dispatch-host";
  info.max_http_header_data = 8192;
  info.pt_serv_buf_size = 64 * 1024;
  info.ka_time = 0;
  ctx_ = lws_create_context(&info);
  if (ctx_ == nullptr) return Status::IOError("cannot start the server (lws context)");
  lws_vhost* vh = lws_get_vhost_by_name(ctx_, "dispatch");
  if (vh == nullptr) {
    return Status::IOError("cannot listen on " + config_.listen_host + ":" +
                           std::to_string(config_.port));
  }
  port_ = lws_get_vhost_listen_port(vh);
  if (port_ <= 0) {
    return Status::IOError("cannot listen on " + config_.listen_host + ":" +
                           std::to_string(config_.port));
  }

  if (manager_) {
    published_sub_ = manager_->Subscribe("*", [this](const EventView& e) {
      auto it = published_.find(e.run_id);
      if (it == published_.end()) {
        published_.emplace(std::string(e.run_id), e.seq);
      } else if (e.seq > it->second) {
        it->second = e.seq;
      }
    });
  }
  uv_signal_init(loop_, &sigterm_);
  uv_signal_init(loop_, &sigint_);
  sigterm_.data = this;
  sigint_.data = this;
  uv_signal_start(&sigterm_, &Server::OnSignal, SIGTERM);
  uv_signal_start(&sigint_, &Server::OnSignal, SIGINT);
  uv_timer_init(loop_, &tick_);
  tick_.data = this;
  uv_timer_start(&tick_, &Server::OnTimer, 100, 100);
  uv_check_init(loop_, &flush_check_);
  flush_check_.data = this;
  uv_check_start(&flush_check_,
                 [](uv_check_t* h) { static_cast<Server*>(h->data)->FlushPending(); });
  uv_idle_init(loop_, &flush_idle_);
  flush_idle_.data = this;
  handles_open_ = true;
  last_ping_ms_ = NowMs();

  std::string scheme = config_.tls_cert.empty() ? "http" : "https";
  LogInfo("dispatch-host {} listening on {}://{}:{} (data {}, workspaces root {}, auth {})",
          DISPATCH_VERSION_STRING, scheme, config_.listen_host, port_, config_.db_path(),
          config_.workspaces_root, config_.no_auth ? "off" : "on");
  if (config_.key_generated) {
    // Printed once, on stdout only (not in the log).
    std::printf("dispatch-host: generated key (pass it as --key or DISPATCH_KEY to keep it): %s\n",
                config_.key.c_str());
  }
  std::printf("dispatch-host: listening on %s://%s:%d\n", scheme.c_str(),
              config_.listen_host.c_str(), port_);
  std::fflush(stdout);
  return Status::Ok();
}

void Server::OnSignal(uv_signal_t* h, int signum) {
  auto* s = static_cast<Server*>(h->data);
  s->BeginShutdown(signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

void Server::OnTimer(uv_timer_t* t) { static_cast<Server*>(t->data)->Tick(); }

void Server::Tick() {
  int64_t now = NowMs();
  if (phase_ == Phase::kRunning && now - last_ping_ms_ >= config_.ping_interval_ms) {
    last_ping_ms_ = now;
    for (auto& [wsi, c] : clients_) {
      if (c->transport != Transport::kSocketIo) continue;
      if (now - c->last_pong_ms > config_.ping_interval_ms + kSioPingTimeoutMs) {
        CloseClient(c.get(), 1000, "ping timeout");
        continue;
      }
      SendText(c.get(), "2", true);
    }
  }
  for (auto& [wsi, c] : clients_) {
    for (auto& [run, a] : c->attachments) {
      if (a->retry && !a->read_in_flight) {
        a->retry = false;
        a->mode = Attachment::kReading;
        ScheduleRead(a);
      }
    }
  }
  // lws can swallow a writable request made while it was still flushing a
  // partly sent frame; re-arm for every client that has something queued.
  for (auto& [wsi, c] : clients_) {
    if (!c->queue.empty() || c->close_after_flush) lws_callback_on_writable(wsi);
  }
  if (phase_ == Phase::kDraining || phase_ == Phase::kClosing) ShutdownStep();
}

bool Server::Authorized(const std::string& candidate, const std::string& address) {
  if (!auth_.enabled()) return true;
  return auth_.Check(address, candidate, NowMs());
}

std::string Server::PeerAddress(lws* wsi) {
  char buf[128];
  const char* p = lws_get_peer_simple(wsi, buf, sizeof buf);
  return p ? std::string(p) : std::string("?");
}

// ---------------------------------------------------------------- dispatch

int Server::OnCallback(lws* wsi, int reason, void* user, void* in, size_t len) {
  switch (reason) {
    case LWS_CALLBACK_HTTP:
      return OnHttp(wsi, static_cast<const char*>(in));
    case LWS_CALLBACK_HTTP_BODY:
      return OnHttpBody(wsi, static_cast<const char*>(in), len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
      return OnHttpBodyDone(wsi);
    case LWS_CALLBACK_HTTP_WRITEABLE:
      return OnHttpWriteable(wsi);
    case LWS_CALLBACK_CLOSED_HTTP:
      http_.erase(wsi);
      break;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
      return OnConfirmUpgrade(wsi);
    case LWS_CALLBACK_ESTABLISHED:
      return OnWsEstablished(wsi);
    case LWS_CALLBACK_RECEIVE:
      return OnWsReceive(wsi, static_cast<const char*>(in), len);
    case LWS_CALLBACK_SERVER_WRITEABLE:
      return OnWsWriteable(wsi);
    case LWS_CALLBACK_CLOSED:
      OnWsClosed(wsi);
      break;
    case LWS_CALLBACK_WSI_DESTROY:
      http_.erase(wsi);
      if (clients_.count(wsi)) OnWsClosed(wsi);
      break;
    default:
      break;
  }
  return lws_callback_http_dummy(wsi, static_cast<lws_callback_reasons>(reason), user, in, len);
}

// ---------------------------------------------------------------- HTTP

int Server::WriteImmediateResponse(lws* wsi, int status, std::string_view code,
                                   std::string_view msg,
                                   const std::vector<std::pair<std::string, std::string>>& headers) {
  // Written raw (HTTP/1.1, connection: close) because it is also used while
  // lws is in the middle of an upgrade, where its own header helpers answer
  // with an HTTP/1.0 status line that WebSocket clients reject.
  metrics_.http_by_status[status]++;
  std::string body = json{{"error", std::string(msg)}, {"code", std::string(code)}}.dump(
      -1, ' ', false, json::error_handler_t::replace);
  const char* reason = status == 400   ? "Bad Request"
                       : status == 401 ? "Unauthorized"
                       : status == 403 ? "Forbidden"
                       : status == 404 ? "Not Found"
                       : status == 411 ? "Length Required"
                       : status == 413 ? "Payload Too Large"
                       : status == 429 ? "Too Many Requests"
                       : status == 503 ? "Service Unavailable"
                                       : "Error";
  std::string out = fmt::format(
      "HTTP/1.1 {} {}\r\nserver: dispatch-host\r\ncontent-type: application/json\r\n"
      "content-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n",
      status, reason, body.size());
  for (const auto& [k, v] : headers) {
    if (k == "connection") continue;
    out += k + ": " + v + "\r\n";
  }
  out += "\r\n";
  out += body;
  std::vector<unsigned char> buf(LWS_PRE + out.size());
  std::memcpy(buf.data() + LWS_PRE, out.data(), out.size());
  if (lws_write(wsi, buf.data() + LWS_PRE, out.size(), LWS_WRITE_HTTP) < 0) return -1;
  return 1;
}

int Server::OnHttp(lws* wsi, const char* uri) {
  auto req = std::make_unique<HttpRequest>();
  req->path = uri ? uri : "/";
  struct {
    int token;
    const char* name;
  } methods[] = {{WSI_TOKEN_GET_URI, "GET"},       {WSI_TOKEN_POST_URI, "POST"},
                 {WSI_TOKEN_PUT_URI, "PUT"},       {WSI_TOKEN_DELETE_URI, "DELETE"},
                 {WSI_TOKEN_PATCH_URI, "PATCH"},   {WSI_TOKEN_OPTIONS_URI, "OPTIONS"},
                 {WSI_TOKEN_HEAD_URI, "HEAD"}};
  for (const auto& m : methods) {
    if (lws_hdr_total_length(wsi, static_cast<lws_token_indexes>(m.token)) > 0) {
      req->method = m.name;
      break;
    }
  }
  req->query = GetQuery(wsi);
  req->address = PeerAddress(wsi);
  std::string cl = GetHeader(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH);
  if (!cl.empty()) {
    // Digits only (strtoull takes "-1", as the largest value, and "+5"),
    // and at most 19 of them, which cannot overflow: lws reads the header
    // into 32 bytes with atoll and ignores a longer one, and the two must
    // agree on where the body ends.
    if (cl.size() > 19 || cl.find_first_not_of("0123456789") != std::string::npos) {
      WriteImmediateResponse(wsi, 400, "invalid_argument", "bad Content-Length");
      return -1;
    }
    unsigned long long v = std::strtoull(cl.c_str(), nullptr, 10);
    req->content_length = static_cast<size_t>(v);
    if (v > config_.max_body_bytes) {
      LogWarn("http {} {} from {}: body of {} bytes refused (limit {})", req->method, req->path,
              req->address, v, config_.max_body_bytes);
      WriteImmediateResponse(wsi, 413, "payload_too_large",
                             "request body larger than " + std::to_string(config_.max_body_bytes) +
                                 " bytes",
                             {{"connection", "close"}});
      // Do not close at once: over TLS the response may still sit in the
      // TLS layer. Swallow (never store) what the client still sends, close
      // when the body ends or after 5 s.
      req->discard_body = true;
      http_[wsi] = std::move(req);
      lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, 5);
      return 0;
    }
  }
  std::string te = GetHeader(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING);
  if (!te.empty()) {
    WriteImmediateResponse(wsi, 411, "length_required",
                           "chunked request bodies are not accepted; send Content-Length",
                           {{"connection", "close"}});
    return -1;
  }
  // Whatever the method, a request with a body is answered once the body is
  // in (lws reports its end with LWS_CALLBACK_HTTP_BODY_COMPLETION): an
  // answer before it would leave the body to be read as the next request.
  req->expect_body = req->content_length > 0;
  // A POST, PUT or PATCH without Content-Length: lws then expects a body of
  // its own default length and would read the next request on this
  // connection as that body, so the answer closes the connection.
  req->close_after = cl.empty() && (req->method == "POST" || req->method == "PUT" ||
                                    req->method == "PATCH");
  req->body.reserve(req->content_length);
  HttpRequest& r = *req;
  http_[wsi] = std::move(req);
  if (r.expect_body) return 0;  // wait for LWS_CALLBACK_HTTP_BODY_COMPLETION
  std::string bearer(BearerToken(GetHeader(wsi, WSI_TOKEN_HTTP_AUTHORIZATION)));
  return Respond(wsi, r, Route(r, bearer));
}

int Server::OnHttpBody(lws* wsi, const char* in, size_t len) {
  auto it = http_.find(wsi);
  // (lws may report an empty body of a request answered already.)
  if (it == http_.end() || it->second->responded) return 0;
  HttpRequest& r = *it->second;
  if (r.discard_body) return 0;
  if (r.body.size() + len > config_.max_body_bytes) return -1;
  r.body.append(in, len);
  return 0;
}

int Server::OnHttpBodyDone(lws* wsi) {
  auto it = http_.find(wsi);
  // lws also reports the end of an empty body (Content-Length: 0) of a
  // request answered already, or answered and done: nothing more to say.
  if (it == http_.end()) return 0;
  HttpRequest& r = *it->second;
  if (r.discard_body) return -1;
  if (r.responded) return 0;
  std::string bearer(BearerToken(GetHeader(wsi, WSI_TOKEN_HTTP_AUTHORIZATION)));
  return Respond(wsi, r, Route(r, bearer));
}

int Server::Respond(lws* wsi, HttpRequest& req, HttpResponse resp) {
  resp.close = resp.close || req.close_after;  // (no Content-Length on a POST: see OnHttp)
  metrics_.http_by_status[resp.status]++;
  LogAt(resp.status >= 500 ? LogLevel::kWarn : LogLevel::kDebug, "http {} {} from {} -> {}",
        req.method, req.path, req.address, resp.status);
  unsigned char buf[LWS_PRE + 4096];
  unsigned char* start = buf + LWS_PRE;
  unsigned char* p = start;
  unsigned char* end = buf + sizeof buf - 1;
  bool head = req.method == "HEAD";
  if (lws_add_http_common_headers(wsi, static_cast<unsigned int>(resp.status),
                                  resp.content_type.c_str(), resp.body.size(), &p, end)) {
    lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
    return 0;
  }
  resp.headers.emplace_back("cache-control", "no-store");
  resp.headers.emplace_back("x-content-type-options", "nosniff");
  if (resp.close) resp.headers.emplace_back("connection", "close");
  for (const auto& [k, v] : resp.headers) {
    std::string name = k + ":";
    if (lws_add_http_header_by_name(wsi, reinterpret_cast<const unsigned char*>(name.c_str()),
                                    reinterpret_cast<const unsigned char*>(v.data()),
                                    static_cast<int>(v.size()), &p, end)) {
      lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
      return 0;
    }
  }
  if (lws_finalize_write_http_header(wsi, start, &p, end)) {
    lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
    return 0;
  }
  req.responded = true;
  req.out_body = head ? std::string() : std::move(resp.body);
  req.out_off = 0;
  req.close_after = resp.close;
  // A body of one chunk goes out with the headers, in this callback: a
  // client that shut its sending side after the request (nc -N, some
  // proxies) would otherwise see lws close the connection on that EOF
  // before the writable callback wrote the body. Larger bodies are written
  // a chunk per writable callback.
  if (req.out_body.size() <= kHttpChunkBytes) return OnHttpWriteable(wsi);
  lws_callback_on_writable(wsi);
  return 0;
}

int Server::OnHttpWriteable(lws* wsi) {
  auto it = http_.find(wsi);
  if (it == http_.end() || !it->second->responded) return 0;
  HttpRequest& r = *it->second;
  size_t left = r.out_body.size() - r.out_off;
  size_t chunk = std::min<size_t>(left, kHttpChunkBytes);
  bool last = chunk == left;
  if (chunk > 0) {
    std::vector<unsigned char> out(LWS_PRE + chunk);
    std::memcpy(out.data() + LWS_PRE, r.out_body.data() + r.out_off, chunk);
    int n = lws_write(wsi, out.data() + LWS_PRE, chunk,
                      last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP);
    if (n < 0) return -1;
    r.out_off += chunk;
  }
  if (!last) {
    lws_callback_on_writable(wsi);
    return 0;
  }
  bool close = r.close_after;
  http_.erase(it);
  if (close) return -1;
  if (lws_http_transaction_completed(wsi)) return -1;
  return 0;
}

int Server::OnConfirmUpgrade(lws* wsi) {
  std::string path = GetHeader(wsi, WSI_TOKEN_GET_URI);
  std::string address = PeerAddress(wsi);
  bool native = path == "/ws" || path == "/ws/";
  bool sio = path == "/socket.io/" || path == "/socket.io";
  if (!native && !sio) {
    WriteImmediateResponse(wsi, 404, "not_found", "no WebSocket endpoint at " + path);
    return 1;
  }
  if (phase_ != Phase::kRunning) {
    WriteImmediateResponse(wsi, 503, "shutting_down", "the server is shutting down");
    return 1;
  }
  if (auth_.enabled() && auth_.Blocked(address, NowMs())) {
    WriteImmediateResponse(
        wsi, 429, "rate_limited", "too many failed key checks; try later",
        {{"retry-after", std::to_string(auth_.RetryAfterSeconds(address, NowMs()))}});
    return 1;
  }
  std::string origin = GetHeader(wsi, WSI_TOKEN_ORIGIN);
  std::string host = GetHeader(wsi, WSI_TOKEN_HOST);
  if (!OriginAllowed(origin, host, config_.allow_origins)) {
    metrics_.origin_rejections++;
    LogWarn("ws upgrade from {} refused: origin '{}' not allowed (host '{}')", address, origin,
            host);
    WriteImmediateResponse(wsi, 403, "origin_not_allowed", "Origin not allowed");
    return 1;
  }
  auto q = GetQuery(wsi);
  if (sio) {
    auto eio = q.find("EIO");
    auto transport = q.find("transport");
    if (eio == q.end() || eio->second != "4" || transport == q.end() ||
        transport->second != "websocket") {
      WriteImmediateResponse(wsi, 400, "unsupported_transport",
                             "only Engine.IO v4 with transport=websocket is served");
      return 1;
    }
  }
  std::string candidate(BearerToken(GetHeader(wsi, WSI_TOKEN_HTTP_AUTHORIZATION)));
  if (candidate.empty()) {
    auto k = q.find("authKey");
    if (k != q.end()) candidate = k->second;
  }
  if (!candidate.empty() && !Authorized(candidate, address)) {
    LogWarn("ws upgrade from {} refused: wrong key", address);
    WriteImmediateResponse(wsi, 401, "unauthorized", "wrong key",
                           {{"www-authenticate", "Bearer"}});
    return 1;
  }
  return 0;
}

// ---------------------------------------------------------------- WebSocket

int Server::OnWsEstablished(lws* wsi) {
  auto c = std::make_unique<WsClient>();
  c->wsi = wsi;
  c->address = PeerAddress(wsi);
  std::string path = GetHeader(wsi, WSI_TOKEN_GET_URI);
  c->transport = path.starts_with("/socket.io") ? Transport::kSocketIo : Transport::kNative;
  std::string candidate(BearerToken(GetHeader(wsi, WSI_TOKEN_HTTP_AUTHORIZATION)));
  if (candidate.empty()) {
    auto q = GetQuery(wsi);
    auto k = q.find("authKey");
    if (k != q.end()) candidate = k->second;
  }
  // The key (if any) was checked in OnConfirmUpgrade; compare again without
  // counting a failure.
  c->authed = !auth_.enabled() || (!candidate.empty() && ConstantTimeEquals(candidate, config_.key));
  c->last_pong_ms = NowMs();
  metrics_.ws_connections_total++;
  WsClient* raw = c.get();
  clients_[wsi] = std::move(c);
  LogInfo("ws connect {} from {} ({}{})", static_cast<const void*>(wsi), raw->address,
          raw->transport == Transport::kSocketIo ? "socket.io" : "ws",
          raw->authed ? ", key ok" : "");
  if (raw->transport == Transport::kSocketIo) {
    raw->sid = RandomHex(10);
    SendText(raw, SioOpenPacket(raw->sid, config_.ping_interval_ms, kSioPingTimeoutMs,
                                config_.max_ws_message_bytes),
             true);
  }
  return 0;
}

int Server::OnWsReceive(lws* wsi, const char* in, size_t len) {
  auto it = clients_.find(wsi);
  if (it == clients_.end()) return -1;
  WsClient* c = it->second.get();
  if (lws_frame_is_binary(wsi)) {
    ReplyError(c, std::nullopt, "bad_frame", "binary frames are not accepted; send JSON text");
    CloseClient(c, 1003, "binary frames not accepted");
    return 0;
  }
  if (c->rx.size() + len > config_.max_ws_message_bytes) {
    if (!c->rx_overflow) {
      c->rx_overflow = true;
      ReplyError(c, std::nullopt, "message_too_large",
                 "message larger than " + std::to_string(config_.max_ws_message_bytes) + " bytes");
      CloseClient(c, 1009, "message too large");
    }
    c->rx.clear();
    return 0;
  }
  c->rx.append(in, len);
  if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi) > 0) return 0;
  std::string text = std::move(c->rx);
  c->rx.clear();
  if (c->rx_overflow || c->close_after_flush) return 0;
  metrics_.ws_messages_in++;
  if (c->transport == Transport::kSocketIo) {
    HandleSioFrame(c, text);
    return 0;
  }
  Result<InMessage> m = ParseNativeFrame(text);
  if (!m.ok()) {
    ReplyError(c, std::nullopt, "bad_frame", m.status().message());
    return 0;
  }
  HandleMessage(c, *m);
  return 0;
}

void Server::HandleSioFrame(WsClient* c, std::string_view text) {
  Result<SioFrame> f = ParseSioFrame(text);
  if (!f.ok()) {
    SendEvent(c, "error", json{{"code", "bad_frame"}, {"message", f.status().message()}});
    return;
  }
  switch (f->kind) {
    case SioFrame::kPing:
      SendText(c, "3", true);
      return;
    case SioFrame::kPong:
      c->last_pong_ms = NowMs();
      return;
    case SioFrame::kClose:
    case SioFrame::kDisconnect:
      CloseClient(c, 1000, "client disconnect");
      return;
    case SioFrame::kNoop:
    case SioFrame::kAck:
      return;
    case SioFrame::kUnsupported:
      SendEvent(c, "error", json{{"code", "bad_frame"}, {"message", "unsupported packet"}});
      return;
    case SioFrame::kConnect: {
      if (!c->authed) {
        if (auth_.Blocked(c->address, NowMs())) {
          SendText(c, "44{\"message\":\"rate_limited\",\"data\":{\"code\":\"rate_limited\"}}");
          CloseClient(c, 1008, "rate limited");
          return;
        }
        std::string candidate;
        const json& a = f->connect_auth;
        if (a.is_object()) {
          for (const char* k : {"key", "token", "authKey"}) {
            auto it = a.find(k);
            if (it != a.end() && it->is_string()) {
              candidate = it->get<std::string>();
              break;
            }
          }
        }
        if (candidate.empty() || !Authorized(candidate, c->address)) {
          LogWarn("socket.io connect from {} refused: {}", c->address,
                  candidate.empty() ? "no key" : "wrong key");
          SendText(c, "44{\"message\":\"unauthorized\",\"data\":{\"code\":\"unauthorized\"}}");
          return;
        }
        c->authed = true;
      }
      c->sio_connected = true;
      SendText(c, "40" + json{{"sid", c->sid}}.dump());
      return;
    }
    case SioFrame::kEvent:
      if (!c->sio_connected) {
        // An event with an ack id gets its error as the ack (a client
        // awaiting it would otherwise wait forever); one without, an event.
        ReplyError(c, f->message.id, "unauthorized", "connect to the namespace first");
        return;
      }
      HandleMessage(c, f->message);
      return;
  }
}

// A queued frame goes out in the check phase of the same loop iteration
// (after everything this iteration delivers, so that a keystroke's input and
// echo events still share a frame), without waiting for another iteration
// in which lws reports the socket writable (two epoll_ctl and an epoll_wait
// more, ~10-20 µs per echo here). A closing client is flushed and closed by
// the writable callback, which alone may close the connection.
void Server::Wake(WsClient* c) {
  if (c->wsi == nullptr) return;
  if (c->close_after_flush || !handles_open_) {
    lws_callback_on_writable(c->wsi);
    return;
  }
  if (c->flush_pending) return;
  c->flush_pending = true;
  if (to_flush_.empty()) uv_idle_start(&flush_idle_, [](uv_idle_t*) {});
  to_flush_.push_back(c->wsi);
}

void Server::FlushPending() {
  if (to_flush_.empty()) return;
  std::vector<lws*> list;
  list.swap(to_flush_);
  uv_idle_stop(&flush_idle_);
  for (lws* wsi : list) {
    auto it = clients_.find(wsi);
    if (it == clients_.end()) continue;
    WsClient* c = it->second.get();
    if (!c->flush_pending) continue;
    c->flush_pending = false;
    if (c->queue.empty()) continue;
    // lws_write outside the writable callback is safe while lws holds no
    // partly sent data for this connection: a send the socket does not
    // take whole is kept by lws (buflist_out), which then asks for the
    // writable callback itself. Otherwise (and for a closing client) the
    // writable callback does the writing.
    if (c->close_after_flush || lws_partial_buffered(wsi)) {
      lws_callback_on_writable(wsi);
      continue;
    }
    if (!WriteQueued(c)) {
      // Outside a callback a connection is closed through a timeout.
      lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
      continue;
    }
    if (!c->queue.empty()) lws_callback_on_writable(wsi);
  }
}

void Server::SendText(WsClient* c, std::string text, bool /*force*/) {
  OutItem item;
  item.text = std::move(text);
  c->queued_bytes += item.cost();
  c->queue.push_back(std::move(item));
  Wake(c);
}

void Server::SendEvent(WsClient* c, std::string_view name, const json& data) {
  SendText(c, EncodeEvent(c->transport, name, data));
}

void Server::Reply(WsClient* c, const std::optional<int64_t>& id, const json& data) {
  if (!id) return;
  SendText(c, EncodeAck(c->transport, *id, data));
}

void Server::ReplyError(WsClient* c, const std::optional<int64_t>& id, std::string_view code,
                        std::string_view message, const std::string& run_id) {
  if (id) {
    SendText(c, EncodeErrorReply(c->transport, *id, code, message));
    return;
  }
  json d = {{"code", std::string(code)}, {"message", std::string(message)}};
  if (!run_id.empty()) d["runId"] = run_id;
  SendEvent(c, "error", d);
}

void Server::ReplyStatus(WsClient* c, const std::optional<int64_t>& id, const Status& s,
                         const std::string& run_id) {
  ReplyError(c, id, StatusCodeName(s.code()), s.message(), run_id);
}

void Server::CloseClient(WsClient* c, int code, std::string_view reason) {
  if (c->close_after_flush) return;
  c->close_after_flush = true;
  c->close_code = code;
  LogDebug("ws {} closing: {}", static_cast<const void*>(c->wsi), reason);
  Wake(c);
}

// Ends a connection from its writable callback with a Close frame carrying
// `code` (RFC 6455 §5.5.1, §7.4), so that the client sees why. lws 4.1 sends
// the Close frame lws_close_reason() prepares only when nothing of an
// earlier frame is still buffered (otherwise it flushes and kills the
// connection), and its public API has no write type for one; lws writes an
// HTTP-type write on a WebSocket connection as it is, after whatever it
// holds buffered, so the frame (a server's: unmasked) is built here.
int Server::SendCloseFrame(lws* wsi, int code) {
  unsigned char buf[LWS_PRE + 4];
  unsigned char* f = buf + LWS_PRE;
  f[0] = 0x88;  // FIN, opcode 8 (Close)
  f[1] = 2;     // payload: the status code alone
  f[2] = static_cast<unsigned char>((code >> 8) & 0xff);
  f[3] = static_cast<unsigned char>(code & 0xff);
  (void)lws_write(wsi, f, 4, LWS_WRITE_HTTP);
  return -1;
}

int Server::OnWsWriteable(lws* wsi) {
  auto it = clients_.find(wsi);
  if (it == clients_.end()) return -1;
  WsClient* c = it->second.get();
  if (c->queue.empty() && c->close_after_flush) return SendCloseFrame(wsi, c->close_code);
  if (!WriteQueued(c)) return -1;
  if (c->queue.empty() && c->close_after_flush) return SendCloseFrame(wsi, c->close_code);
  if (!c->queue.empty()) lws_callback_on_writable(wsi);
  return 0;
}

bool Server::WriteQueued(WsClient* c) {
  lws* wsi = c->wsi;
  // Several frames while the socket takes them; once it is choked, wait for
  // the next writable callback.
  for (int frames = 0; frames < 16 && !c->queue.empty(); ++frames) {
    // The first frame goes out at once (the socket is writable, or lws
    // keeps what it does not take); later ones only while it still takes
    // them (a poll(2) each).
    if (frames > 0 && lws_send_pipe_choked(wsi)) break;
    // Frames are built with LWS_PRE bytes of headroom in front: lws writes
    // the WebSocket header there.
    std::string frame;
    std::shared_ptr<const WireEvent> one;  // a single native event: its own frame
    OutItem& head = c->queue.front();
    if (!head.event) {
      frame.reserve(LWS_PRE + head.text.size());
      frame.append(LWS_PRE, '\0');
      frame += head.text;
      c->queued_bytes -= std::min(c->queued_bytes, head.cost());
      c->queue.pop_front();
    } else {
      std::vector<std::shared_ptr<const WireEvent>> batch;
      std::string run = head.event->run_id;
      size_t bytes = 0;
      while (!c->queue.empty() && c->queue.front().event &&
             c->queue.front().event->run_id == run && batch.size() < kBatchEvents &&
             (batch.empty() || bytes < kBatchBytes)) {
        OutItem& f = c->queue.front();
        bytes += f.event->json().size();
        c->queued_bytes -= std::min(c->queued_bytes, f.cost());
        batch.push_back(std::move(f.event));
        c->queue.pop_front();
      }
      metrics_.ws_events_out += static_cast<int64_t>(batch.size());
      if (batch.size() == 1 && c->transport == Transport::kNative &&
          batch[0]->headroom() >= LWS_PRE) {
        // The event's own frame, shared by every client it goes to: lws
        // writes the header into the headroom and sends (what the socket
        // does not take it copies), so nothing is built per client.
        one = std::move(batch[0]);
      } else {
        frame = EncodeEvents(c->transport, run, batch, LWS_PRE);
      }
    }
    unsigned char* data = one ? reinterpret_cast<unsigned char*>(one->NativeFrame())
                              : reinterpret_cast<unsigned char*>(frame.data()) + LWS_PRE;
    size_t len = one ? one->NativeFrameSize() : frame.size() - LWS_PRE;
    int n = lws_write(wsi, data, len, LWS_WRITE_TEXT);
    if (n < 0) return false;
    metrics_.ws_frames_out++;
    metrics_.ws_bytes_out += static_cast<int64_t>(len);
    if (c->queued_bytes < config_.client_queue_bytes / 4) OnClientDrained(c);
  }
  return true;
}

void Server::OnWsClosed(lws* wsi) {
  auto it = clients_.find(wsi);
  if (it == clients_.end()) return;
  WsClient* c = it->second.get();
  std::vector<std::string> runs;
  for (auto& [run, a] : c->attachments) runs.push_back(run);
  for (const auto& run : runs) Detach(c, run);
  LogInfo("ws disconnect {} from {}", static_cast<const void*>(wsi), c->address);
  c->wsi = nullptr;
  clients_.erase(it);
}

void Server::HandleMessage(WsClient* c, InMessage& m) {
  const std::string& ev = m.event;
  if (ev == "client:hello") {
    auto cid = m.data.find("clientId");
    if (cid != m.data.end() && cid->is_string()) c->client_id = cid->get<std::string>().substr(0, 128);
    if (!c->authed) {
      if (auth_.Blocked(c->address, NowMs())) {
        ReplyError(c, m.id, "rate_limited", "too many failed key checks; try later");
        CloseClient(c, 1008, "rate limited");
        return;
      }
      auto k = m.data.find("key");
      std::string candidate = (k != m.data.end() && k->is_string()) ? k->get<std::string>() : "";
      if (candidate.empty() || !Authorized(candidate, c->address)) {
        LogWarn("ws hello from {} refused: {}", c->address, candidate.empty() ? "no key" : "wrong key");
        ReplyError(c, m.id, "unauthorized", "wrong or missing key");
        CloseClient(c, 1008, "unauthorized");
        return;
      }
      c->authed = true;
    }
    Reply(c, m.id,
          json{{"clientId", c->client_id}, {"server", "dispatch-host"},
               {"version", DISPATCH_VERSION_STRING}, {"authenticated", true}});
    return;
  }
  if (!c->authed) {
    ReplyError(c, m.id, "unauthorized", "send client:hello with the key first");
    CloseClient(c, 1008, "unauthorized");
    return;
  }
  if (phase_ != Phase::kRunning && ev != "run:detach") {
    ReplyError(c, m.id, "shutting_down", "the server is shutting down");
    return;
  }
  auto run_of = [&](std::string* run) -> bool {
    auto r = m.data.find("runId");
    if (r == m.data.end() || !r->is_string()) {
      ReplyError(c, m.id, "invalid_argument", "runId (string) is required");
      return false;
    }
    *run = r->get<std::string>();
    if (Status s = ValidateRunId(*run); !s.ok()) {
      ReplyStatus(c, m.id, s);
      return false;
    }
    return true;
  };
  // Input, resize and close need an attachment that is not read-only.
  auto may_control = [&](const std::string& run) -> bool {
    auto a = c->attachments.find(run);
    if (a == c->attachments.end()) {
      ReplyError(c, m.id, "not_attached", "attach to the run first (run:attach)", run);
      return false;
    }
    if (a->second->viewer) {
      ReplyError(c, m.id, "forbidden", "attached as viewer: input, resize and close are refused",
                 run);
      return false;
    }
    return true;
  };
  std::string run;
  if (ev == "run:attach") {
    Attach(c, m);
  } else if (ev == "run:detach") {
    if (!run_of(&run)) return;
    if (!c->attachments.count(run)) {
      ReplyError(c, m.id, "not_attached", "not attached to this run", run);
      return;
    }
    Detach(c, run);
    Reply(c, m.id, json{{"runId", run}});
  } else if (ev == "run:input") {
    if (!run_of(&run) || !may_control(run)) return;
    auto d = m.data.find("data");
    if (d == m.data.end() || !d->is_string()) {
      ReplyError(c, m.id, "invalid_argument", "data (string) is required", run);
      return;
    }
    std::string_view enc = "text";
    if (auto e = m.data.find("encoding"); e != m.data.end() && !e->is_null()) {
      if (!e->is_string()) {
        ReplyError(c, m.id, "invalid_argument", "encoding must be text or bytes", run);
        return;
      }
      enc = e->get_ref<const std::string&>();
    }
    std::string bytes;
    Encoding encoding = Encoding::kText;
    if (enc == "bytes" || enc == "base64") {
      auto decoded = Base64Decode(d->get_ref<const std::string&>());
      if (!decoded) {
        ReplyError(c, m.id, "invalid_argument", "data is not valid base64", run);
        return;
      }
      bytes = std::move(*decoded);
      encoding = Encoding::kBytes;
    } else if (enc == "text" || enc == "utf8" || enc == "utf-8") {
      bytes = std::move(d->get_ref<std::string&>());  // (the message is ours)
    } else {
      ReplyError(c, m.id, "invalid_argument", "encoding must be text or bytes", run);
      return;
    }
    size_t n = bytes.size();
    if (!manager_) return ReplyError(c, m.id, "unavailable", "no session runtime", run);
    Status s = manager_->Input(run, std::move(bytes), encoding);
    if (!s.ok()) {
      ReplyStatus(c, m.id, s, run);
      return;
    }
    if (m.id) Reply(c, m.id, json{{"runId", run}, {"bytes", n}});
  } else if (ev == "run:resize") {
    if (!run_of(&run) || !may_control(run)) return;
    auto cols = m.data.find("cols");
    auto rows = m.data.find("rows");
    if (cols == m.data.end() || rows == m.data.end() || !cols->is_number_integer() ||
        !rows->is_number_integer() || *cols < 1 || *rows < 1 || *cols > 10000 || *rows > 10000) {
      ReplyError(c, m.id, "invalid_argument", "cols and rows must be integers in [1, 10000]", run);
      return;
    }
    if (!manager_) return ReplyError(c, m.id, "unavailable", "no session runtime", run);
    Status s = manager_->Resize(run, cols->get<int>(), rows->get<int>());
    if (!s.ok()) {
      ReplyStatus(c, m.id, s, run);
      return;
    }
    Reply(c, m.id, json{{"runId", run}, {"cols", *cols}, {"rows", *rows}});
  } else if (ev == "run:close") {
    if (!run_of(&run) || !may_control(run)) return;
    if (!manager_) return ReplyError(c, m.id, "unavailable", "no session runtime", run);
    Status s = manager_->Close(run);
    if (!s.ok()) {
      ReplyStatus(c, m.id, s, run);
      return;
    }
    Reply(c, m.id, json{{"runId", run}, {"closing", true}});
  } else {
    ReplyError(c, m.id, "unknown_event", "unknown event '" + ev + "'");
  }
}

// ---------------------------------------------------------------- attach

Feed* Server::GetOrCreateFeed(const std::string& run_id, Status* error) {
  auto it = feeds_.find(run_id);
  if (it != feeds_.end()) return it->second.get();
  auto feed = std::make_unique<Feed>();
  feed->run_id = run_id;
  // Subscribe first, then read the committed high-water mark: events the
  // bus publishes later with seq <= mark are ignored, later ones are live
  // (publication happens on this thread, so nothing slips in between).
  if (manager_) {
    feed->bus_sub = manager_->Subscribe(
        "*", [this, run_id](const EventView& e) { OnBusEvent(run_id, e); }, run_id);
  }
  Result<int64_t> last = store_->LastSeq(run_id);
  if (!last.ok()) {
    if (manager_) manager_->bus().Unsubscribe(feed->bus_sub);
    *error = last.status();
    return nullptr;
  }
  // The store's answer and what the bus already published: both are
  // committed; take the higher so no published event is mistaken for new.
  feed->cursor = *last;
  if (auto p = published_.find(run_id); p != published_.end())
    feed->cursor = std::max(feed->cursor, p->second);
  Feed* raw = feed.get();
  feeds_[run_id] = std::move(feed);
  return raw;
}

void Server::MaybeDropFeed(const std::string& run_id) {
  auto it = feeds_.find(run_id);
  if (it == feeds_.end() || !it->second->atts.empty()) return;
  if (manager_) manager_->bus().Unsubscribe(it->second->bus_sub);
  feeds_.erase(it);
}

void Server::Attach(WsClient* c, const InMessage& m) {
  auto r = m.data.find("runId");
  if (r == m.data.end() || !r->is_string()) {
    ReplyError(c, m.id, "invalid_argument", "runId (string) is required");
    return;
  }
  std::string run = r->get<std::string>();
  if (Status s = ValidateRunId(run); !s.ok()) {
    ReplyStatus(c, m.id, s);
    return;
  }
  int64_t after = 0;
  if (auto a = m.data.find("afterSeq"); a != m.data.end() && !a->is_null()) {
    if (!a->is_number_integer() || a->get<int64_t>() < 0) {
      ReplyError(c, m.id, "invalid_argument", "afterSeq must be an integer >= 0", run);
      return;
    }
    after = a->get<int64_t>();
  }
  // screen: true | "auto" (only when the backlog has kScreenAutoMinEvents
  // or more) | false; scrollback: also paint the scrollback lines.
  bool want_screen = false, auto_screen = false, scrollback = false;
  if (auto sc = m.data.find("screen"); sc != m.data.end() && !sc->is_null()) {
    if (sc->is_boolean()) {
      want_screen = sc->get<bool>();
    } else if (sc->is_string() && *sc == "auto") {
      want_screen = auto_screen = true;
    } else {
      ReplyError(c, m.id, "invalid_argument", "screen must be true, false or \"auto\"", run);
      return;
    }
  }
  if (auto sb = m.data.find("scrollback"); sb != m.data.end() && !sb->is_null()) {
    if (!sb->is_boolean()) {
      ReplyError(c, m.id, "invalid_argument", "scrollback must be a boolean", run);
      return;
    }
    scrollback = sb->get<bool>();
  }
  bool viewer = false;
  if (auto role = m.data.find("role"); role != m.data.end() && !role->is_null()) {
    if (!role->is_string() ||
        (*role != "viewer" && *role != "operator" && *role != "owner" && *role != "editor")) {
      ReplyError(c, m.id, "invalid_argument", "role must be \"viewer\" or \"operator\"", run);
      return;
    }
    viewer = *role == "viewer";
  }
  // The run must exist: a session record, a live session, or stored events.
  // Its kind decides whether a screen can stand for its backlog (pty only).
  std::string kind;
  bool known = false;
  if (manager_) {
    if (auto info = manager_->GetSession(run); info.ok()) known = true, kind = info->kind;
  }
  if (!known) {
    if (auto rec = store_->catalog().GetSession(run); rec.ok()) known = true, kind = rec->kind;
  }
  if (!known) {
    Result<RunInfo> info = store_->GetRun(run);
    known = info.ok();
  }
  if (!known) {
    ReplyError(c, m.id, "not_found", "no such run", run);
    return;
  }
  if (c->attachments.count(run)) Detach(c, run);  // re-attach: start over from afterSeq
  Status err;
  Feed* feed = GetOrCreateFeed(run, &err);
  if (feed == nullptr) {
    ReplyStatus(c, m.id, err, run);
    return;
  }
  if (after > feed->cursor) {
    ReplyError(c, m.id, "invalid_argument",
               "afterSeq " + std::to_string(after) + " is beyond the run's last seq " +
                   std::to_string(feed->cursor),
               run);
    MaybeDropFeed(run);
    return;
  }
  auto a = std::make_shared<Attachment>();
  a->client = c;
  a->run_id = run;
  a->viewer = viewer;
  a->from_seq = after + 1;
  a->mark = feed->cursor;
  a->cursor = after;
  a->mode = Attachment::kReading;
  // A screen stands for the backlog only of a pty run, and only if there is
  // a backlog ("auto": a long one).
  bool screen = want_screen && kind == "pty" && a->mark > after;
  if (screen && auto_screen && a->mark - after < kScreenAutoMinEvents) {
    Result<RunInfo> info = store_->GetRun(run);
    screen = info.ok() && info->event_count > 0 &&
             info->payload_bytes / info->event_count * (a->mark - after) >= kScreenAutoMinBytes;
  }
  a->screen_scrollback = scrollback;
  c->attachments[run] = a;
  feed->atts.push_back(a);
  LogInfo("ws {} attach {} afterSeq={} mark={}{}{}", static_cast<const void*>(c->wsi), run, after,
          a->mark, viewer ? " (viewer)" : "", screen ? " (screen)" : "");
  Reply(c, m.id,
        json{{"runId", run}, {"fromSeq", a->from_seq}, {"toSeq", a->mark},
             {"role", viewer ? "viewer" : "operator"}, {"screen", screen}});
  if (screen) {
    ScheduleScreen(a);
  } else {
    ContinueAttachment(a, -1);
  }
}

void Server::Detach(WsClient* c, const std::string& run_id) {
  auto it = c->attachments.find(run_id);
  if (it == c->attachments.end()) return;
  std::shared_ptr<Attachment> a = it->second;
  a->alive = false;
  c->attachments.erase(it);
  auto f = feeds_.find(run_id);
  if (f != feeds_.end()) {
    auto& v = f->second->atts;
    v.erase(std::remove(v.begin(), v.end(), a), v.end());
  }
  MaybeDropFeed(run_id);
}

void Server::Enqueue(Attachment& a, std::shared_ptr<const WireEvent> ev) {
  WsClient* c = a.client;
  a.cursor = ev->seq;
  if (a.behind_from > 0 && ev->seq >= a.behind_from)
    a.behind_bytes -= std::min(a.behind_bytes, ev->cost());
  OutItem item;
  item.event = std::move(ev);
  c->queued_bytes += item.cost();
  bool closes = item.event->closes;
  c->queue.push_back(std::move(item));
  if (closes) SendEvent(c, "session:closed", json{{"runId", a.run_id}});
  Wake(c);
}

void Server::OnBusEvent(const std::string& run_id, const EventView& e) {
  auto it = feeds_.find(run_id);
  if (it == feeds_.end()) return;
  Feed& feed = *it->second;
  if (e.seq <= feed.cursor) return;
  bool gap = e.seq != feed.cursor + 1;
  feed.cursor = e.seq;
  std::shared_ptr<const WireEvent> w;
  // Iterate over a copy: a disconnect policy may detach.
  std::vector<std::shared_ptr<Attachment>> atts = feed.atts;
  for (auto& a : atts) {
    if (!a->alive) continue;
    if (a->mode == Attachment::kLive) {
      if (gap || a->cursor != e.seq - 1) {
        a->mode = Attachment::kReading;
        ScheduleRead(a);
      } else if (a->client->queued_bytes >= config_.client_queue_bytes) {
        OnClientOverflow(*a);
        continue;
      } else {
        if (!w) w = MakeWireEvent(e, LWS_PRE);
        Enqueue(*a, w);
        continue;
      }
      if (!a->alive || a->mode == Attachment::kLive) continue;
    }
    // Catching up (reading, paused, or a screen being built): the event will
    // come from the store. Under `disconnect` it is counted: the backlog may
    // fill half the bound, the other half is for the output produced
    // meanwhile, and a client that lets more than that pile up before it
    // drains (OnClientDrained resets the count) is slow, live or catching
    // up. (A screen being built replaces what it covers; counting starts
    // after it.)
    if (config_.slow_client != SlowClientPolicy::kDisconnect || a->screen_pending ||
        a->client->close_after_flush)
      continue;
    if (!w) w = MakeWireEvent(e, LWS_PRE);
    if (a->behind_from == 0) a->behind_from = e.seq;
    a->behind_bytes += w->cost();
    if (a->behind_bytes > config_.client_queue_bytes / 2) OnClientOverflow(*a);
  }
}

void Server::OnClientOverflow(Attachment& a) {
  WsClient* c = a.client;
  if (config_.slow_client == SlowClientPolicy::kResync) {
    a.mode = Attachment::kPaused;
    metrics_.slow_client_resyncs++;
    LogDebug("ws {} slow on {}: paused at seq {}, will continue from the store",
             static_cast<const void*>(c->wsi), a.run_id, a.cursor);
    return;
  }
  if (c->close_after_flush) return;
  metrics_.slow_client_disconnects++;
  LogWarn("ws {} from {} too slow on {} ({} bytes queued, {} more behind, {}): disconnecting",
          static_cast<const void*>(c->wsi), c->address, a.run_id, c->queued_bytes,
          a.behind_bytes, a.mode == Attachment::kLive ? "live" : "catching up");
  c->queue.clear();
  c->queued_bytes = 0;
  for (auto& [run, att] : c->attachments) att->mode = Attachment::kPaused;
  ReplyError(c, std::nullopt, "slow_client",
             "the client did not keep up with the output; reconnect and attach with your last seq",
             a.run_id);
  CloseClient(c, 1008, "slow client");
}

size_t Server::CatchupLimit() const {
  return config_.slow_client == SlowClientPolicy::kDisconnect ? config_.client_queue_bytes / 2
                                                              : config_.client_queue_bytes;
}

void Server::OnClientDrained(WsClient* c) {
  if (c->close_after_flush) return;
  for (auto& [run, a] : c->attachments) {
    if (a->mode == Attachment::kPaused && !a->retry) {
      a->behind_from = 0;  // it is reading: count the output from here on
      a->behind_bytes = 0;
      a->mode = Attachment::kReading;
      ScheduleRead(a);
    }
  }
}

namespace {

struct ReadJob {
  uv_work_t req;
  Server* server = nullptr;
  EventStore* store = nullptr;
  std::shared_ptr<Attachment> att;
  std::string run_id;
  int64_t after = 0;
  int64_t upto = 0;
  size_t max_bytes = 0;
  std::vector<std::shared_ptr<const WireEvent>> events;
  Status status;
  std::function<void(ReadJob*)> done;
};

}  // namespace

void Server::ScheduleRead(const std::shared_ptr<Attachment>& a) {
  if (a->read_in_flight || !a->alive) return;
  auto f = feeds_.find(a->run_id);
  if (f == feeds_.end()) return;
  int64_t target = a->attached_sent ? f->second->cursor : a->mark;
  if (a->cursor >= target) {
    ContinueAttachment(a, -1);  // nothing to read for this target
    return;
  }
  a->read_in_flight = true;
  metrics_.catchup_reads++;
  auto* job = new ReadJob;
  job->req.data = job;
  job->server = this;
  job->store = store_;
  job->att = a;
  job->run_id = a->run_id;
  job->after = a->cursor;
  job->upto = target;
  // A page fills at most the room left below the catch-up limit (at least
  // 16 KiB, at most kReadPageBytes), so the queue overshoots it by one
  // event at most.
  size_t queued = a->client->queued_bytes;
  size_t limit = CatchupLimit();
  job->max_bytes = std::clamp<size_t>(limit > queued ? limit - queued : 0, 16 * 1024,
                                      kReadPageBytes);
  job->done = [this](ReadJob* j) {
    std::shared_ptr<Attachment> att = j->att;
    att->read_in_flight = false;
    // A client being closed (slow, shutting down) gets nothing more.
    if (!att->alive || att->client->close_after_flush) return;
    if (!j->status.ok()) {
      if (j->status.code() == StatusCode::kTruncated) {
        int64_t earliest = j->status.earliest_available();
        json d = {{"code", "truncated"},
                  {"message", "events before seq " + std::to_string(earliest) +
                                  " were removed by retention"},
                  {"runId", att->run_id},
                  {"earliestSeq", earliest}};
        SendEvent(att->client, "error", d);
        att->cursor = std::max(att->cursor, earliest - 1);
        ContinueAttachment(att, -1);
        return;
      }
      LogWarn("catch-up read of {} failed: {}", att->run_id, j->status.ToString());
      ReplyStatus(att->client, std::nullopt, j->status, att->run_id);
      Detach(att->client, att->run_id);
      return;
    }
    int64_t n = 0;
    for (auto& e : j->events) {
      if (e->seq <= att->cursor) continue;
      Enqueue(*att, std::move(e));
      ++n;
    }
    ContinueAttachment(att, n);
  };
  int rc = uv_queue_work(
      loop_, &job->req,
      [](uv_work_t* req) {
        auto* j = static_cast<ReadJob*>(req->data);
        size_t bytes = 0;
        ReadOptions opts;
        opts.limit = static_cast<size_t>(std::min<int64_t>(j->upto - j->after, 20000));
        Result<ReadSummary> r = j->store->Read(
            j->run_id, j->after,
            [&](const EventView& v) {
              if (v.seq > j->upto) return false;
              auto w = MakeWireEvent(v, LWS_PRE);
              bytes += w->cost();
              j->events.push_back(std::move(w));
              return bytes < j->max_bytes;
            },
            opts);
        if (!r.ok()) j->status = r.status();
      },
      [](uv_work_t* req, int) {
        auto* j = static_cast<ReadJob*>(req->data);
        j->done(j);
        delete j;
      });
  if (rc != 0) {
    a->read_in_flight = false;
    delete job;
    LogError("cannot queue a store read: {}", uv_strerror(rc));
  }
}

namespace {

// The library's screen projection, counting the output it applies, so the
// host can tell whether the screen it built is worth keeping as a snapshot.
class CountingScreen final : public Projection {
 public:
  std::string_view name() const override { return inner_.name(); }
  int32_t version() const override { return inner_.version(); }
  void Reset() override { inner_.Reset(); }
  void Apply(const EventView& e) override {
    if (e.channel == "pty:stdout") bytes_ += static_cast<int64_t>(e.payload.size());
    inner_.Apply(e);
  }
  std::string Save() const override { return inner_.Save(); }
  Status Load(std::string_view data) override { return inner_.Load(data); }
  const TerminalScreen& screen() const { return inner_.screen(); }
  int64_t bytes() const { return bytes_; }

 private:
  ScreenProjection inner_;  // default options: 80x24 until the run says, 1000 lines of scrollback
  int64_t bytes_ = 0;
};

struct ScreenJob {
  uv_work_t req;
  EventStore* store = nullptr;
  std::shared_ptr<Attachment> att;
  std::string run_id;
  int64_t upto = 0;
  bool scrollback = false;
  // Results.
  Status status;
  std::string repaint;
  int64_t seq = 0;
  int cols = 0, rows = 0;
  std::string title;
  ReplayResult replay;
  bool saved = false;
  Status save_status;
  std::function<void(ScreenJob*)> done;
};

}  // namespace

void Server::ScheduleScreen(const std::shared_ptr<Attachment>& a) {
  a->screen_pending = true;
  a->read_in_flight = true;  // no store read meanwhile: the screen decides where they start
  auto* job = new ScreenJob;
  job->req.data = job;
  job->store = store_;
  job->att = a;
  job->run_id = a->run_id;
  job->upto = a->mark;
  job->scrollback = a->screen_scrollback;
  job->done = [this](ScreenJob* j) {
    std::shared_ptr<Attachment> att = j->att;
    att->read_in_flight = false;
    att->screen_pending = false;
    if (!att->alive || att->client->close_after_flush) return;
    if (j->saved) metrics_.screen_snapshots_saved++;
    if (!j->save_status.ok())
      LogWarn("screen snapshot of {} at seq {} not saved: {}", att->run_id, j->seq,
              j->save_status.ToString());
    if (!j->status.ok()) {
      // Fall back to the events (a truncated backlog is reported there).
      metrics_.screen_failures++;
      LogWarn("screen of {} for attach failed ({}): sending the events instead", att->run_id,
              j->status.ToString());
    } else if (j->seq > att->cursor) {
      json d = {{"runId", att->run_id}, {"seq", j->seq},     {"cols", j->cols},
                {"rows", j->rows},      {"title", j->title}, {"scrollback", j->scrollback}};
      if (IsValidUtf8(j->repaint)) {
        d["data"] = std::move(j->repaint);
        d["encoding"] = "text";
      } else {
        d["data"] = Base64Encode(j->repaint);
        d["encoding"] = "bytes";
      }
      SendEvent(att->client, "run:screen", d);
      metrics_.screen_attaches++;
      LogDebug("ws {} screen of {} at seq {} ({} events replayed from snapshot {})",
               static_cast<const void*>(att->client->wsi), att->run_id, j->seq,
               j->replay.events_applied, j->replay.snapshot_seq);
      att->cursor = j->seq;
    }
    att->behind_from = 0;
    att->behind_bytes = 0;
    ContinueAttachment(att, -1);
  };
  int rc = uv_queue_work(
      loop_, &job->req,
      [](uv_work_t* req) {
        auto* j = static_cast<ScreenJob*>(req->data);
        CountingScreen p;
        ReplayEngine engine(j->store);
        Result<ReplayResult> r = engine.Rebuild(j->run_id, p, j->upto);
        if (!r.ok()) {
          j->status = r.status();
          return;
        }
        j->replay = *r;
        j->seq = r->seq;
        RepaintOptions ro;
        ro.reset = true;
        ro.include_scrollback = j->scrollback;
        j->repaint = p.screen().Repaint(ro);
        j->cols = p.screen().cols();
        j->rows = p.screen().rows();
        j->title = p.screen().title();
        // Keep what was rebuilt as a snapshot (by the library's default
        // policy) so the next attach starts here instead of replaying again.
        const SnapshotPolicy policy;
        if (r->seq > r->snapshot_seq &&
            (r->events_applied >= policy.every_events || p.bytes() >= policy.every_bytes)) {
          j->save_status = engine.SaveSnapshot(j->run_id, p, r->seq);
          j->saved = j->save_status.ok();
        }
      },
      [](uv_work_t* req, int) {
        auto* j = static_cast<ScreenJob*>(req->data);
        j->done(j);
        delete j;
      });
  if (rc != 0) {
    delete job;
    a->read_in_flight = false;
    a->screen_pending = false;
    LogError("cannot queue a screen build: {}", uv_strerror(rc));
    ContinueAttachment(a, -1);
  }
}

void Server::ContinueAttachment(const std::shared_ptr<Attachment>& a, int64_t events_read) {
  if (!a->alive) return;
  WsClient* c = a->client;
  auto f = feeds_.find(a->run_id);
  if (f == feeds_.end()) return;
  Feed& feed = *f->second;
  if (!a->attached_sent && a->cursor >= a->mark) {
    a->attached_sent = true;
    SendEvent(c, "run:attached",
              json{{"runId", a->run_id}, {"fromSeq", a->from_seq}, {"toSeq", a->mark}});
  }
  if (a->cursor >= feed.cursor) {
    a->mode = Attachment::kLive;
    a->behind_from = 0;
    a->behind_bytes = 0;
    return;
  }
  if (events_read == 0) {
    // The store had nothing more although the feed has seen later events
    // (a reader that does not see the newest commit yet): try again on the
    // next ticks rather than spin; give up after ~5 s and go live (a later
    // gap triggers another read).
    if (++a->empty_reads <= 50) {
      a->mode = Attachment::kPaused;
      a->retry = true;
      return;
    }
    LogWarn("catch-up of {} found nothing after seq {} (feed at {})", a->run_id, a->cursor,
            feed.cursor);
    a->mode = Attachment::kLive;
    return;
  }
  a->empty_reads = 0;
  // The backlog is read at the client's pace: the next page only when the
  // queue has room. Under `disconnect` it may fill half the bound, so that
  // catching up alone never makes a client "slow"; the other half is for
  // the output the session produces meanwhile (see OnBusEvent).
  if (c->queued_bytes >= CatchupLimit()) {
    a->mode = Attachment::kPaused;
    return;
  }
  a->mode = Attachment::kReading;
  ScheduleRead(a);
}

// ---------------------------------------------------------------- shutdown

void Server::BeginShutdown(const char* why) {
  if (phase_ != Phase::kRunning) {
    LogWarn("{} again: shutdown already in progress", why);
    return;
  }
  LogInfo("{}: shutting down (stop accepting, tell clients, close sessions, flush)", why);
  phase_ = Phase::kDraining;
  drain_started_ms_ = NowMs();
  for (auto& [wsi, c] : clients_) {
    SendEvent(c.get(), "error",
              json{{"code", "shutting_down"}, {"message", "the server is shutting down"}});
  }
  std::vector<SessionInfo> live;
  if (manager_) live = manager_->ListSessions();
  for (const SessionInfo& s : live) {
    if (s.closing) continue;
    Status st = manager_->Close(s.run_id);
    if (!st.ok()) LogWarn("close {}: {}", s.run_id, st.ToString());
  }
  ShutdownStep();
}

void Server::ShutdownStep() {
  int64_t elapsed = NowMs() - drain_started_ms_;
  if (phase_ == Phase::kDraining) {
    bool sessions_done =
        !manager_ || (manager_->ListSessions().empty() && manager_->Stats().pending_bytes == 0);
    bool clients_flushed = true;
    for (auto& [wsi, c] : clients_) {
      bool reading = false;
      for (auto& [run, a] : c->attachments)
        if (a->mode != Attachment::kLive) reading = true;
      if (!c->queue.empty() || reading) clients_flushed = false;
    }
    if (!((sessions_done && clients_flushed) || elapsed >= config_.drain_timeout_ms)) return;
    if (!sessions_done) LogWarn("drain timeout: sessions still closing are ended now");
    phase_ = Phase::kClosing;
    for (auto& [wsi, c] : clients_) CloseClient(c.get(), 1001, "server shutting down");
    drain_started_ms_ = NowMs();
    return;
  }
  if (phase_ == Phase::kClosing) {
    if (!clients_.empty() && NowMs() - drain_started_ms_ < 1000) return;
    phase_ = Phase::kDone;
    if (manager_) {
      for (auto& [run, feed] : feeds_) manager_->bus().Unsubscribe(feed->bus_sub);
      manager_->bus().Unsubscribe(published_sub_);
    }
    feeds_.clear();
    if (handles_open_) {
      handles_open_ = false;
      uv_timer_stop(&tick_);
      uv_signal_stop(&sigterm_);
      uv_signal_stop(&sigint_);
      uv_close(reinterpret_cast<uv_handle_t*>(&flush_check_), nullptr);
      uv_close(reinterpret_cast<uv_handle_t*>(&flush_idle_), nullptr);
      uv_close(reinterpret_cast<uv_handle_t*>(&tick_), nullptr);
      uv_close(reinterpret_cast<uv_handle_t*>(&sigterm_), nullptr);
      uv_close(reinterpret_cast<uv_handle_t*>(&sigint_), nullptr);
    }
    if (on_stopped) on_stopped();
    manager_ = nullptr;
    if (ctx_) lws_context_destroy(ctx_);
  }
}

int Server::Finish() {
  if (handles_open_) {
    handles_open_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&flush_check_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&flush_idle_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&tick_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&sigterm_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&sigint_), nullptr);
    uv_run(loop_, UV_RUN_DEFAULT);
  }
  if (ctx_) {
    lws_context_destroy(ctx_);
    uv_run(loop_, UV_RUN_DEFAULT);
  }
  clients_.clear();
  http_.clear();
  return 0;
}

}  // namespace dispatch::host
