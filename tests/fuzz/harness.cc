#include "tests/fuzz/harness.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/text_format.h>
#include <grpcpp/impl/client_unary_call.h>
#include <grpcpp/impl/rpc_method.h>
#include <stdlib.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace halftime::fuzz {
namespace {

using grpc::internal::RpcMethod;

grpc::ByteBuffer ToBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string FromBuffer(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const grpc::Slice& s : slices) {
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return out;
}

void SetDeadline(grpc::ClientContext* context, absl::Duration deadline) {
  context->set_deadline(absl::ToChronoTime(absl::Now() + deadline));
}

grpc::ChannelArguments ClientArguments() {
  grpc::ChannelArguments args;
  // Oversized requests must reach the server (and be refused there), and
  // every answer must arrive, however large.
  args.SetMaxSendMessageSize(-1);
  args.SetMaxReceiveMessageSize(-1);
  return args;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TestScheduler>> TestScheduler::Start(
    server::ServerOptions options) {
  std::unique_ptr<TestScheduler> t(new TestScheduler());
  std::string pattern =
      (std::filesystem::temp_directory_path() / "halftime-fuzz-XXXXXX")
          .string();
  if (mkdtemp(pattern.data()) == nullptr) {
    return absl::InternalError("cannot create a temporary directory");
  }
  t->dir_ = pattern;
  options.listen = "127.0.0.1:0";
  options.metrics_listen = "";
  options.data_dir = t->dir_;
  options.log = nullptr;
  absl::StatusOr<std::unique_ptr<server::SchedulerServer>> s =
      server::SchedulerServer::Start(options);
  if (!s.ok()) return s.status();
  t->server_ = *std::move(s);
  return t;
}

TestScheduler::~TestScheduler() {
  if (server_ != nullptr) server_->Shutdown(absl::Seconds(1));
  server_.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::shared_ptr<grpc::Channel> TestScheduler::InProcessChannel() const {
  return server_->InProcessChannel(ClientArguments());
}

std::shared_ptr<grpc::Channel> TestScheduler::TcpChannel() const {
  return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials(),
                                   ClientArguments());
}

const char* MethodName(SchedulerMethod method) {
  switch (method) {
    case SUBMIT_JOB:
      return "/halftime.v1.Scheduler/SubmitJob";
    case GET_JOB:
      return "/halftime.v1.Scheduler/GetJob";
    case LIST_JOBS:
      return "/halftime.v1.Scheduler/ListJobs";
    case CANCEL_JOB:
      return "/halftime.v1.Scheduler/CancelJob";
    case WATCH_JOB:
      return "/halftime.v1.Scheduler/WatchJob";
    case LIST_WORKERS:
      return "/halftime.v1.Scheduler/ListWorkers";
    case GET_SAVINGS:
      return "/halftime.v1.Scheduler/GetSavings";
    case GET_JOB_LOGS:
      return "/halftime.v1.Scheduler/GetJobLogs";
    default:
      return "/halftime.v1.Scheduler/NoSuchMethod";
  }
}

std::pair<SchedulerMethod, std::string> Encode(const SchedulerCall& call) {
  switch (call.request_case()) {
    case SchedulerCall::kSubmitJob:
      return {SUBMIT_JOB, call.submit_job().SerializeAsString()};
    case SchedulerCall::kGetJob:
      return {GET_JOB, call.get_job().SerializeAsString()};
    case SchedulerCall::kListJobs:
      return {LIST_JOBS, call.list_jobs().SerializeAsString()};
    case SchedulerCall::kCancelJob:
      return {CANCEL_JOB, call.cancel_job().SerializeAsString()};
    case SchedulerCall::kWatchJob:
      return {WATCH_JOB, call.watch_job().SerializeAsString()};
    case SchedulerCall::kListWorkers:
      return {LIST_WORKERS, call.list_workers().SerializeAsString()};
    case SchedulerCall::kGetSavings:
      return {GET_SAVINGS, call.get_savings().SerializeAsString()};
    case SchedulerCall::kGetJobLogs:
      return {GET_JOB_LOGS, call.get_job_logs().SerializeAsString()};
    case SchedulerCall::kRaw:
      return {call.raw().method(), call.raw().bytes()};
    default:
      return {LIST_WORKERS, ""};
  }
}

CallResult CallScheduler(grpc::Channel* channel, SchedulerMethod method,
                         const std::string& request, absl::Duration deadline,
                         int max_events) {
  CallResult result;
  grpc::ClientContext context;
  SetDeadline(&context, deadline);
  grpc::ByteBuffer in = ToBuffer(request);
  if (method == WATCH_JOB) {
    std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader(
        grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(
            channel, RpcMethod(MethodName(method), RpcMethod::SERVER_STREAMING),
            &context, in));
    grpc::ByteBuffer event;
    while (result.responses < max_events && reader->Read(&event)) {
      if (result.responses++ == 0) result.first = FromBuffer(event);
    }
    if (result.responses >= max_events) context.TryCancel();
    result.status = reader->Finish();
    return result;
  }
  grpc::ByteBuffer out;
  result.status =
      grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
          channel, RpcMethod(MethodName(method), RpcMethod::NORMAL_RPC),
          &context, in, &out);
  if (result.status.ok()) {
    result.responses = 1;
    result.first = FromBuffer(out);
  }
  return result;
}

TestScheduler& StartForever(server::ServerOptions options) {
  absl::StatusOr<std::unique_ptr<TestScheduler>> s =
      TestScheduler::Start(std::move(options));
  if (!s.ok()) {
    std::fprintf(stderr, "cannot start the scheduler: %s\n",
                 s.status().ToString().c_str());
    std::abort();
  }
  static std::string* dir = new std::string((*s)->data_dir());
  std::atexit([] {
    std::error_code ec;
    std::filesystem::remove_all(*dir, ec);
  });
  return *s->release();
}

void InitStatefulServerFuzzer(int* argc, char*** argv) {
  // libFuzzer keeps using the array: it lives as long as the process.
  static std::vector<char*>* args = new std::vector<char*>();
  static char detect_leaks[] = "-detect_leaks=0";
  args->clear();
  args->push_back((*argv)[0]);
  args->push_back(detect_leaks);
  for (int i = 1; i < *argc; ++i) args->push_back((*argv)[i]);
  args->push_back(nullptr);
  *argc = static_cast<int>(args->size()) - 1;
  *argv = args->data();
  google::protobuf::SetLogHandler(nullptr);
}

bool ParseTextQuietly(absl::string_view text,
                      google::protobuf::Message* message) {
  class Silent : public google::protobuf::io::ErrorCollector {
   public:
    void AddError(int, int, const std::string&) override {}
  } silent;
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&silent);
  return parser.ParseFromString(std::string(text), message);
}

std::string Unclean(const grpc::Status& status) {
  if (status.ok()) return "";
  if (status.error_code() == grpc::StatusCode::INTERNAL ||
      status.error_code() == grpc::StatusCode::UNKNOWN) {
    return absl::StrCat("status ", status.error_code(), " (",
                        status.error_code() == grpc::StatusCode::INTERNAL
                            ? "INTERNAL"
                            : "UNKNOWN",
                        "): ", status.error_message());
  }
  if (status.error_message().empty()) {
    return absl::StrCat("status ", status.error_code(),
                        " with an empty message");
  }
  return "";
}

RawConnect::RawConnect(grpc::Channel* channel, absl::Duration deadline) {
  SetDeadline(&context_, deadline);
  stream_.reset(
      grpc::internal::
          ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(
              channel,
              RpcMethod("/halftime.v1.WorkerGateway/"
                        "Connect",
                        RpcMethod::BIDI_STREAMING),
              &context_));
  reader_ = std::thread([this] {
    grpc::ByteBuffer buffer;
    while (stream_->Read(&buffer)) {
      v1::SchedulerMessage m;
      if (!m.ParseFromString(FromBuffer(buffer))) continue;
      std::lock_guard<std::mutex> lock(mu_);
      received_.push_back(std::move(m));
      cv_.notify_all();
    }
    std::lock_guard<std::mutex> lock(mu_);
    ended_ = true;
    cv_.notify_all();
  });
}

RawConnect::~RawConnect() {
  if (!hung_up_) {
    context_.TryCancel();
    HangUp();
  }
}

bool RawConnect::Send(const std::string& bytes) {
  return stream_->Write(ToBuffer(bytes));
}

void RawConnect::WaitFor(size_t count, absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
               [&] { return received_.size() > count || ended_; });
}

std::vector<v1::SchedulerMessage> RawConnect::Received() {
  std::lock_guard<std::mutex> lock(mu_);
  return received_;
}

grpc::Status RawConnect::HangUp() {
  if (hung_up_) return status_;
  hung_up_ = true;
  stream_->WritesDone();
  reader_.join();
  status_ = stream_->Finish();
  return status_;
}

grpc::Status UploadRaw(grpc::Channel* channel,
                       const std::vector<std::string>& chunks,
                       absl::Duration deadline,
                       v1::UploadCheckpointResponse* response) {
  grpc::ClientContext context;
  SetDeadline(&context, deadline);
  grpc::ByteBuffer out;
  std::unique_ptr<grpc::ClientWriter<grpc::ByteBuffer>> writer(
      grpc::internal::ClientWriterFactory<grpc::ByteBuffer>::Create(
          channel,
          RpcMethod("/halftime.v1.WorkerGateway/UploadCheckpoint",
                    RpcMethod::CLIENT_STREAMING),
          &context, &out));
  for (const std::string& chunk : chunks) {
    if (!writer->Write(ToBuffer(chunk))) break;
  }
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (status.ok()) response->ParseFromString(FromBuffer(out));
  return status;
}

std::pair<grpc::Status, std::string> Download(grpc::Channel* channel,
                                              const std::string& request,
                                              absl::Duration deadline) {
  grpc::ClientContext context;
  SetDeadline(&context, deadline);
  std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader(
      grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(
          channel,
          RpcMethod("/halftime.v1.WorkerGateway/DownloadCheckpoint",
                    RpcMethod::SERVER_STREAMING),
          &context, ToBuffer(request)));
  std::string data;
  grpc::ByteBuffer buffer;
  while (reader->Read(&buffer)) {
    v1::CheckpointChunk chunk;
    if (chunk.ParseFromString(FromBuffer(buffer))) data += chunk.data();
  }
  return {reader->Finish(), data};
}

}  // namespace halftime::fuzz
