#include "worker/scheduler_link.h"

#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/sha256.h"
#include "common/status.h"
#include "worker/transfer_watchdog.h"

namespace halftime {
namespace {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

constexpr std::size_t kChunkBytes = 1 << 20;
// Checkpoint transfers have no fixed deadline (their size is open-ended):
// they fail once no chunk has moved for kTransferStall, within this cap.
constexpr auto kTransferStall = std::chrono::seconds(60);
constexpr auto kTransferCap = std::chrono::hours(6);

void Log(const std::string& line) { std::cerr << "worker: " << line << "\n"; }

class GrpcSchedulerStream : public SchedulerStream {
 public:
  GrpcSchedulerStream(v1::WorkerGateway::Stub* stub,
                      const std::function<void(grpc::ClientContext*)>& decorate,
                      ChannelSecurity security)
      : security_(security) {
    PrepareGatewayContext(&context_, std::chrono::milliseconds(0), decorate);
    stream_ = stub->Connect(&context_);
  }

  bool Write(const v1::WorkerMessage& message) override {
    return stream_->Write(message);
  }
  bool Read(v1::SchedulerMessage* message) override {
    return stream_->Read(message);
  }
  void Cancel() override { context_.TryCancel(); }
  absl::Status Finish() override {
    absl::Status status = FromGrpcStatus(stream_->Finish());
    if (status.ok()) return status;
    return absl::Status(status.code(),
                        DescribeSchedulerError(status, security_));
  }

 private:
  const ChannelSecurity security_;
  grpc::ClientContext context_;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::WorkerMessage, v1::SchedulerMessage>>
      stream_;
};

}  // namespace

void PrepareGatewayContext(
    grpc::ClientContext* context, std::chrono::milliseconds deadline,
    const std::function<void(grpc::ClientContext*)>& decorate) {
  if (deadline.count() > 0) {
    context->set_deadline(std::chrono::system_clock::now() + deadline);
  }
  if (decorate) decorate(context);
}

GrpcSchedulerLink::GrpcSchedulerLink(
    std::shared_ptr<grpc::Channel> channel,
    std::function<void(grpc::ClientContext*)> decorate,
    ChannelSecurity security)
    : channel_(std::move(channel)),
      stub_(v1::WorkerGateway::NewStub(channel_)),
      decorate_(std::move(decorate)),
      security_(security) {}

std::unique_ptr<SchedulerStream> GrpcSchedulerLink::Connect() {
  return std::make_unique<GrpcSchedulerStream>(stub_.get(), decorate_,
                                               security_);
}

void GrpcSchedulerLink::WaitToReconnect(std::chrono::milliseconds wait,
                                        const std::atomic<bool>& stopping) {
  // A channel that lost its connection dials again during the wait, and
  // the wait ends as soon as it is connected (the network healed, the
  // scheduler is back): registering then, not once our backoff and gRPC's
  // own (which grows with every refused dial) have both run out, is what
  // keeps a short cut within the lease grace. A channel still connected
  // (the scheduler ended the stream) waits out the whole backoff.
  const bool connected = channel_->GetState(false) == GRPC_CHANNEL_READY;
  if (!connected) {
    grpc::experimental::ChannelResetConnectionBackoff(channel_.get());
  }
  const auto until = SteadyClock::now() + wait;
  while (!stopping && SteadyClock::now() < until) {
    const auto slice = std::min<SteadyClock::duration>(
        until - SteadyClock::now(), std::chrono::milliseconds(100));
    if (!connected) {
      if (channel_->WaitForConnected(std::chrono::system_clock::now() +
                                     slice)) {
        return;
      }
      continue;
    }
    std::this_thread::sleep_for(slice);
  }
}

GrpcCheckpointTransfer::GrpcCheckpointTransfer(
    std::shared_ptr<grpc::Channel> channel,
    std::function<void(grpc::ClientContext*)> decorate)
    : stub_(v1::WorkerGateway::NewStub(channel)),
      decorate_(std::move(decorate)) {}

class GrpcCheckpointTransfer::Registration {
 public:
  Registration(GrpcCheckpointTransfer* owner, grpc::ClientContext* context)
      ABSL_LOCKS_EXCLUDED(owner->mu_)
      : owner_(owner), context_(context) {
    absl::MutexLock lock(&owner_->mu_);
    registered_ = !owner_->cancelled_;
    if (registered_) owner_->in_flight_.insert(context_);
  }
  ~Registration() {
    absl::MutexLock lock(&owner_->mu_);
    owner_->in_flight_.erase(context_);
  }
  // False when CancelAll() came first: the call must not start.
  bool registered() const { return registered_; }

 private:
  GrpcCheckpointTransfer* const owner_;
  grpc::ClientContext* const context_;
  bool registered_ = false;
};

void GrpcCheckpointTransfer::CancelAll() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  for (grpc::ClientContext* context : in_flight_) context->TryCancel();
}

absl::Status GrpcCheckpointTransfer::Upload(const CheckpointRef& ref,
                                            const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  const SteadyClock::time_point began = SteadyClock::now();
  grpc::ClientContext context;
  PrepareGatewayContext(&context, kTransferCap, decorate_);
  Registration registration(this, &context);
  if (!registration.registered()) {
    return absl::CancelledError("worker is stopping");
  }
  v1::UploadCheckpointResponse response;
  TransferWatchdog watchdog(&context, kTransferStall);
  auto writer = stub_->UploadCheckpoint(&context, &response);
  Sha256 sha;
  std::string buffer(kChunkBytes, '\0');
  int64_t total = 0;
  bool first = true;
  while (true) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const std::streamsize n = in.gcount();
    v1::CheckpointChunk chunk;
    if (first) {
      chunk.set_job_id(ref.job_id);
      chunk.set_attempt(ref.attempt);
      chunk.set_step(ref.step);
      first = false;
    }
    if (n > 0) {
      chunk.set_data(buffer.data(), static_cast<std::size_t>(n));
      sha.Update(absl::string_view(buffer.data(), static_cast<std::size_t>(n)));
      total += n;
    }
    const bool last = n < static_cast<std::streamsize>(buffer.size());
    if (last) {
      chunk.set_sha256(sha.HexDigest());
      chunk.set_total_bytes(total);
    }
    if (!writer->Write(chunk)) break;
    watchdog.Progress();
    if (last) break;
  }
  writer->WritesDone();
  absl::Status status = watchdog.Outcome(FromGrpcStatus(writer->Finish()),
                                         "checkpoint upload", total);
  if (status.ok()) {
    const std::chrono::duration<double> took = SteadyClock::now() - began;
    Log(absl::StrCat(ref.job_id, ": uploaded checkpoint of step ", ref.step,
                     " (", total, " bytes in ",
                     absl::StrFormat("%.3f", took.count()), " s)"));
  }
  return status;
}

absl::StatusOr<int64_t> GrpcCheckpointTransfer::Download(
    const std::string& job_id, const std::string& path) {
  grpc::ClientContext context;
  PrepareGatewayContext(&context, kTransferCap, decorate_);
  Registration registration(this, &context);
  if (!registration.registered()) {
    return absl::CancelledError("worker is stopping");
  }
  TransferWatchdog watchdog(&context, kTransferStall);
  v1::DownloadCheckpointRequest request;
  request.set_job_id(job_id);
  auto reader = stub_->DownloadCheckpoint(&context, request);
  const std::string partial = path + ".partial";
  std::ofstream out(partial, std::ios::binary | std::ios::trunc);
  Sha256 sha;
  int64_t total = 0;
  int64_t step = 0;
  std::string expected_sha;
  int64_t expected_total = -1;
  v1::CheckpointChunk chunk;
  while (reader->Read(&chunk)) {
    watchdog.Progress();
    if (chunk.step() > 0) step = chunk.step();
    out.write(chunk.data().data(),
              static_cast<std::streamsize>(chunk.data().size()));
    sha.Update(chunk.data());
    total += static_cast<int64_t>(chunk.data().size());
    if (!chunk.sha256().empty()) {
      expected_sha = chunk.sha256();
      expected_total = chunk.total_bytes();
    }
  }
  absl::Status status = watchdog.Outcome(FromGrpcStatus(reader->Finish()),
                                         "checkpoint download", total);
  out.close();
  std::error_code ec;
  if (!status.ok()) {
    // DATA_LOSS from the scheduler: its stored copy is corrupt or missing.
    fs::remove(partial, ec);
    return status;
  }
  if (!out) {
    fs::remove(partial, ec);
    return absl::InternalError(absl::StrCat("cannot write ", partial));
  }
  if (expected_sha != sha.HexDigest() || expected_total != total) {
    // Garbled on the way (the scheduler verified its copy): another try
    // may fare better.
    fs::remove(partial, ec);
    return absl::UnavailableError(
        absl::StrCat("checkpoint of ", job_id,
                     " failed its checksum in transit (", total, " bytes)"));
  }
  fs::rename(partial, path, ec);
  if (ec) return absl::InternalError(ec.message());
  Log(absl::StrCat(job_id, ": downloaded checkpoint of step ", step, " (",
                   total, " bytes)"));
  return step;
}

}  // namespace halftime
