// RunSessionManager: implementation in progress (see issue 3). Create fails
// until the manager lands; the headers are stable enough to code against.
#include "dispatch/session_manager.h"

namespace dispatch {

Result<std::unique_ptr<RunSessionManager>> RunSessionManager::Create(const ManagerOptions&) {
  return Status::Internal("RunSessionManager is not implemented yet");
}

}  // namespace dispatch
