// Human-readable quantities shared by the CLI and the scheduler's messages.
//
// Thread safety: pure functions; safe from any thread.

#ifndef HALFTIME_COMMON_FORMAT_H_
#define HALFTIME_COMMON_FORMAT_H_

#include <cstdint>
#include <string>

namespace halftime {

// "512 B", "1.2 GiB" (binary units, one decimal).
std::string FormatBytes(int64_t bytes);

}  // namespace halftime

#endif  // HALFTIME_COMMON_FORMAT_H_
