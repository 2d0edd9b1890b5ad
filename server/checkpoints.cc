#include "server/checkpoints.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
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

// The status of a failed file operation on `path`, from errno: a full disk,
// a file-size limit or a quota is RESOURCE_EXHAUSTED naming the scheduler's
// storage (the checkpoint was not stored; the job keeps its previous one),
// anything else INTERNAL.
absl::Status IoError(absl::string_view what, const std::string& path) {
  const int error = errno;
  std::string text =
      absl::StrCat("checkpoint: ", what, " ", path, ": ", std::strerror(error));
  if (error == ENOSPC || error == EFBIG || error == EDQUOT) {
    return absl::ResourceExhaustedError(
        absl::StrCat("scheduler storage is full: ", text));
  }
  return absl::InternalError(text);
}

// Temporary files of uploads cut short by a crash: ".upload-PID-N.tmp" of a
// process that is gone.
bool AbandonedUpload(const std::filesystem::path& file) {
  const std::string name = file.filename().string();
  int pid = 0;
  if (std::sscanf(name.c_str(), ".upload-%d-", &pid) != 1 || name.size() < 4 ||
      name.compare(name.size() - 4, 4, ".tmp") != 0) {
    return false;
  }
  return pid > 0 && pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH;
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
    // The announced value is the uploader's: shown escaped and cut short.
    constexpr size_t kShown = 64;
    return absl::DataLossError(absl::StrCat(
        "checkpoint of ", job_id_, " at step ", step_, " is corrupt: sha256 ",
        actual, " does not match the announced \"",
        absl::CHexEscape(absl::string_view(sha256).substr(0, kShown)),
        sha256.size() > kShown ? "...\"" : "\""));
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

absl::StatusOr<std::unique_ptr<CheckpointReader>> CheckpointReader::Open(
    const CheckpointRecord& record) {
  std::FILE* file = std::fopen(record.path.c_str(), "rb");
  if (file == nullptr) {
    return absl::DataLossError(
        absl::StrCat("checkpoint of ", record.job_id, " at step ", record.step,
                     " is missing on the scheduler (", record.path, ": ",
                     std::strerror(errno), ")"));
  }
  return std::unique_ptr<CheckpointReader>(new CheckpointReader(file, record));
}

CheckpointReader::CheckpointReader(std::FILE* file, CheckpointRecord record)
    : file_(file), record_(std::move(record)) {}

CheckpointReader::~CheckpointReader() { std::fclose(file_); }

absl::Status CheckpointReader::Next(int64_t max_bytes, std::string* data,
                                    bool* last) {
  const int64_t left = record_.bytes - read_;
  data->resize(static_cast<size_t>(std::max<int64_t>(
      0, std::min<int64_t>(left, std::max<int64_t>(max_bytes, 1)))));
  if (!data->empty()) {
    const size_t n = std::fread(data->data(), 1, data->size(), file_);
    if (n != data->size()) {
      return absl::DataLossError(absl::StrCat(
          "checkpoint of ", record_.job_id, " at step ", record_.step,
          " is corrupt on the scheduler: ", record_.path, " is shorter than ",
          "the ", record_.bytes, " bytes recorded"));
    }
    hash_.Update(*data);
    read_ += static_cast<int64_t>(n);
  }
  *last = read_ == record_.bytes;
  if (!*last) return absl::OkStatus();
  if (std::fgetc(file_) != EOF) {
    return absl::DataLossError(absl::StrCat(
        "checkpoint of ", record_.job_id, " at step ", record_.step,
        " is corrupt on the scheduler: ", record_.path, " is longer than ",
        "the ", record_.bytes, " bytes recorded"));
  }
  const std::string actual = hash_.HexDigest();
  if (actual != absl::AsciiStrToLower(record_.sha256)) {
    return absl::DataLossError(
        absl::StrCat("checkpoint of ", record_.job_id, " at step ",
                     record_.step, " is corrupt on the scheduler: its sha256 ",
                     actual, " does not match the recorded ", record_.sha256));
  }
  return absl::OkStatus();
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
  // A scheduler killed during an upload leaves its temporary file behind.
  for (auto it = std::filesystem::recursive_directory_iterator(root, ec);
       !ec && it != std::filesystem::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->is_regular_file(ec) && AbandonedUpload(it->path())) {
      std::filesystem::remove(it->path(), ec);
      ec.clear();
    }
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
