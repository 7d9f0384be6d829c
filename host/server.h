// The dispatch-host server: one libuv loop running libwebsockets (HTTP/1.1
// and WebSocket on one port), the HTTP API, the WebSocket protocol of
// DESIGN §5 (native at /ws, Socket.IO v4 at /socket.io/), attach with a
// gap-free backlog-to-live hand-over, bounded per-client queues, auth,
// metrics and graceful shutdown.
//
// Thread-safety: loop-affine. Every method runs on the loop thread given to
// the constructor; store reads for catch-up run on libuv's thread pool and
// report back on the loop. The store must be thread-safe (it is).
#ifndef DISPATCH_HOST_SERVER_H_
#define DISPATCH_HOST_SERVER_H_

#include <uv.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "auth.h"
#include "config.h"
#include "dispatch/event_store.h"
#include "dispatch/session_manager.h"
#include "util/string_map.h"
#include "wire.h"

struct lws;
struct lws_context;
struct lws_vhost;

namespace dispatch::host {

class Server;
struct WsClient;
struct Feed;

// One client's view of one run.
struct Attachment {
  enum Mode { kReading, kLive, kPaused };
  WsClient* client = nullptr;  // valid while alive
  std::string run_id;
  bool viewer = false;
  int64_t from_seq = 1;   // afterSeq + 1
  int64_t mark = 0;       // attach-time high-water mark
  int64_t cursor = 0;     // last seq queued to the client
  bool attached_sent = false;
  bool read_in_flight = false;
  bool alive = true;
  bool retry = false;   // re-read on the next tick (the store had nothing yet)
  int empty_reads = 0;
  Mode mode = kReading;
  // run:attach {screen}: a run:screen is being built (on the thread pool);
  // its seq replaces the backlog up to it.
  bool screen_pending = false;
  bool screen_scrollback = false;
  // Output committed while catching up and not queued yet (counted from
  // seq behind_from on; --slow-client disconnect adds it to the queue).
  int64_t behind_from = 0;
  size_t behind_bytes = 0;
};

// An outgoing WebSocket item: a ready frame, or an event (coalesced with
// following events of the same run into one batch frame when written).
struct OutItem {
  std::string text;
  std::shared_ptr<const WireEvent> event;
  size_t cost() const { return event ? event->cost() : text.size() + 32; }
};

struct WsClient {
  lws* wsi = nullptr;
  Transport transport = Transport::kNative;
  std::string address;
  std::string client_id;
  std::string sid;              // Socket.IO session id
  bool authed = false;
  bool sio_connected = false;   // Socket.IO namespace connect done
  bool close_after_flush = false;
  bool flush_pending = false;   // listed in Server::to_flush_
  int close_code = 1000;
  std::string rx;               // message being reassembled
  bool rx_overflow = false;
  std::deque<OutItem> queue;
  size_t queued_bytes = 0;
  int64_t last_pong_ms = 0;
  std::map<std::string, std::shared_ptr<Attachment>> attachments;
};

// All attachments of one run, fed by the manager's post-commit bus.
struct Feed {
  std::string run_id;
  uint64_t bus_sub = 0;
  int64_t cursor = 0;  // last seq published (or known committed at creation)
  std::vector<std::shared_ptr<Attachment>> atts;
};

struct HttpRequest {
  std::string method;
  std::string path;
  std::map<std::string, std::string> query;
  std::string body;
  std::string address;
  size_t content_length = 0;
  bool expect_body = false;
  bool responded = false;
  bool discard_body = false;  // answered already (413); drop the body, then close
  // Response being written.
  std::string out_headers_extra;
  std::string out_body;
  size_t out_off = 0;
  bool close_after = false;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  bool close = false;
};

struct Metrics {
  std::map<int, int64_t> http_by_status;
  int64_t ws_connections_total = 0;
  int64_t ws_messages_in = 0;
  int64_t ws_frames_out = 0;
  int64_t ws_events_out = 0;
  int64_t ws_bytes_out = 0;
  int64_t slow_client_resyncs = 0;
  int64_t slow_client_disconnects = 0;
  int64_t origin_rejections = 0;
  int64_t catchup_reads = 0;
  int64_t screen_attaches = 0;       // run:screen frames sent
  int64_t screen_snapshots_saved = 0;
  int64_t screen_failures = 0;       // fell back to the events
};

class Server {
 public:
  // Borrowed: loop, store and manager outlive the server.
  Server(Config config, uv_loop_t* loop, EventStore* store, RunSessionManager* manager);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Creates the lws context on the loop and starts listening, signals and
  // timers. Prints the listening address (and a generated key) on stdout.
  Status Start();
  // Begins the graceful shutdown (also what SIGTERM/SIGINT do).
  void BeginShutdown(const char* why);
  // After uv_run returned: finishes lws teardown. Returns the exit code.
  int Finish();
  int port() const { return port_; }

  // Runs on the loop thread when the server has stopped serving, before the
  // lws context is destroyed: RunServe destroys the manager here (it must
  // be destroyed on its loop's thread while the loop still runs).
  std::function<void()> on_stopped;

  // lws glue (public for the C callback).
  int OnCallback(lws* wsi, int reason, void* user, void* in, size_t len);

 private:
  friend struct HttpApi;

  // HTTP.
  int OnHttp(lws* wsi, const char* uri);
  int OnHttpBody(lws* wsi, const char* in, size_t len);
  int OnHttpBodyDone(lws* wsi);
  int OnHttpWriteable(lws* wsi);
  // Returns what the lws callback that answers returns (-1: close).
  int Respond(lws* wsi, HttpRequest& req, HttpResponse resp);
  HttpResponse Route(HttpRequest& req, const std::string& bearer);
  int WriteImmediateResponse(lws* wsi, int status, std::string_view code, std::string_view msg,
                             const std::vector<std::pair<std::string, std::string>>& headers = {});
  int OnConfirmUpgrade(lws* wsi);
  std::string PeerAddress(lws* wsi);

  // API handlers.
  HttpResponse ApiSessions(HttpRequest& req, const std::vector<std::string>& parts);
  HttpResponse ApiWorkspaces(HttpRequest& req, const std::vector<std::string>& parts);
  HttpResponse ApiSettings(HttpRequest& req, const std::vector<std::string>& parts);
  HttpResponse HealthStatus();
  HttpResponse MetricsText();

  // WebSocket.
  int OnWsEstablished(lws* wsi);
  int OnWsReceive(lws* wsi, const char* in, size_t len);
  int OnWsWriteable(lws* wsi);
  // Writes queued frames while the socket takes them (16 at most); false if
  // the connection failed.
  bool WriteQueued(WsClient* c);
  // The check-phase flush of the clients Wake listed (see Wake).
  void FlushPending();
  void OnWsClosed(lws* wsi);
  int SendCloseFrame(lws* wsi, int code);
  void HandleMessage(WsClient* c, InMessage& m);
  void HandleSioFrame(WsClient* c, std::string_view text);
  void SendText(WsClient* c, std::string text, bool force = false);
  void SendEvent(WsClient* c, std::string_view name, const nlohmann::json& data);
  void Reply(WsClient* c, const std::optional<int64_t>& id, const nlohmann::json& data);
  void ReplyError(WsClient* c, const std::optional<int64_t>& id, std::string_view code,
                  std::string_view message, const std::string& run_id = {});
  void ReplyStatus(WsClient* c, const std::optional<int64_t>& id, const Status& s,
                   const std::string& run_id = {});
  void Wake(WsClient* c);
  void CloseClient(WsClient* c, int code, std::string_view reason);

  // Attach machinery.
  void Attach(WsClient* c, const InMessage& m);
  void Detach(WsClient* c, const std::string& run_id);
  Feed* GetOrCreateFeed(const std::string& run_id, Status* error);
  void MaybeDropFeed(const std::string& run_id);
  void OnBusEvent(const std::string& run_id, const EventView& e);
  void Enqueue(Attachment& a, std::shared_ptr<const WireEvent> ev);
  void ScheduleRead(const std::shared_ptr<Attachment>& a);
  void ScheduleScreen(const std::shared_ptr<Attachment>& a);
  void ContinueAttachment(const std::shared_ptr<Attachment>& a, int64_t events_read);
  void OnClientDrained(WsClient* c);
  // How full the queue may get from backlog reads before they pause.
  size_t CatchupLimit() const;
  void OnClientOverflow(Attachment& a);

  // Shutdown.
  void ShutdownStep();
  static void OnSignal(uv_signal_t* h, int signum);
  static void OnTimer(uv_timer_t* t);
  void Tick();

  bool Authorized(const std::string& candidate, const std::string& address);
  int64_t NowMs() const;

  Config config_;
  uv_loop_t* loop_;
  EventStore* store_;
  RunSessionManager* manager_;
  lws_context* ctx_ = nullptr;
  int port_ = 0;
  AuthGuard auth_;
  Metrics metrics_;
  int64_t started_ms_ = 0;

  std::unordered_map<lws*, std::unique_ptr<WsClient>> clients_;
  std::unordered_map<lws*, std::unique_ptr<HttpRequest>> http_;
  // Keyed by run id; looked up by the string_view of an event's run id.
  internal::StringMap<std::unique_ptr<Feed>> feeds_;
  // Last seq the runtime's bus published, per run (a floor for new feeds).
  internal::StringMap<int64_t> published_;
  uint64_t published_sub_ = 0;

  uv_signal_t sigterm_{};
  uv_signal_t sigint_{};
  uv_timer_t tick_{};
  // Queued frames are written in the check phase of the loop iteration that
  // queued them (flush_check_); flush_idle_ keeps the loop from blocking in
  // poll while clients are listed in to_flush_.
  uv_check_t flush_check_{};
  uv_idle_t flush_idle_{};
  std::vector<lws*> to_flush_;
  bool handles_open_ = false;

  enum class Phase { kRunning, kDraining, kClosing, kDone };
  Phase phase_ = Phase::kRunning;
  int64_t drain_started_ms_ = 0;
  int64_t last_ping_ms_ = 0;
};

}  // namespace dispatch::host

#endif  // DISPATCH_HOST_SERVER_H_
