// Comparing two terminal screens cell by cell, for tests.
#ifndef DISPATCH_TESTS_REPLAY_SCREEN_COMPARE_H_
#define DISPATCH_TESTS_REPLAY_SCREEN_COMPARE_H_

#include <string>

#include "dispatch/screen.h"

namespace dispatch::testing {

// "" when both show the same thing (size, every cell, cursor, title, icon,
// alternate screen, scrollback text); else a description of the first
// difference.
std::string DiffScreens(const TerminalScreen& want, const TerminalScreen& got,
                        bool compare_scrollback = true);

}  // namespace dispatch::testing

#endif  // DISPATCH_TESTS_REPLAY_SCREEN_COMPARE_H_
