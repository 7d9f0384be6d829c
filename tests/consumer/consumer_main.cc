// A tiny program built against dispatch the way a user would: it opens an
// in-memory store, appends, reads back and exits 0 on success.
#include <dispatch/dispatch.h>

#include <cstdio>

int main() {
  dispatch::StoreOptions options;
  options.path = ":memory:";
  auto store = dispatch::EventStore::Open(options);
  if (!store.ok()) return 1;
  std::vector<dispatch::NewEvent> events = {{"pty:stdout", "chunk", "hi", dispatch::Encoding::kBytes, "", 0}};
  auto r = (*store)->Append("consumer", events);
  if (!r.ok() || r->last_seq != 1) return 2;
  auto back = (*store)->ReadEvents("consumer", 0);
  if (!back.ok() || back->size() != 1 || (*back)[0].payload != "hi") return 3;
  std::printf("consumer ok: dispatch %s\n", DISPATCH_VERSION_STRING);
  return 0;
}
