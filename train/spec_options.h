// Maps a resolved v1::JobSpec (protobuf) onto the training engine's plain
// TrainOptions, and confines the spec's file paths to a data root.
//
// Thread-safety: pure functions, thread-safe.
#ifndef HALFTIME_TRAIN_SPEC_OPTIONS_H_
#define HALFTIME_TRAIN_SPEC_OPTIONS_H_

#include <string>

#include "absl/status/statusor.h"
#include "engine/options.h"
#include "halftime/v1/job_spec.pb.h"

namespace halftime {

// Converts a spec with defaults applied (common/spec.h) into engine options.
// Never fails for a spec that passed ValidateJobSpec.
engine::TrainOptions TrainOptionsFromSpec(const v1::JobSpec& spec);

// Resolves `path` (from the spec) against `root` and checks that the result
// stays inside `root` once symlinks and ".." are resolved. An empty `root`
// means "no confinement": the path is returned unchanged. PERMISSION_DENIED
// names the field and the root when the path escapes it.
absl::StatusOr<std::string> ConfinePath(const std::string& field,
                                        const std::string& path,
                                        const std::string& root);

// Applies ConfinePath to every file the spec names (data.path,
// model.torchscript, model.init_from), rewriting them in `options`.
absl::Status ConfineOptionPaths(const std::string& root,
                                engine::TrainOptions* options);

}  // namespace halftime

#endif  // HALFTIME_TRAIN_SPEC_OPTIONS_H_
