// The wire format of dispatch-host's WebSocket protocol (DESIGN §5), for
// both transports: native frames at /ws ({"event", "data", "id"} JSON
// objects) and Socket.IO v4 over Engine.IO v4's websocket transport at
// /socket.io/ ("42[name, data]" events, "42<id>[…]" with an ack id, "43<id>[…]"
// acks, "2"/"3" ping/pong, "40" connect). Also the JSON form of a stored
// event and base64.
//
// Thread-safety: pure functions. A WireEvent's JSON and frame are immutable
// once built and shared between threads and clients by shared_ptr; only the
// headroom in front of the frame is written, by the one thread that writes
// to the sockets (the host's loop), one write at a time.
#ifndef DISPATCH_HOST_WIRE_H_
#define DISPATCH_HOST_WIRE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "dispatch/event.h"
#include "dispatch/status.h"
#include "util/text_codec.h"

namespace dispatch::host {

using internal::Base64Encode;
using internal::IsValidUtf8;
// Standard alphabet, padding optional; url-safe characters also accepted.
// nullopt on any other character.
inline std::optional<std::string> Base64Decode(std::string_view text) {
  return internal::Base64Decode(text, /*url_safe_too=*/true);
}

// The JSON value of an event on the wire: {runId, seq, channel, type,
// payload, encoding, timestamp (ms), id?}. `bytes` payloads are base64,
// `json` payloads are embedded as JSON values, `text` as strings (invalid
// UTF-8 is replaced; use `bytes` for byte-exact terminal output).
nlohmann::json EventToJson(const EventView& e);

// An event serialised once for every client that receives it, in one
// buffer laid out as the native transport's run:event frame:
//   [headroom][{"event":"run:event","data":][event JSON][}]
// json() is the event's JSON (what batches and Socket.IO frames embed);
// NativeFrame() is the whole single-event frame, which a writer sends as it
// is, with no copy per client. The `headroom` bytes in front of it are the
// writer's: lws_write puts the WebSocket header there, so they change with
// every write (on the loop thread, one write at a time), the frame never.
class WireEvent {
 public:
  // `event_json` is the event's JSON; the frame is built around it.
  WireEvent(std::string run, int64_t event_seq, bool closing, std::string_view event_json,
            size_t headroom);
  // The same with the event's JSON written by `fill` into `json_size`
  // uninitialised bytes (so a large payload is encoded in place).
  template <typename Fill>
  WireEvent(std::string run, int64_t event_seq, bool closing, size_t json_size, size_t headroom,
            Fill&& fill)
      : run_id(std::move(run)), seq(event_seq), closes(closing) {
    Allocate(json_size, headroom);
    fill(buf_.get() + json_off_);
  }

  std::string run_id;
  int64_t seq = 0;
  bool closes = false;  // system:status/closed: the session ended

  std::string_view json() const { return {buf_.get() + json_off_, json_size_}; }
  size_t headroom() const { return headroom_; }
  // The native run:event frame; headroom() writable bytes precede it.
  char* NativeFrame() const { return buf_.get() + headroom_; }
  size_t NativeFrameSize() const { return json_off_ - headroom_ + json_size_ + 1; }
  size_t cost() const { return json_size_ + 64; }

 private:
  void Allocate(size_t json_size, size_t headroom);

  std::unique_ptr<char[]> buf_;
  size_t headroom_ = 0;
  size_t json_off_ = 0;
  size_t json_size_ = 0;
};
// `headroom`: bytes reserved in front of the native frame (LWS_PRE).
std::shared_ptr<const WireEvent> MakeWireEvent(const EventView& e, size_t headroom = 0);

enum class Transport { kNative, kSocketIo };

// One decoded client message.
struct InMessage {
  std::string event;
  nlohmann::json data = nlohmann::json::object();
  std::optional<int64_t> id;
};

// What a Socket.IO/Engine.IO text frame turned out to be.
struct SioFrame {
  enum Kind { kPing, kPong, kClose, kConnect, kDisconnect, kEvent, kAck, kNoop, kUnsupported };
  Kind kind = kNoop;
  nlohmann::json connect_auth;  // kConnect: the auth object (or null)
  InMessage message;            // kEvent
};

// Native frame → message. InvalidArgument with a message for the client.
Result<InMessage> ParseNativeFrame(std::string_view text);
// Engine.IO/Socket.IO frame (default namespace only) → what it is.
Result<SioFrame> ParseSioFrame(std::string_view text);

// Outgoing frames.
std::string EncodeEvent(Transport t, std::string_view name, const nlohmann::json& data);
// Same, with `data_json` already serialised.
std::string EncodeEventRaw(Transport t, std::string_view name, std::string_view data_json);
std::string EncodeAck(Transport t, int64_t id, const nlohmann::json& data);
// An error reply to request `id` (native: {"event":"error","id":N,...};
// Socket.IO: the ack carries {"error": {code, message}}).
std::string EncodeErrorReply(Transport t, int64_t id, std::string_view code,
                             std::string_view message);
// A run:event frame, or a run:event:batch frame when `events` has more than
// one. The result starts with `headroom` zero bytes (room for the WebSocket
// header, so the frame can be written without another copy).
std::string EncodeEvents(Transport t, std::string_view run_id,
                         const std::vector<std::shared_ptr<const WireEvent>>& events,
                         size_t headroom = 0);

// Engine.IO open packet for a websocket-only session.
std::string SioOpenPacket(std::string_view sid, int ping_interval_ms, int ping_timeout_ms,
                          size_t max_payload);

}  // namespace dispatch::host

#endif  // DISPATCH_HOST_WIRE_H_
