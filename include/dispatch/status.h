// Status and Result<T>: the one error style of dispatch.
//
// Every fallible call returns a [[nodiscard]] Status (no value) or Result<T>
// (a value or a Status), shaped like std::expected. Codes are few and named
// for what the caller can do about them. Nothing in the public API throws.
//
// Thread-safety: Status and Result are plain values; distinct objects may be
// used from different threads freely.
#ifndef DISPATCH_STATUS_H_
#define DISPATCH_STATUS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "dispatch/export.h"

namespace dispatch {

enum class StatusCode : uint8_t {
  kOk = 0,
  kNotFound,         // the run, session, workspace… does not exist
  kInvalidArgument,  // the input is malformed or out of limits; nothing was done
  kConflict,         // optimistic concurrency failed; detail() = actual last seq
  kTruncated,        // the requested range was removed by retention;
                     // detail() = earliest available seq (or position)
  kIOError,          // the disk or the database failed
  kCorruption,       // the stored data is not what dispatch wrote
  kBusy,             // a bound was hit (slow subscriber, full queue); retry later
  kClosed,           // the object was closed
  kTimeout,          // a deadline passed
  kReadOnly,         // the store was opened read-only (or the file is)
  kInternal,         // a bug in dispatch
};

// Returns a stable lower-case name for `code` ("not_found", "conflict", …).
DISPATCH_EXPORT std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] DISPATCH_EXPORT Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message, int64_t detail = 0)
      : code_(code), detail_(detail), message_(std::move(message)) {}

  static Status Ok() { return {}; }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status InvalidArgument(std::string m) {
    return {StatusCode::kInvalidArgument, std::move(m)};
  }
  // A failed expected-seq check; `actual_last_seq` is the run's real last seq.
  static Status Conflict(std::string m, int64_t actual_last_seq) {
    return {StatusCode::kConflict, std::move(m), actual_last_seq};
  }
  // A read below what retention kept; `earliest` is the first available seq.
  static Status Truncated(std::string m, int64_t earliest) {
    return {StatusCode::kTruncated, std::move(m), earliest};
  }
  static Status IOError(std::string m) { return {StatusCode::kIOError, std::move(m)}; }
  static Status Corruption(std::string m) { return {StatusCode::kCorruption, std::move(m)}; }
  static Status Busy(std::string m) { return {StatusCode::kBusy, std::move(m)}; }
  static Status Closed(std::string m) { return {StatusCode::kClosed, std::move(m)}; }
  static Status Timeout(std::string m) { return {StatusCode::kTimeout, std::move(m)}; }
  static Status ReadOnly(std::string m) { return {StatusCode::kReadOnly, std::move(m)}; }
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  explicit operator bool() const { return ok(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // Code-specific number: kConflict → the actual last seq; kTruncated → the
  // earliest available seq (or position for whole-store reads); else 0.
  int64_t detail() const { return detail_; }
  int64_t actual_last_seq() const { return detail_; }
  int64_t earliest_available() const { return detail_; }

  // "conflict: expected last seq 3, run is at 5"; "ok" when ok.
  std::string ToString() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  int64_t detail_ = 0;
  std::string message_;
};

// A value or an error. Access the value only when ok(); doing otherwise is a
// programming error (checked by an assertion in debug builds).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}           // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}    // NOLINT: implicit by design

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  // The error; an OK Status when ok().
  Status status() const { return ok() ? Status() : std::get<1>(v_); }
  const Status& error() const& { return std::get<1>(v_); }

  template <typename U>
  T value_or(U&& fallback) const& {
    return ok() ? value() : static_cast<T>(std::forward<U>(fallback));
  }

 private:
  std::variant<T, Status> v_;
};

}  // namespace dispatch

#endif  // DISPATCH_STATUS_H_
