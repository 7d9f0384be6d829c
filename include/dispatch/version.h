// The library version, for programs that check what they linked.
#ifndef DISPATCH_VERSION_H_
#define DISPATCH_VERSION_H_

#define DISPATCH_VERSION_MAJOR 0
#define DISPATCH_VERSION_MINOR 1
#define DISPATCH_VERSION_PATCH 0
#define DISPATCH_VERSION_STRING "0.1.0"

#endif  // DISPATCH_VERSION_H_
