// Sha256: incremental SHA-256 with a lowercase hex digest, the checksum the
// checkpoint transfers carry (worker uploads, scheduler verifies and serves).
//
// Thread-safety: an instance is not thread-safe; use one per stream.
#ifndef HALFTIME_COMMON_SHA256_H_
#define HALFTIME_COMMON_SHA256_H_

#include <string>

#include "absl/strings/string_view.h"

namespace halftime {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  // Adds `data` to the digest.
  void Update(absl::string_view data);
  // Returns the hex digest of everything added; call once, at the end.
  std::string HexDigest();

  // The hex digest of `data` in one call.
  static std::string Of(absl::string_view data);

 private:
  struct State;
  State* state_;
};

}  // namespace halftime

#endif  // HALFTIME_COMMON_SHA256_H_
