// Symbol visibility for the dispatch library. Internal: include the public
// headers, not this one directly.
#ifndef DISPATCH_EXPORT_H_
#define DISPATCH_EXPORT_H_

#if defined(DISPATCH_SHARED)
#if defined(_WIN32)
#if defined(DISPATCH_BUILDING)
#define DISPATCH_EXPORT __declspec(dllexport)
#else
#define DISPATCH_EXPORT __declspec(dllimport)
#endif
#else
#define DISPATCH_EXPORT __attribute__((visibility("default")))
#endif
#else
#define DISPATCH_EXPORT
#endif

#endif  // DISPATCH_EXPORT_H_
