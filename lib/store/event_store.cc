// Non-virtual conveniences of the EventStore interface.
#include "dispatch/event_store.h"

namespace dispatch {

Result<std::vector<Event>> EventStore::ReadEvents(std::string_view run_id, int64_t after_seq,
                                                  size_t limit) {
  std::vector<Event> out;
  Result<ReadSummary> r = Read(
      run_id, after_seq,
      [&out](const EventView& v) {
        out.push_back(v.ToEvent());
        return true;
      },
      ReadOptions{limit});
  if (!r.ok()) return r.status();
  return out;
}

}  // namespace dispatch
