// What the CLI knows about where its output goes.
//
// Thread-safety: DetectTerminal is thread-safe.
#ifndef HALFTIME_CLIENT_TERMINAL_H_
#define HALFTIME_CLIENT_TERMINAL_H_

namespace halftime {

struct TerminalInfo {
  // Output is a terminal: `watch` redraws a progress line in place.
  bool interactive = false;
  // Width in columns; 0 when unknown (tables then fit 120 columns).
  int columns = 0;

  // Width tables and progress lines fit into.
  int Width() const { return columns > 0 ? columns : 120; }
};

// Inspects `fd` (usually STDOUT_FILENO): isatty, the window size, else the
// COLUMNS environment variable.
TerminalInfo DetectTerminal(int fd);

}  // namespace halftime

#endif  // HALFTIME_CLIENT_TERMINAL_H_
