// WebSocket wire format: native frames and Socket.IO v4 (see wire.h).
#include "wire.h"

#include <cstdint>
#include <cstring>

#include "util/json_check.h"

namespace dispatch::host {
namespace {

using nlohmann::json;

constexpr json::error_handler_t kReplace = json::error_handler_t::replace;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, kReplace); }

// Appends `s` as a JSON string, byte for byte what Dump(json(s)) gives
// (nlohmann: short escapes for \b \f \n \r \t, \u00xx for other control
// bytes, UTF-8 passed through). Used on the per-event paths, where building
// a json value per string cost more than the rest of the frame. Strings
// that are not valid UTF-8 go through nlohmann for its replacement rules.
void AppendJsonString(std::string& out, std::string_view s) {
  if (!IsValidUtf8(s)) {
    out += Dump(json(std::string(s)));
    return;
  }
  static const char kHex[] = "0123456789abcdef";
  out.reserve(out.size() + s.size() + 2);
  out += '"';
  size_t run = 0;  // start of the bytes not yet copied
  for (size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default: {
        char u[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
        out.append(u, 6);
      }
    }
  }
  out.append(s.data() + run, s.size() - run);
  out += '"';
}

Result<json> ParseJson(std::string_view text) {
  // (A megabyte of '[' would cost nlohmann's parser a deep stack of states
  // and the copies and dumps after it a recursion per level.)
  if (!internal::JsonDepthWithin(text, 64)) return Status::InvalidArgument("JSON nested too deeply");
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::InvalidArgument("malformed JSON");
  return j;
}

// Takes `data` (moved out of the parsed document).
Status FillMessage(InMessage& m, const json& name, json* data) {
  if (!name.is_string() || name.get_ref<const std::string&>().empty())
    return Status::InvalidArgument("\"event\" must be a non-empty string");
  m.event = name.get<std::string>();
  if (m.event.size() > 64) return Status::InvalidArgument("event name too long");
  if (data != nullptr && !data->is_null()) {
    if (!data->is_object()) return Status::InvalidArgument("\"data\" must be an object");
    m.data = std::move(*data);
  }
  return Status::Ok();
}

}  // namespace

json EventToJson(const EventView& e) {
  json j = json::object();
  j["runId"] = std::string(e.run_id);
  j["seq"] = e.seq;
  j["channel"] = std::string(e.channel);
  j["type"] = std::string(e.type);
  switch (e.encoding) {
    case Encoding::kBytes:
      j["payload"] = Base64Encode(e.payload);
      break;
    case Encoding::kJson: {
      json p = internal::ParseJsonWithin(e.payload);
      if (p.is_discarded()) {
        // Never expected (the store validates JSON and its depth; a store
        // written before the depth limit might hold deeper); degrade to bytes.
        j["payload"] = Base64Encode(e.payload);
        j["encoding"] = "bytes";
        j["timestamp"] = e.ts_us / 1000;
        return j;
      }
      j["payload"] = std::move(p);
      break;
    }
    case Encoding::kText:
      j["payload"] = std::string(e.payload);
      break;
  }
  j["encoding"] = std::string(EncodingName(e.encoding));
  j["timestamp"] = e.ts_us / 1000;
  if (!e.id.empty()) j["id"] = std::string(e.id);
  return j;
}


namespace {
constexpr std::string_view kNativeEventPrefix = R"({"event":"run:event","data":)";
}  // namespace

WireEvent::WireEvent(std::string run, int64_t event_seq, bool closing, std::string_view event_json,
                     size_t headroom)
    : WireEvent(std::move(run), event_seq, closing, event_json.size(), headroom,
                [event_json](char* d) { std::memcpy(d, event_json.data(), event_json.size()); }) {}

void WireEvent::Allocate(size_t json_size, size_t headroom) {
  headroom_ = headroom;
  json_off_ = headroom + kNativeEventPrefix.size();
  json_size_ = json_size;
  // Not zero-filled (new char[]): every byte but the headroom is written
  // here or by the caller's fill.
  buf_.reset(new char[json_off_ + json_size + 1]);
  std::memset(buf_.get(), 0, headroom);
  std::memcpy(buf_.get() + headroom, kNativeEventPrefix.data(), kNativeEventPrefix.size());
  buf_[json_off_ + json_size] = '}';
}

std::shared_ptr<const WireEvent> MakeWireEvent(const EventView& e, size_t headroom) {
  std::string run_id(e.run_id);
  bool closes = e.channel == "system:status" && e.type == "closed";
  if (e.encoding == Encoding::kJson) {
    return std::make_shared<const WireEvent>(std::move(run_id), e.seq, closes,
                                             Dump(EventToJson(e)), headroom);
  }
  // Terminal output and input, the bulk of the traffic: written directly
  // (the same object as EventToJson, keys in the same order) without
  // building a tree. Byte payloads are base64-encoded straight into the
  // event's buffer: what comes before and after the payload is built first.
  bool text = e.encoding == Encoding::kText;
  std::string head;
  head.reserve(96 + e.channel.size() + e.id.size() + (text ? e.payload.size() + 16 : 0));
  head += "{\"channel\":";
  AppendJsonString(head, e.channel);
  head += text ? ",\"encoding\":\"text\"" : ",\"encoding\":\"bytes\"";
  if (!e.id.empty()) {
    head += ",\"id\":";
    AppendJsonString(head, e.id);
  }
  std::string tail;
  tail.reserve(96 + e.run_id.size() + e.type.size());
  if (text) {
    head += ",\"payload\":";
    AppendJsonString(head, e.payload);
  } else {
    head += ",\"payload\":\"";
    tail += '"';
  }
  tail += ",\"runId\":";
  AppendJsonString(tail, e.run_id);
  tail += ",\"seq\":";
  tail += std::to_string(e.seq);
  tail += ",\"timestamp\":";
  tail += std::to_string(e.ts_us / 1000);
  tail += ",\"type\":";
  AppendJsonString(tail, e.type);
  tail += '}';
  size_t b64 = text ? 0 : internal::Base64Size(e.payload.size());
  return std::make_shared<const WireEvent>(
      std::move(run_id), e.seq, closes, head.size() + b64 + tail.size(), headroom,
      [&](char* d) {
        std::memcpy(d, head.data(), head.size());
        d += head.size();
        if (!text) d = internal::EncodeBase64(e.payload, d);
        std::memcpy(d, tail.data(), tail.size());
      });
}

Result<InMessage> ParseNativeFrame(std::string_view text) {
  Result<json> j = ParseJson(text);
  if (!j.ok()) return j.status();
  if (!j->is_object()) return Status::InvalidArgument("a frame must be a JSON object");
  InMessage m;
  auto ev = j->find("event");
  if (ev == j->end()) return Status::InvalidArgument("missing \"event\"");
  auto data = j->find("data");
  if (Status s = FillMessage(m, *ev, data == j->end() ? nullptr : &*data); !s.ok()) return s;
  auto id = j->find("id");
  if (id != j->end() && !id->is_null()) {
    // (An id from 2^63 up parses as unsigned and would come back wrapped:
    // the reply would carry another id than the request's.)
    if (!id->is_number_integer() ||
        (id->is_number_unsigned() &&
         id->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))) {
      return Status::InvalidArgument("\"id\" must be an integer from -2^63 to 2^63-1");
    }
    m.id = id->get<int64_t>();
  }
  return m;
}

Result<SioFrame> ParseSioFrame(std::string_view text) {
  SioFrame f;
  if (text.empty()) return Status::InvalidArgument("empty Engine.IO packet");
  switch (text[0]) {
    case '1': f.kind = SioFrame::kClose; return f;
    case '2': f.kind = SioFrame::kPing; return f;
    case '3': f.kind = SioFrame::kPong; return f;
    case '6': f.kind = SioFrame::kNoop; return f;
    case '4': break;
    default: f.kind = SioFrame::kUnsupported; return f;
  }
  std::string_view p = text.substr(1);
  if (p.empty()) return Status::InvalidArgument("empty Socket.IO packet");
  char type = p[0];
  p.remove_prefix(1);
  // Namespace: only "/" is served.
  if (!p.empty() && p[0] == '/') {
    size_t comma = p.find(',');
    std::string_view nsp = p.substr(0, comma);
    if (nsp != "/") return Status::InvalidArgument("unknown namespace");
    p = comma == std::string_view::npos ? std::string_view() : p.substr(comma + 1);
  }
  std::optional<int64_t> id;
  size_t digits = 0;
  while (digits < p.size() && p[digits] >= '0' && p[digits] <= '9') ++digits;
  if (digits > 0) {
    if (digits > 15) return Status::InvalidArgument("ack id too long");
    int64_t v = 0;
    for (size_t i = 0; i < digits; ++i) v = v * 10 + (p[i] - '0');
    id = v;
    p.remove_prefix(digits);
  }
  switch (type) {
    case '0': {
      f.kind = SioFrame::kConnect;
      if (!p.empty()) {
        Result<json> j = ParseJson(p);
        if (!j.ok()) return j.status();
        f.connect_auth = std::move(*j);
      }
      return f;
    }
    case '1': f.kind = SioFrame::kDisconnect; return f;
    case '3': f.kind = SioFrame::kAck; return f;
    case '2': {
      Result<json> j = ParseJson(p);
      if (!j.ok()) return j.status();
      if (!j->is_array() || j->empty())
        return Status::InvalidArgument("an event must be a JSON array [name, data]");
      f.kind = SioFrame::kEvent;
      json* data = j->size() >= 2 ? &(*j)[1] : nullptr;
      if (Status s = FillMessage(f.message, (*j)[0], data); !s.ok()) return s;
      f.message.id = id;
      return f;
    }
    case '5':
    case '6':
      return Status::InvalidArgument("binary Socket.IO packets are not supported; send base64");
    default:
      f.kind = SioFrame::kUnsupported;
      return f;
  }
}

std::string EncodeEventRaw(Transport t, std::string_view name, std::string_view data_json) {
  std::string out;
  out.reserve(data_json.size() + name.size() + 24);
  if (t == Transport::kNative) {
    out += "{\"event\":";
    AppendJsonString(out, name);
    out += ",\"data\":";
    out += data_json;
    out += '}';
  } else {
    out += "42[";
    AppendJsonString(out, name);
    out += ',';
    out += data_json;
    out += ']';
  }
  return out;
}

std::string EncodeEvent(Transport t, std::string_view name, const json& data) {
  return EncodeEventRaw(t, name, Dump(data));
}

std::string EncodeAck(Transport t, int64_t id, const json& data) {
  if (t == Transport::kNative) {
    json j = {{"event", "ack"}, {"id", id}, {"data", data}};
    return Dump(j);
  }
  return "43" + std::to_string(id) + "[" + Dump(data) + "]";
}

std::string EncodeErrorReply(Transport t, int64_t id, std::string_view code,
                             std::string_view message) {
  json err = {{"code", std::string(code)}, {"message", std::string(message)}};
  if (t == Transport::kNative) {
    json j = {{"event", "error"}, {"id", id}, {"data", err}};
    return Dump(j);
  }
  return "43" + std::to_string(id) + "[" + Dump(json{{"error", err}}) + "]";
}

std::string EncodeEvents(Transport t, std::string_view run_id,
                         const std::vector<std::shared_ptr<const WireEvent>>& events,
                         size_t headroom) {
  size_t total = headroom + 96 + run_id.size();
  for (const auto& e : events) total += e->json().size() + 1;
  std::string out;
  out.reserve(total);
  out.append(headroom, '\0');
  bool batch = events.size() != 1;
  out += t == Transport::kNative ? "{\"event\":" : "42[";
  out += batch ? "\"run:event:batch\"" : "\"run:event\"";
  out += t == Transport::kNative ? ",\"data\":" : ",";
  if (batch) {
    out += "{\"runId\":";
    AppendJsonString(out, run_id);
    out += ",\"events\":[";
    for (size_t i = 0; i < events.size(); ++i) {
      if (i) out += ',';
      out += events[i]->json();
    }
    out += "]}";
  } else {
    out += events[0]->json();
  }
  out += t == Transport::kNative ? '}' : ']';
  return out;
}

std::string SioOpenPacket(std::string_view sid, int ping_interval_ms, int ping_timeout_ms,
                          size_t max_payload) {
  json j = {{"sid", std::string(sid)},
            {"upgrades", json::array()},
            {"pingInterval", ping_interval_ms},
            {"pingTimeout", ping_timeout_ms},
            {"maxPayload", max_payload}};
  return "0" + Dump(j);
}

}  // namespace dispatch::host
