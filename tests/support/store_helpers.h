// Helpers for tests that use a real store in a temp dir.
#ifndef DISPATCH_TESTS_SUPPORT_STORE_HELPERS_H_
#define DISPATCH_TESTS_SUPPORT_STORE_HELPERS_H_

#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "dispatch/event_store.h"
#include "support/temp_dir.h"

namespace dispatch::testing {

inline NewEvent Ev(std::string payload, std::string channel = "pty:stdout",
                   std::string type = "chunk", Encoding enc = Encoding::kBytes, std::string id = {}) {
  NewEvent e;
  e.channel = std::move(channel);
  e.type = std::move(type);
  e.payload = std::move(payload);
  e.encoding = enc;
  e.id = std::move(id);
  return e;
}

inline std::unique_ptr<EventStore> OpenStore(const std::string& path,
                                             Durability d = Durability::kNormal,
                                             bool exclusive = false) {
  StoreOptions o;
  o.path = path;
  o.durability = d;
  o.exclusive = exclusive;
  auto r = EventStore::Open(o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return std::move(r).value();
}

}  // namespace dispatch::testing

#endif  // DISPATCH_TESTS_SUPPORT_STORE_HELPERS_H_
