// The result type of every public entry point of the training engine.
//
// The engine never throws across its public API: libtorch errors and standard
// exceptions are caught at the boundary and turned into a TrainStatus whose
// message names the offending option, file or tensor.
//
// Thread safety: plain value type.

#ifndef HALFTIME_ENGINE_STATUS_H_
#define HALFTIME_ENGINE_STATUS_H_

#include <string>
#include <utility>

namespace halftime::engine {

struct TrainStatus {
  enum Code {
    kOk = 0,
    // Bad options or input files (maps to exit code 2 / INVALID_ARGUMENT).
    kInvalidInput,
    // The device cannot run what was asked (e.g. fp16 on a CPU).
    kUnsupported,
    // Training itself failed (divergence, scale floor, I/O, libtorch error).
    kTrainingFailed,
    // The cancellation flag was set; a checkpoint was written if out_dir set.
    kCancelled,
    // The loss scale sat at min_scale for min_scale_patience overflows and
    // on_min_scale is fallback: the caller should resume from the last
    // checkpoint (TrainSummary::last_checkpoint) in fallback_precision.
    kFallbackRequested,
  };

  Code code = kOk;
  std::string message;

  static TrainStatus Ok() { return {}; }
  static TrainStatus Error(Code code, std::string message) {
    TrainStatus s;
    s.code = code;
    s.message = std::move(message);
    return s;
  }
  bool ok() const { return code == kOk; }
};

// "OK", "INVALID_INPUT", ... for logs.
const char* StatusCodeName(TrainStatus::Code code);

}  // namespace halftime::engine

#endif  // HALFTIME_ENGINE_STATUS_H_
