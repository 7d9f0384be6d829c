// The umbrella header: everything a program embedding dispatch calls.
// Extension points (custom adapters, store backends) are in dispatch/ext/.
#ifndef DISPATCH_DISPATCH_H_
#define DISPATCH_DISPATCH_H_

#include "dispatch/catalog.h"
#include "dispatch/event.h"
#include "dispatch/event_bus.h"
#include "dispatch/event_store.h"
#include "dispatch/projection.h"
#include "dispatch/recording.h"
#include "dispatch/replay.h"
#include "dispatch/screen.h"
#include "dispatch/session_manager.h"
#include "dispatch/status.h"
#include "dispatch/version.h"

#endif  // DISPATCH_DISPATCH_H_
