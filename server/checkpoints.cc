#include "server/checkpoints.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace halftime::server {
namespace {

absl::Status IoError(absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat("checkpoint: ", what, " ", path, ": ",
                                          std::strerror(errno)));
}

void FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

bool SafeId(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' &&
        c != '_') {
      return false;
    }
  }
  return true;
}

std::atomic<uint64_t> upload_counter{0};

}  // namespace

std::string Sha256Hex(absl::string_view data) { return Sha256::Of(data); }

CheckpointUpload::CheckpointUpload(std::FILE* file, std::string temp_path,
                                   std::string final_path, std::string job_id,
                                   int32_t attempt, int64_t step)
    : file_(file),
      temp_path_(std::move(temp_path)),
      final_path_(std::move(final_path)),
      job_id_(std::move(job_id)),
      attempt_(attempt),
      step_(step) {}

CheckpointUpload::~CheckpointUpload() {
  if (file_ != nullptr) std::fclose(file_);
  if (!finished_) std::remove(temp_path_.c_str());
}

absl::Status CheckpointUpload::Write(absl::string_view data) {
  if (file_ == nullptr) {
    return absl::FailedPreconditionError("checkpoint: upload already ended");
  }
  if (!data.empty() &&
      std::fwrite(data.data(), 1, data.size(), file_) != data.size()) {
    return IoError("cannot write", temp_path_);
  }
  hash_.Update(data);
  bytes_ += static_cast<int64_t>(data.size());
  return absl::OkStatus();
}

absl::StatusOr<CheckpointRecord> CheckpointUpload::Finish(
    const std::string& sha256, int64_t total_bytes) {
  if (file_ == nullptr) {
    return absl::FailedPreconditionError("checkpoint: upload already ended");
  }
  std::string actual = hash_.HexDigest();
  if (total_bytes != bytes_) {
    return absl::DataLossError(
        absl::StrCat("checkpoint of ", job_id_, " at step ", step_,
                     " is truncated or padded: announced ", total_bytes,
                     " bytes, received ", bytes_));
  }
  if (absl::AsciiStrToLower(sha256) != actual) {
    return absl::DataLossError(absl::StrCat(
        "checkpoint of ", job_id_, " at step ", step_, " is corrupt: sha256 ",
        actual, " does not match the announced \"", sha256, "\""));
  }
  if (std::fflush(file_) != 0 || ::fsync(::fileno(file_)) != 0) {
    return IoError("cannot sync", temp_path_);
  }
  std::fclose(file_);
  file_ = nullptr;
  if (std::rename(temp_path_.c_str(), final_path_.c_str()) != 0) {
    return IoError("cannot rename", temp_path_);
  }
  finished_ = true;
  FsyncDir(std::filesystem::path(final_path_).parent_path().string());
  CheckpointRecord record;
  record.job_id = job_id_;
  record.step = step_;
  record.attempt = attempt_;
  record.path = final_path_;
  record.bytes = bytes_;
  record.sha256 = actual;
  return record;
}

absl::StatusOr<std::unique_ptr<CheckpointFiles>> CheckpointFiles::Create(
    const std::string& data_dir) {
  std::string root = (std::filesystem::path(data_dir) / "checkpoints").string();
  std::error_code ec;
  std::filesystem::create_directories(root, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("checkpoint: cannot create ", root, ": ", ec.message()));
  }
  return std::unique_ptr<CheckpointFiles>(new CheckpointFiles(root));
}

absl::StatusOr<std::unique_ptr<CheckpointUpload>> CheckpointFiles::BeginUpload(
    const std::string& job_id, int32_t attempt, int64_t step) {
  if (!SafeId(job_id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("job_id: \"", job_id, "\" is not a job id"));
  }
  std::string dir = (std::filesystem::path(root_) / job_id).string();
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("checkpoint: cannot create ", dir, ": ", ec.message()));
  }
  std::string final_path =
      absl::StrFormat("%s/step-%09d-attempt-%d.ckpt", dir, step, attempt);
  std::string temp_path = absl::StrFormat(
      "%s/.upload-%d-%d.tmp", dir, ::getpid(), upload_counter.fetch_add(1));
  std::FILE* file = std::fopen(temp_path.c_str(), "wb");
  if (file == nullptr) return IoError("cannot create", temp_path);
  return std::unique_ptr<CheckpointUpload>(
      new CheckpointUpload(file, std::move(temp_path), std::move(final_path),
                           job_id, attempt, step));
}

void CheckpointFiles::Remove(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove(path, ec);
}

}  // namespace halftime::server
