// What the hostile request test and the scheduler fuzzers share: a real
// scheduler in the process, raw (not necessarily parseable) calls of every
// Scheduler and WorkerGateway method, and the "clean answer" oracle.
#ifndef HALFTIME_TESTS_FUZZ_HARNESS_H_
#define HALFTIME_TESTS_FUZZ_HARNESS_H_

#include <google/protobuf/message.h>
#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "halftime/v1/scheduler.pb.h"
#include "halftime/v1/worker_gateway.pb.h"
#include "server/server.h"
#include "tests/fuzz/fuzz_input.pb.h"

namespace halftime::fuzz {

// A SchedulerServer on 127.0.0.1:0 with a temporary data dir (removed by
// the destructor), no /metrics and no log.
class TestScheduler {
 public:
  // `options` may preset settings; listen, metrics_listen, data_dir and log
  // are always set here.
  static absl::StatusOr<std::unique_ptr<TestScheduler>> Start(
      server::ServerOptions options = server::ServerOptions());
  ~TestScheduler();

  server::SchedulerServer* server() const { return server_.get(); }
  const std::string& data_dir() const { return dir_; }
  // An in-process channel (fast; the server's message size limit applies).
  std::shared_ptr<grpc::Channel> InProcessChannel() const;
  // A channel over loopback TCP, as real clients connect.
  std::shared_ptr<grpc::Channel> TcpChannel() const;

 private:
  TestScheduler() = default;
  std::string dir_;
  std::unique_ptr<server::SchedulerServer> server_;
};

// "/halftime.v1.Scheduler/GetJob" and so on.
const char* MethodName(SchedulerMethod method);

// The method of `call` and its request bytes (raw bytes as they are).
std::pair<SchedulerMethod, std::string> Encode(const SchedulerCall& call);

// The answer to one call.
struct CallResult {
  grpc::Status status;
  // Responses received (WatchJob: events; else 0 or 1).
  int responses = 0;
  // The first response's bytes.
  std::string first;
};

// Sends `request` (any bytes) to `method` with `deadline`. WatchJob reads
// events until the stream ends, `max_events` were read or the deadline
// passes.
CallResult CallScheduler(grpc::Channel* channel, SchedulerMethod method,
                         const std::string& request, absl::Duration deadline,
                         int max_events = 1000);

// For fuzzers, whose scheduler is never destroyed (libFuzzer may exit from
// any thread): starts one with `options` (aborting on failure) and removes
// its data dir at exit.
TestScheduler& StartForever(server::ServerOptions options);

// For LLVMFuzzerInitialize of a fuzzer that keeps one scheduler across
// inputs: its state (jobs, events, workers) carries over, so libFuzzer's
// per-input leak check would rescan a growing heap after most inputs and
// find nothing; -detect_leaks=0 goes right after the program name, so it is
// a default that the command line still overrides. Also silences protobuf's
// log, which would print every invalid UTF-8 string the inputs are full of.
void InitStatefulServerFuzzer(int* argc, char*** argv);

// Parses a text-format proto without logging its errors.
bool ParseTextQuietly(absl::string_view text,
                      google::protobuf::Message* message);

// Empty when `status` is a clean answer to untrusted input: OK, or an error
// other than INTERNAL and UNKNOWN whose message is not empty. Else says
// what is wrong with it.
std::string Unclean(const grpc::Status& status);

// A Connect stream that sends raw bytes (serialized WorkerMessages or
// anything else) and collects what the scheduler sends back.
//
// Thread-safety: Send and HangUp from one thread; Received from any.
class RawConnect {
 public:
  RawConnect(grpc::Channel* channel, absl::Duration deadline);
  ~RawConnect();

  // False once the stream is broken.
  bool Send(const std::string& bytes);
  bool Send(const v1::WorkerMessage& message) {
    return Send(message.SerializeAsString());
  }
  // Waits up to `timeout` until more than `count` messages were received
  // or the stream ended.
  void WaitFor(size_t count, absl::Duration timeout);
  // Messages received so far (unparseable ones are skipped).
  std::vector<v1::SchedulerMessage> Received();
  // Half-closes, waits for the end of the stream and returns its status.
  // Idempotent.
  grpc::Status HangUp();

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>>
      stream_;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<v1::SchedulerMessage> received_;  // guarded by mu_
  bool ended_ = false;                          // guarded by mu_
  bool hung_up_ = false;
  grpc::Status status_;
};

// Sends `chunks` (raw bytes each) as one UploadCheckpoint call.
grpc::Status UploadRaw(grpc::Channel* channel,
                       const std::vector<std::string>& chunks,
                       absl::Duration deadline,
                       v1::UploadCheckpointResponse* response);

// Reads a job's checkpoint; returns the status and the bytes.
std::pair<grpc::Status, std::string> Download(grpc::Channel* channel,
                                              const std::string& request,
                                              absl::Duration deadline);

}  // namespace halftime::fuzz

#endif  // HALFTIME_TESTS_FUZZ_HARNESS_H_
