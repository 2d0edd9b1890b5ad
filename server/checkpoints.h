// Checkpoint files under DATA_DIR/checkpoints/JOB/. An upload streams into
// a temporary file while hashing it (SHA-256); Finish verifies the size and
// hash the uploader announced, fsyncs and renames the file into place, so a
// checkpoint file is either complete and verified or absent. Which file is
// a job's latest checkpoint is recorded in the store by the job manager.
#ifndef HALFTIME_SERVER_CHECKPOINTS_H_
#define HALFTIME_SERVER_CHECKPOINTS_H_

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/sha256.h"
#include "server/store.h"

namespace halftime::server {

// Largest chunk of a checkpoint transfer, bytes.
inline constexpr int64_t kMaxCheckpointChunkBytes = 1 << 20;

// Returns the lowercase hex SHA-256 of `data`.
std::string Sha256Hex(absl::string_view data);

// One checkpoint upload into a temporary file.
//
// Thread-safety: thread-compatible (one reactor drives it).
class CheckpointUpload {
 public:
  ~CheckpointUpload();  // removes the temporary file unless finished

  CheckpointUpload(const CheckpointUpload&) = delete;
  CheckpointUpload& operator=(const CheckpointUpload&) = delete;

  // Appends `data`. Errors: INTERNAL on I/O failure.
  absl::Status Write(absl::string_view data);

  // Verifies that the file holds `total_bytes` bytes hashing to `sha256`
  // (hex, any case), then fsyncs and renames it to its final path. Errors:
  // DATA_LOSS on a size or hash mismatch (the temporary file is removed),
  // INTERNAL on I/O failure. On success returns the record (path, size,
  // hash, step, attempt) to store.
  absl::StatusOr<CheckpointRecord> Finish(const std::string& sha256,
                                          int64_t total_bytes);

  int64_t bytes_written() const { return bytes_; }

 private:
  friend class CheckpointFiles;
  CheckpointUpload(std::FILE* file, std::string temp_path,
                   std::string final_path, std::string job_id, int32_t attempt,
                   int64_t step);

  std::FILE* file_;
  const std::string temp_path_;
  const std::string final_path_;
  const std::string job_id_;
  const int32_t attempt_;
  const int64_t step_;
  int64_t bytes_ = 0;
  bool finished_ = false;
  Sha256 hash_;
};

// Reads a stored checkpoint back in chunks, hashing as it goes, and checks
// it against its record before handing out the last chunk: bytes that rot
// on the scheduler's disk are never resumed from.
//
// Thread-safety: thread-compatible (one reactor drives it).
class CheckpointReader {
 public:
  // DATA_LOSS when the file is missing or unreadable.
  static absl::StatusOr<std::unique_ptr<CheckpointReader>> Open(
      const CheckpointRecord& record);
  ~CheckpointReader();

  CheckpointReader(const CheckpointReader&) = delete;
  CheckpointReader& operator=(const CheckpointReader&) = delete;

  // Replaces `*data` with the next at most `max_bytes` bytes and sets
  // `*last` when they end the recorded size. Before the last chunk is
  // returned the whole file is verified. Errors: DATA_LOSS when the file is
  // shorter than its record, or longer, or hashes to another SHA-256 (the
  // message names the job, the step and both hashes).
  absl::Status Next(int64_t max_bytes, std::string* data, bool* last);

  const CheckpointRecord& record() const { return record_; }

 private:
  CheckpointReader(std::FILE* file, CheckpointRecord record);

  std::FILE* file_;
  const CheckpointRecord record_;
  int64_t read_ = 0;
  Sha256 hash_;
};

// The checkpoint directory.
//
// Thread-safety: thread-safe (every call works on distinct files).
class CheckpointFiles {
 public:
  // Creates DATA_DIR/checkpoints when missing and removes the temporary
  // files of uploads that a crashed scheduler left behind. Errors: INTERNAL.
  static absl::StatusOr<std::unique_ptr<CheckpointFiles>> Create(
      const std::string& data_dir);

  // Starts an upload of `job_id`'s checkpoint at `step` by `attempt`.
  // Errors: INVALID_ARGUMENT for a job id unfit for a path, INTERNAL on
  // I/O failure.
  absl::StatusOr<std::unique_ptr<CheckpointUpload>> BeginUpload(
      const std::string& job_id, int32_t attempt, int64_t step);

  // Deletes a superseded checkpoint file; a missing file is not an error.
  void Remove(const std::string& path);

  const std::string& root() const { return root_; }

 private:
  explicit CheckpointFiles(std::string root) : root_(std::move(root)) {}
  const std::string root_;
};

}  // namespace halftime::server

#endif  // HALFTIME_SERVER_CHECKPOINTS_H_
