// The trainer-event protocol between `halftime-train` and the worker daemon:
// the process's exit codes, the event kinds on its events descriptor, and the
// keys of each event. The engine writes the step and summary objects,
// halftime-train (train/train_command.cc) adds the envelope and writes the
// other events, and the worker (worker/worker.cc) reads them. The step keys
// are also the `--metrics` JSONL fields (docs/design.md, JSONL).
//
// Thread safety: constants only.

#ifndef HALFTIME_ENGINE_EVENTS_H_
#define HALFTIME_ENGINE_EVENTS_H_

namespace halftime::engine::events {

// Exit codes of halftime-train. A job that exits kExitBadInput fails
// permanently (retrying the same spec cannot help); kExitFailure may be
// retried. A stop by signal exits 128 + the signal.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitBadInput = 2;

// Every event is one JSON object per line; this key holds its kind.
inline constexpr char kKind[] = "event";

// Kinds.
inline constexpr char kDevice[] = "device";          // the device probe
inline constexpr char kStep[] = "step";              // one optimizer step
inline constexpr char kCheckpoint[] = "checkpoint";  // a checkpoint written
inline constexpr char kWaiting[] = "waiting";        // for a checkpoint ack
inline constexpr char kFallback[] = "fallback";      // precision fallback
inline constexpr char kDone[] = "done";              // the last event

// Step keys (also the JSONL fields).
inline constexpr char kStepNumber[] = "step";
inline constexpr char kTotalSteps[] = "total_steps";
inline constexpr char kLoss[] = "loss";
inline constexpr char kLossScale[] = "loss_scale";
inline constexpr char kOverflow[] = "overflow";
inline constexpr char kSkippedSteps[] = "skipped_steps";
inline constexpr char kGradNorm[] = "grad_norm";
inline constexpr char kLearningRate[] = "lr";
inline constexpr char kStepSeconds[] = "step_seconds";
inline constexpr char kSamplesPerSecond[] = "samples_per_second";
inline constexpr char kTokensPerSecond[] = "tokens_per_second";
inline constexpr char kModelFlopsPerSecond[] = "model_flops_per_second";
inline constexpr char kPeakMemoryBytes[] = "peak_memory_bytes";
inline constexpr char kWeightBytes[] = "weight_bytes";
inline constexpr char kGradientBytes[] = "gradient_bytes";
inline constexpr char kOptimizerStateBytes[] = "optimizer_state_bytes";
inline constexpr char kParameters[] = "parameters";
inline constexpr char kTrainableParameters[] = "trainable_parameters";
inline constexpr char kEvalLoss[] = "eval_loss";
inline constexpr char kEvalAccuracy[] = "eval_accuracy";
inline constexpr char kPrecision[] = "precision";
inline constexpr char kFallbackNote[] = "fallback";
// At evaluations with eval.prompts: [{"prompt", "completion"}, ...].
inline constexpr char kEvalSamples[] = "eval_samples";

// Checkpoint keys (and kStepNumber).
inline constexpr char kPath[] = "path";

// Done keys. kStatus holds engine::StatusCodeName of the run's status,
// kOkStatus when it succeeded.
inline constexpr char kStatus[] = "status";
inline constexpr char kOkStatus[] = "OK";
inline constexpr char kMessage[] = "message";
inline constexpr char kSummary[] = "summary";

}  // namespace halftime::engine::events

#endif  // HALFTIME_ENGINE_EVENTS_H_
