#include "client/terminal.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdlib>

#include "absl/strings/numbers.h"

namespace halftime {

TerminalInfo DetectTerminal(int fd) {
  TerminalInfo info;
  info.interactive = ::isatty(fd) == 1;
  struct winsize size {};
  if (info.interactive && ::ioctl(fd, TIOCGWINSZ, &size) == 0 &&
      size.ws_col > 0) {
    info.columns = size.ws_col;
    return info;
  }
  int columns = 0;
  const char* env = std::getenv("COLUMNS");
  if (env != nullptr && absl::SimpleAtoi(env, &columns) && columns > 0) {
    info.columns = columns;
  } else if (info.interactive) {
    info.columns = 80;
  }
  return info;
}

}  // namespace halftime
