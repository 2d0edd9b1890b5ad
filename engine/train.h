// The training engine's entry points.
//
//   TrainOptions options;             // engine/options.h
//   options.precision = Precision::kBf16Mixed;
//   TrainCallbacks callbacks;
//   callbacks.on_step = [](const StepReport& r) { ... };
//   TrainSummary summary;
//   TrainStatus status = Train(options, callbacks, &summary);
//
// Train() never throws: libtorch and standard exceptions become a
// TrainStatus. It sets torch's global intra-op thread count and, on the CPU,
// installs a process-wide counting allocator for peak-memory accounting, so
// run one Train() per process at a time (halftime-train runs one job per
// process).
//
// Thread safety: Train() runs on the calling thread; the callbacks are
// invoked on that thread. The cancel flag may be set from any thread.

#ifndef HALFTIME_ENGINE_TRAIN_H_
#define HALFTIME_ENGINE_TRAIN_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "engine/options.h"
#include "engine/report.h"
#include "engine/status.h"

namespace halftime::engine {

struct TrainCallbacks {
  // Called after every optimizer step (skipped ones included).
  std::function<void(const StepReport&)> on_step;
  // Called at each evaluation, before that step's on_step, with the ids
  // the model generated (greedy) for options.eval.prompt_ids[index].
  std::function<void(int64_t step, int index,
                     const std::vector<int32_t>& completion)>
      on_eval_sample;
  // Called after each checkpoint is written, with its path and step.
  std::function<void(const std::string& path, int64_t step)> on_checkpoint;
  // Checked between steps; when it reads true, Train() writes a checkpoint
  // (if out_dir is set) and returns kCancelled. Not owned; may be null.
  const std::atomic<bool>* cancel = nullptr;
};

// Runs `options.steps` optimizer steps (from the resume checkpoint's step if
// resume_from is set) and fills `*summary` (may be null). With out_dir set,
// writes out_dir/checkpoints/step-NNNNNNNN.ckpt every checkpoint.every_steps
// and at the end, then out_dir/model.safetensors (fp32 weights),
// out_dir/model.pt (TorchScript models) and out_dir/summary.json.
// Errors: kInvalidInput (bad options/files, naming the field or path),
// kUnsupported (precision the device cannot run natively), kTrainingFailed,
// kCancelled, kFallbackRequested (see status.h).
TrainStatus Train(const TrainOptions& options, const TrainCallbacks& callbacks,
                  TrainSummary* summary);

// Builds the model exactly as Train() would (seed, init_from) and writes its
// initial weights as fp32 safetensors to `path`, without training. Used by
// the parity tests and to hand a starting point to other tools.
TrainStatus ExportInitialWeights(const TrainOptions& options,
                                 const std::string& path);

}  // namespace halftime::engine

#endif  // HALFTIME_ENGINE_TRAIN_H_
