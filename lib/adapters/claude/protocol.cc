// Implementation of the Claude CLI protocol pieces (see protocol.h).
#include "adapters/claude/protocol.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "util/json_check.h"

namespace dispatch::internal::claude {

using nlohmann::json;
using ojson = nlohmann::ordered_json;  // keeps insertion order: lines as the SDKs write them

namespace {

// Dumps `j` as compact JSON; invalid UTF-8 in strings is an error.
template <typename J>
Result<std::string> Dump(const J& j) {
  try {
    return j.dump(-1, ' ', false, J::error_handler_t::strict);
  } catch (const nlohmann::json::exception& e) {
    return Status::InvalidArgument(std::string("not valid UTF-8: ") + e.what());
  }
}

Result<json> ParseObject(std::string_view text, std::string_view what) {
  if (!JsonDepthWithin(text)) {
    return Status::InvalidArgument(std::string(what) + " is nested more than " +
                                   std::to_string(kMaxJsonDepth) + " deep");
  }
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::InvalidArgument(std::string(what) + " must be a JSON object");
  }
  return j;
}

}  // namespace

// ---- LineSplitter ----

void LineSplitter::Feed(std::string_view data, const LineFn& on_line) {
  while (!data.empty()) {
    size_t nl = data.find('\n');
    std::string_view part = data.substr(0, nl == std::string_view::npos ? data.size() : nl);
    // Append what fits under the bound; count the rest as dropped.
    size_t room = buf_.size() < max_ ? max_ - buf_.size() : 0;
    if (part.size() <= room) {
      buf_.append(part);
    } else {
      buf_.append(part.substr(0, room));
      overflow_ += part.size() - room;
    }
    if (nl == std::string_view::npos) return;
    if (!buf_.empty() || overflow_ > 0) {
      on_line(buf_, overflow_ > 0, buf_.size() + overflow_);
    }
    buf_.clear();
    overflow_ = 0;
    data.remove_prefix(nl + 1);
  }
}

void LineSplitter::Finish(const LineFn& on_line) {
  if (!buf_.empty() || overflow_ > 0) on_line(buf_, overflow_ > 0, buf_.size() + overflow_);
  buf_.clear();
  overflow_ = 0;
}

// ---- parsing ----

ParsedLine ParseLine(std::string_view line) {
  ParsedLine p;
  json j;
  if (!JsonDepthWithin(line)) {
    p.error = "nested more than " + std::to_string(kMaxJsonDepth) + " deep";
    return p;
  }
  try {
    j = json::parse(line.begin(), line.end());
  } catch (const json::exception& e) {
    p.error = e.what();
    return p;
  }
  p.json = true;
  if (!j.is_object()) return p;
  p.object = true;
  auto str = [&j](const char* key) -> std::string {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  p.type = str("type");
  p.subtype = str("subtype");
  p.session_id = str("session_id");
  p.request_id = str("request_id");
  if (auto it = j.find("is_error"); it != j.end() && it->is_boolean()) p.is_error = it->get<bool>();
  if (p.type == "control_response") {
    if (auto r = j.find("response"); r != j.end() && r->is_object()) {
      if (auto id = r->find("request_id"); id != r->end() && id->is_string()) {
        p.request_id = id->get<std::string>();
      }
      if (auto st = r->find("subtype"); st != r->end() && st->is_string()) {
        p.subtype = st->get<std::string>();
      }
      if (auto err = r->find("error"); err != r->end() && err->is_string()) {
        p.error = err->get<std::string>();
      }
    }
  } else if (p.type == "control_request") {
    if (auto r = j.find("request"); r != j.end() && r->is_object()) {
      if (auto st = r->find("subtype"); st != r->end() && st->is_string()) {
        p.subtype = st->get<std::string>();
      }
    }
  }
  if (p.type == "result" && p.is_error) {
    if (auto e = j.find("errors"); e != j.end() && e->is_array() && !e->empty() &&
        (*e)[0].is_string()) {
      p.error = (*e)[0].get<std::string>();
    } else {
      p.error = str("result");
    }
  }
  return p;
}

bool IsSafeEventType(std::string_view type) {
  if (type.empty() || type.size() > kMaxChannelBytes) return false;
  for (char c : type) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '/' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// ---- stdin lines ----

Result<std::string> BuildUserLine(std::string_view data, Encoding encoding) {
  ojson content;
  if (encoding == Encoding::kJson) {
    content = ParseJsonWithin<ojson>(data);
    if (content.is_discarded()) {
      return Status::InvalidArgument("claude input: not valid JSON");
    }
    if (!content.is_string() && !content.is_array()) {
      return Status::InvalidArgument(
          "claude input: JSON input must be a string (text) or an array (content blocks)");
    }
  } else {
    content = std::string(data);
  }
  if (content.is_string() && content.get_ref<const std::string&>().empty()) {
    return Status::InvalidArgument("claude input: empty message");
  }
  // Key order as the SDKs write it (and as recorded).
  ojson message = ojson::object();
  message["role"] = "user";
  message["content"] = std::move(content);
  ojson line = ojson::object();
  line["type"] = "user";
  line["message"] = std::move(message);
  line["parent_tool_use_id"] = nullptr;
  line["session_id"] = "";
  auto text = Dump(line);
  if (!text.ok()) return Status::InvalidArgument("claude input: " + text.error().message());
  return *text + "\n";
}

Result<std::string> BuildControlRequest(std::string_view request_id, std::string_view subtype,
                                        std::string_view fields_json) {
  // Key order as the SDKs write it (and as recorded): subtype first.
  ojson request = ojson::object();
  request["subtype"] = std::string(subtype);
  if (!fields_json.empty()) {
    ojson fields = ojson::parse(fields_json.begin(), fields_json.end(), nullptr, false);
    if (fields.is_discarded() || !fields.is_object()) {
      return Status::InvalidArgument("control request fields must be a JSON object");
    }
    for (auto& [k, v] : fields.items()) {
      if (k != "subtype") request[k] = v;
    }
  }
  ojson line = ojson::object();
  line["type"] = "control_request";
  line["request_id"] = std::string(request_id);
  line["request"] = std::move(request);
  auto text = Dump(line);
  if (!text.ok()) return text.status();
  return *text + "\n";
}

Result<std::string> BuildControlResponse(std::string_view request_id,
                                         std::string_view response_json) {
  ojson response = ojson::parse(response_json.begin(), response_json.end(), nullptr, false);
  if (response.is_discarded() || !response.is_object()) {
    return Status::InvalidArgument("control response must be a JSON object");
  }
  ojson inner = ojson::object();
  inner["subtype"] = "success";
  inner["request_id"] = std::string(request_id);
  inner["response"] = std::move(response);
  ojson line = ojson::object();
  line["type"] = "control_response";
  line["response"] = std::move(inner);
  auto text = Dump(line);
  if (!text.ok()) return text.status();
  return *text + "\n";
}

// ---- options and argv ----

namespace {

Status WantString(const json& v, const std::string& key, std::string* out) {
  if (!v.is_string()) return Status::InvalidArgument("claude option '" + key + "' must be a string");
  *out = v.get<std::string>();
  return Status::Ok();
}

// A list of tool names: a JSON array of strings, or one string.
Status WantStringList(const json& v, const std::string& key, std::vector<std::string>* out) {
  out->clear();
  if (v.is_string()) {
    out->push_back(v.get<std::string>());
    return Status::Ok();
  }
  if (!v.is_array()) {
    return Status::InvalidArgument("claude option '" + key + "' must be an array of strings");
  }
  for (const auto& e : v) {
    if (!e.is_string() || e.get_ref<const std::string&>().empty()) {
      return Status::InvalidArgument("claude option '" + key + "' must hold non-empty strings");
    }
    out->push_back(e.get<std::string>());
  }
  return Status::Ok();
}

Status WantInt(const json& v, const std::string& key, int lo, int hi, int* out) {
  if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi) {
    return Status::InvalidArgument("claude option '" + key + "' must be an integer in [" +
                                   std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  *out = static_cast<int>(v.get<int64_t>());
  return Status::Ok();
}

// A flag value that goes into argv as its own word: it must not look like an
// option, or the CLI would read it as one.
Status NotAnOption(const std::string& value, const std::string& key) {
  if (!value.empty() && value[0] == '-') {
    return Status::InvalidArgument("claude option '" + key + "' must not start with '-'");
  }
  if (value.find('\0') != std::string::npos) {
    return Status::InvalidArgument("claude option '" + key + "' must not contain NUL");
  }
  return Status::Ok();
}

}  // namespace

Result<ClaudeOptions> ParseOptions(std::string_view options_json) {
  ClaudeOptions o;
  if (options_json.empty()) return o;
  auto parsed = ParseObject(options_json, "claude options");
  if (!parsed.ok()) return parsed.status();
  for (const auto& [key, v] : parsed->items()) {
    Status s;
    if (key == "bin") {
      s = WantString(v, key, &o.bin);
    } else if (key == "model") {
      s = WantString(v, key, &o.model);
      if (s.ok()) s = NotAnOption(o.model, key);
    } else if (key == "permission_mode") {
      s = WantString(v, key, &o.permission_mode);
      if (s.ok()) s = NotAnOption(o.permission_mode, key);
    } else if (key == "allowed_tools") {
      s = WantStringList(v, key, &o.allowed_tools);
    } else if (key == "disallowed_tools") {
      s = WantStringList(v, key, &o.disallowed_tools);
    } else if (key == "append_system_prompt") {
      s = WantString(v, key, &o.append_system_prompt);
    } else if (key == "max_turns") {
      s = WantInt(v, key, 0, 1000000, &o.max_turns);
    } else if (key == "include_partial_messages") {
      if (!v.is_boolean()) s = Status::InvalidArgument("claude option '" + key + "' must be a bool");
      else o.include_partial_messages = v.get<bool>();
    } else if (key == "mcp_config") {
      s = WantString(v, key, &o.mcp_config);
    } else if (key == "permission_prompt_tool") {
      s = WantString(v, key, &o.permission_prompt_tool);
      if (s.ok()) s = NotAnOption(o.permission_prompt_tool, key);
    } else if (key == "extra_args") {
      s = WantStringList(v, key, &o.extra_args);
    } else if (key == "env") {
      if (!v.is_object()) {
        s = Status::InvalidArgument("claude option 'env' must be an object of strings");
      } else {
        for (const auto& [name, value] : v.items()) {
          if (!value.is_string() || name.empty() || name.find('=') != std::string::npos) {
            s = Status::InvalidArgument("claude option 'env': bad entry '" + name + "'");
            break;
          }
          o.env[name] = value.get<std::string>();
        }
      }
    } else if (key == "close_grace_ms") {
      s = WantInt(v, key, 0, 600000, &o.close_grace_ms);
    } else if (key == "term_grace_ms") {
      s = WantInt(v, key, 0, 600000, &o.term_grace_ms);
    } else {
      s = Status::InvalidArgument("unknown claude option '" + key + "'");
    }
    if (!s.ok()) return s;
  }
  for (const auto& list : {&o.allowed_tools, &o.disallowed_tools}) {
    for (const auto& t : *list) {
      if (t.find(',') != std::string::npos) {
        return Status::InvalidArgument("claude tool names must not contain ','");
      }
    }
  }
  return o;
}

namespace {
std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) {
    if (!out.empty()) out += ',';
    out += s;
  }
  return out;
}
}  // namespace

std::vector<std::string> BuildArgs(const ClaudeOptions& o, std::string_view conversation_id,
                                   bool resume) {
  std::vector<std::string> a = {"-p",           "--output-format", "stream-json",
                                "--input-format", "stream-json",   "--verbose"};
  if (!o.model.empty()) a.insert(a.end(), {"--model", o.model});
  if (!o.permission_mode.empty()) a.insert(a.end(), {"--permission-mode", o.permission_mode});
  if (!o.allowed_tools.empty()) a.insert(a.end(), {"--allowedTools", Join(o.allowed_tools)});
  if (!o.disallowed_tools.empty()) {
    a.insert(a.end(), {"--disallowedTools", Join(o.disallowed_tools)});
  }
  // '=' form: a prompt may start with '-'.
  if (!o.append_system_prompt.empty()) {
    a.push_back("--append-system-prompt=" + o.append_system_prompt);
  }
  if (o.max_turns > 0) a.insert(a.end(), {"--max-turns", std::to_string(o.max_turns)});
  if (!o.mcp_config.empty()) a.push_back("--mcp-config=" + o.mcp_config);
  if (!o.permission_prompt_tool.empty()) {
    a.insert(a.end(), {"--permission-prompt-tool", o.permission_prompt_tool});
  }
  if (o.include_partial_messages) a.push_back("--include-partial-messages");
  a.insert(a.end(), o.extra_args.begin(), o.extra_args.end());
  a.push_back((resume ? "--resume=" : "--session-id=") + std::string(conversation_id));
  return a;
}

std::string ClaudeOptionsToJsonInternal(const ClaudeOptions& o) {
  json j = json::object();
  if (!o.bin.empty()) j["bin"] = o.bin;
  if (!o.model.empty()) j["model"] = o.model;
  if (!o.permission_mode.empty()) j["permission_mode"] = o.permission_mode;
  if (!o.allowed_tools.empty()) j["allowed_tools"] = o.allowed_tools;
  if (!o.disallowed_tools.empty()) j["disallowed_tools"] = o.disallowed_tools;
  if (!o.append_system_prompt.empty()) j["append_system_prompt"] = o.append_system_prompt;
  if (o.max_turns > 0) j["max_turns"] = o.max_turns;
  if (o.include_partial_messages) j["include_partial_messages"] = true;
  if (!o.mcp_config.empty()) j["mcp_config"] = o.mcp_config;
  if (!o.permission_prompt_tool.empty()) j["permission_prompt_tool"] = o.permission_prompt_tool;
  if (!o.extra_args.empty()) j["extra_args"] = o.extra_args;
  if (!o.env.empty()) j["env"] = o.env;
  ClaudeOptions d;
  if (o.close_grace_ms != d.close_grace_ms) j["close_grace_ms"] = o.close_grace_ms;
  if (o.term_grace_ms != d.term_grace_ms) j["term_grace_ms"] = o.term_grace_ms;
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// ---- ids ----

std::string NewUuid() {
  unsigned char b[16];
  bool filled = false;
  int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    filled = ::read(fd, b, sizeof b) == static_cast<ssize_t>(sizeof b);
    ::close(fd);
  }
  if (!filled) {
    std::random_device rd;
    for (auto& c : b) c = static_cast<unsigned char>(rd());
  }
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);  // RFC 4122 variant
  char out[37];
  std::snprintf(out, sizeof out,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                b[15]);
  return out;
}

bool IsUuid(std::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
      return false;
    }
  }
  return true;
}

bool IsUnknownConversationError(std::string_view text) {
  return text.find("No conversation found") != std::string_view::npos;
}

}  // namespace dispatch::internal::claude

namespace dispatch {
std::string ClaudeOptionsToJson(const ClaudeOptions& options) {
  return internal::claude::ClaudeOptionsToJsonInternal(options);
}
}  // namespace dispatch
