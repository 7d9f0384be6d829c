// Names the calling thread (as `top -H`, `ps -L`, gdb and /proc show it), so
// that dispatch's threads can be told apart in the host process: at most 15
// characters, longer names are cut.
#ifndef DISPATCH_LIB_UTIL_THREAD_NAME_H_
#define DISPATCH_LIB_UTIL_THREAD_NAME_H_

#include <pthread.h>

#include <cstring>

namespace dispatch::internal {

inline void SetThreadName(const char* name) {
  char buf[16];
  std::strncpy(buf, name, sizeof buf - 1);
  buf[sizeof buf - 1] = '\0';
  pthread_setname_np(pthread_self(), buf);
}

}  // namespace dispatch::internal

#endif  // DISPATCH_LIB_UTIL_THREAD_NAME_H_
