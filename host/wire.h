// The wire format of dispatch-host's WebSocket protocol (DESIGN §5), for
// both transports: native frames at /ws ({"event", "data", "id"} JSON
// objects) and Socket.IO v4 over Engine.IO v4's websocket transport at
// /socket.io/ ("42[name, data]" events, "42<id>[…]" with an ack id, "43<id>[…]"
// acks, "2"/"3" ping/pong, "40" connect). Also the JSON form of a stored
// event and base64.
//
// Thread-safety: pure functions; WireEvent is immutable once built and is
// shared between threads and clients by shared_ptr.
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

// An event serialised once for every client that receives it.
struct WireEvent {
  std::string run_id;
  int64_t seq = 0;
  std::string json;  // EventToJson(e).dump()
  bool closes = false;  // system:status/closed: the session ended
  size_t cost() const { return json.size() + 64; }
};
std::shared_ptr<const WireEvent> MakeWireEvent(const EventView& e);

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
