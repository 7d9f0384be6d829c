// One-line logging for dispatch-host: every record is a single line on
// stderr, "2026-01-02T03:04:05.678Z INFO  message", with control characters
// in the message escaped so that a client-supplied string can never forge or
// split a log line.
//
// Thread-safety: thread-safe (each record is written with one write(2)).
#ifndef DISPATCH_HOST_LOG_H_
#define DISPATCH_HOST_LOG_H_

#include <fmt/format.h>

#include <optional>
#include <string_view>
#include <utility>

namespace dispatch::host {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// "debug", "info", "warn", "error"; nullopt for anything else.
std::optional<LogLevel> ParseLogLevel(std::string_view name);
void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);
// Writes one record (if `level` is enabled).
void LogLine(LogLevel level, std::string_view message);

template <typename... A>
void LogAt(LogLevel level, fmt::format_string<A...> f, A&&... args) {
  if (!LogEnabled(level)) return;
  LogLine(level, fmt::format(f, std::forward<A>(args)...));
}
template <typename... A>
void LogDebug(fmt::format_string<A...> f, A&&... a) { LogAt(LogLevel::kDebug, f, std::forward<A>(a)...); }
template <typename... A>
void LogInfo(fmt::format_string<A...> f, A&&... a) { LogAt(LogLevel::kInfo, f, std::forward<A>(a)...); }
template <typename... A>
void LogWarn(fmt::format_string<A...> f, A&&... a) { LogAt(LogLevel::kWarn, f, std::forward<A>(a)...); }
template <typename... A>
void LogError(fmt::format_string<A...> f, A&&... a) { LogAt(LogLevel::kError, f, std::forward<A>(a)...); }

}  // namespace dispatch::host

#endif  // DISPATCH_HOST_LOG_H_
