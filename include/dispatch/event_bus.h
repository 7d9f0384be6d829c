// EventBus: in-process fan-out of committed session events by glob pattern.
//
// The RunSessionManager publishes every event to its bus after the store has
// committed it, in seq order per session. Handlers subscribe with a glob
// pattern over the event's channel and type, for one session or for all:
//
//   "pty:*"                 every pty channel (pty:stdout, pty:stdin, …)
//   "system:status"         the lifecycle channel, every type
//   "system:status/closed"  one channel and type ("channel/type")
//   "*"                     everything
//
// A pattern matches an event when it matches either the channel or the
// string "channel/type". `*` matches any run of characters (including ':'
// and '/'), `?` exactly one, and `\` escapes the next character.
//
// A handler that throws does not stop delivery to the other handlers: the
// bus catches the exception, counts a failure and keeps a dead letter (a copy
// of the event, the handler's name and the error text) in a bounded list.
//
// Thread-safety: thread-safe. Subscribe, Unsubscribe, Publish, counters and
// dead letters may be used from any thread. Handlers run on the thread that
// calls Publish (for the manager's bus: the manager's loop thread), one
// publish at a time; a handler may Subscribe or Unsubscribe (itself included)
// from inside a call, taking effect for the next publish.
#ifndef DISPATCH_EVENT_BUS_H_
#define DISPATCH_EVENT_BUS_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/event.h"
#include "dispatch/export.h"

namespace dispatch {

// True when glob `pattern` matches `text` (`*`, `?`, `\` escapes).
DISPATCH_EXPORT bool GlobMatch(std::string_view pattern, std::string_view text);

// True when `pattern` matches `channel` or "channel/type" (see above).
DISPATCH_EXPORT bool EventPatternMatches(std::string_view pattern, std::string_view channel,
                                         std::string_view type);

// A handler. The view is valid only during the call — copy to keep.
using BusHandler = std::function<void(const EventView&)>;

// Identifies a bus subscription; 0 is never a valid id.
using BusSubscriptionId = uint64_t;

struct BusSubscribeOptions {
  // Only events of this run; empty = every run.
  std::string run_id;
  // A name for counters and dead letters ("ws-fanout", "metrics"…).
  std::string name;
};

// A delivery that failed: the handler threw.
struct DeadLetter {
  Event event;             // a copy of the event
  BusSubscriptionId subscription = 0;
  std::string subscriber;  // BusSubscribeOptions::name
  std::string error;       // what() of the exception, or "unknown exception"
  int64_t ts_us = 0;       // when it failed
};

struct BusCounters {
  int64_t published = 0;      // events published
  int64_t delivered = 0;      // handler calls that returned normally
  int64_t failed = 0;         // handler calls that threw
  int64_t dead_lettered = 0;  // dead letters recorded (including evicted ones)
  int64_t subscriptions = 0;  // live subscriptions now
};

class DISPATCH_EXPORT EventBus {
 public:
  // Keeps at most `max_dead_letters` dead letters; older ones are evicted.
  explicit EventBus(size_t max_dead_letters = 1000);
  ~EventBus();
  EventBus(const EventBus&) = delete;
  EventBus& operator=(const EventBus&) = delete;

  // Adds a handler for events matching `pattern`. Returns its id (never 0).
  // An empty pattern or handler is refused with 0.
  BusSubscriptionId Subscribe(std::string pattern, BusHandler handler,
                              BusSubscribeOptions options = {});
  // Removes a handler. Returns false if the id is unknown. Once it returns
  // (outside a handler) the handler is not running and will not be called.
  bool Unsubscribe(BusSubscriptionId id);

  // Delivers `event` to every matching handler, in subscription order.
  void Publish(const EventView& event);

  BusCounters counters() const;
  // A copy of the dead letters, oldest first.
  std::vector<DeadLetter> DeadLetters() const;
  // Empties the dead-letter list (counters are kept).
  void ClearDeadLetters();

 private:
  struct Rep;
  std::unique_ptr<Rep> rep_;
};

}  // namespace dispatch

#endif  // DISPATCH_EVENT_BUS_H_
