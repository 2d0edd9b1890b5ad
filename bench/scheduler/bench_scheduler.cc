// bench_scheduler: durability and scale figures of halftime-scheduler, side
// by side with a no-op gRPC server, in one run:
//
//  1. SubmitJob throughput and latency with 16 concurrent clients (one
//     channel each): no-op unary server vs the scheduler with durable
//     (fsync) group commit. Targets: >= 2,000 submits/s, p99 <= 20 ms.
//  2. Submit-to-assignment latency with an idle capable worker (sequential
//     submits; time from calling SubmitJob to the worker receiving the
//     assignment). Target: p99 <= 10 ms.
//  3. CPU of the scheduler process while 1,000 simulated workers heartbeat
//     once a second. Target: <= 25% of one core.
//
// Each server runs in its own process (this binary re-executed with
// --serve), so its CPU is measured alone and clients do not share its
// cores' accounting. Usage: bench_scheduler [--seconds N] [--workers N]
#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "halftime/v1/scheduler.grpc.pb.h"
#include "halftime/v1/worker_gateway.grpc.pb.h"
#include "server/server.h"

extern char** environ;

namespace {

using halftime::v1::Scheduler;
using halftime::v1::WorkerGateway;
namespace v1 = halftime::v1;

// ---- Server side (child processes) ----

// Answers SubmitJob at once; the floor a unary gRPC call costs.
class NoopScheduler : public Scheduler::CallbackService {
  grpc::ServerUnaryReactor* SubmitJob(
      grpc::CallbackServerContext* context, const v1::SubmitJobRequest*,
      v1::SubmitJobResponse* response) override {
    response->mutable_job()->set_id("j-000000");
    auto* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

int Serve(const std::string& kind, const std::string& data_dir) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::unique_ptr<halftime::server::SchedulerServer> scheduler;
  std::unique_ptr<grpc::Server> noop_server;
  NoopScheduler noop;
  int port = 0, metrics_port = 0;
  if (kind == "noop") {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(&noop);
    noop_server = builder.BuildAndStart();
  } else {
    halftime::server::ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "127.0.0.1:0";
    options.data_dir = data_dir;
    options.log = nullptr;
    auto server = halftime::server::SchedulerServer::Start(options);
    if (!server.ok()) {
      std::fprintf(stderr, "serve: %s\n", server.status().ToString().c_str());
      return 1;
    }
    scheduler = *std::move(server);
    port = scheduler->port();
    metrics_port = scheduler->metrics_port();
  }
  std::printf("%d %d\n", port, metrics_port);
  std::fflush(stdout);
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  if (scheduler != nullptr) scheduler->Shutdown();
  if (noop_server != nullptr) noop_server->Shutdown();
  return 0;
}

// ---- Client side ----

struct Child {
  pid_t pid = 0;
  int port = 0;
  int metrics_port = 0;
};

Child Spawn(const char* self, const std::string& kind,
            const std::string& data_dir) {
  int fds[2];
  if (pipe(fds) != 0) std::abort();
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  std::string serve = "--serve=" + kind, dir = "--data-dir=" + data_dir;
  char* argv[] = {const_cast<char*>(self), serve.data(), dir.data(), nullptr};
  Child child;
  if (posix_spawn(&child.pid, self, &actions, nullptr, argv, environ) != 0) {
    std::perror("posix_spawn");
    std::exit(1);
  }
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  char buffer[64] = {};
  ssize_t n = read(fds[0], buffer, sizeof(buffer) - 1);
  close(fds[0]);
  if (n <= 0 ||
      std::sscanf(buffer, "%d %d", &child.port, &child.metrics_port) != 2) {
    std::fprintf(stderr, "server %s did not start\n", kind.c_str());
    std::exit(1);
  }
  return child;
}

void Stop(const Child& child) {
  kill(child.pid, SIGTERM);
  int status = 0;
  waitpid(child.pid, &status, 0);
}

// utime + stime of a process, seconds.
double CpuSeconds(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), {});
  size_t close_paren = stat.rfind(')');
  std::istringstream fields(stat.substr(close_paren + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) /
         static_cast<double>(sysconf(_SC_CLK_TCK));
}

std::shared_ptr<grpc::Channel> Channel(int port, int id) {
  grpc::ChannelArguments args;
  args.SetInt("halftime.bench.channel", id);  // one connection each
  return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureChannelCredentials(), args);
}

v1::JobSpec BenchSpec(int i) {
  v1::JobSpec spec;
  spec.set_name(absl::StrCat("bench-", i));
  spec.mutable_model()->set_builtin("mlp");
  spec.mutable_data()->set_kind(v1::DATA_KIND_SYNTHETIC);
  spec.set_steps(100);
  spec.set_precision(v1::PRECISION_FP32);
  return spec;
}

struct Latencies {
  std::vector<double> ms;
  double seconds = 0;
  double Percentile(double p) {
    if (ms.empty()) return 0;
    std::sort(ms.begin(), ms.end());
    size_t i = std::min(
        ms.size() - 1, static_cast<size_t>(p * static_cast<double>(ms.size())));
    return ms[i];
  }
  double Rate() const { return static_cast<double>(ms.size()) / seconds; }
};

Latencies SubmitLoad(int port, int clients, absl::Duration duration) {
  std::vector<std::thread> threads;
  std::vector<std::vector<double>> per(clients);
  std::atomic<int> errors{0};
  absl::Time start = absl::Now(), end = start + duration;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      auto stub = Scheduler::NewStub(Channel(port, c));
      for (int i = 0; absl::Now() < end; ++i) {
        v1::SubmitJobRequest request;
        *request.mutable_spec() = BenchSpec(i);
        v1::SubmitJobResponse response;
        grpc::ClientContext context;
        absl::Time t0 = absl::Now();
        grpc::Status s = stub->SubmitJob(&context, request, &response);
        per[c].push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
        if (!s.ok()) ++errors;
      }
    });
  }
  for (auto& t : threads) t.join();
  Latencies result;
  result.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  for (auto& v : per) result.ms.insert(result.ms.end(), v.begin(), v.end());
  if (errors > 0) std::fprintf(stderr, "%d submits failed\n", errors.load());
  return result;
}

// Mean mutations per group commit, from the scheduler's /metrics.
double MeanBatch(int metrics_port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(metrics_port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return 0;
  }
  std::string request = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
  if (write(fd, request.data(), request.size()) < 0) return 0;
  std::string body;
  char buffer[65536];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) body.append(buffer, n);
  close(fd);
  auto value = [&](const std::string& name) {
    size_t at = body.find("\n" + name + " ");
    return at == std::string::npos
               ? 0.0
               : std::stod(body.substr(at + name.size() + 2));
  };
  double count = value("halftime_store_batch_mutations_count");
  return count > 0 ? value("halftime_store_batch_mutations_sum") / count : 0;
}

// A worker that heartbeats over a callback stream.
class SimWorker
    : public grpc::ClientBidiReactor<v1::WorkerMessage, v1::SchedulerMessage> {
 public:
  SimWorker(WorkerGateway::Stub* stub, const std::string& name, int slots) {
    register_.mutable_register_()->set_name(name);
    auto* caps = register_.mutable_register_()->mutable_capabilities();
    caps->set_device_kind(v1::DEVICE_KIND_CPU);
    caps->set_device_name("bench cpu");
    caps->add_native_precisions(v1::PRECISION_FP32);
    caps->set_slots(slots);
    heartbeat_.mutable_heartbeat();
    stub->async()->Connect(&context_, this);
    StartRead(&in_);
    writing_ = true;
    StartWrite(&register_);
    StartCall();
  }

  void Heartbeat() {
    std::lock_guard<std::mutex> lock(mu_);
    if (writing_ || done_) return;
    writing_ = true;
    StartWrite(&heartbeat_);
  }

  // Called with each assignment (job id, arrival time).
  std::function<void(const std::string&, absl::Time)> on_assignment;

  void OnReadDone(bool ok) override {
    if (!ok) return;
    if (in_.has_registered()) registered_ = true;
    if (in_.has_assignment() && on_assignment) {
      on_assignment(in_.assignment().job_id(), absl::Now());
    }
    StartRead(&in_);
  }
  void OnWriteDone(bool) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
  }
  void OnDone(const grpc::Status&) override {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    cv_.notify_all();
  }
  void Stop() {
    context_.TryCancel();
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return done_; });
  }
  bool registered() const { return registered_; }

 private:
  grpc::ClientContext context_;
  v1::WorkerMessage register_, heartbeat_;
  v1::SchedulerMessage in_;
  std::atomic<bool> registered_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  bool writing_ = false;
  bool done_ = false;
};

}  // namespace

int main(int argc, char** argv) {
  std::string serve, data_dir;
  int seconds = 5, workers = 1000;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (absl::StartsWith(arg, "--serve=")) serve = arg.substr(8);
    if (absl::StartsWith(arg, "--data-dir=")) data_dir = arg.substr(11);
    if (arg == "--seconds" && i + 1 < argc) seconds = std::atoi(argv[++i]);
    if (arg == "--workers" && i + 1 < argc) workers = std::atoi(argv[++i]);
  }
  if (!serve.empty()) return Serve(serve, data_dir);

  const char* self = "/proc/self/exe";
  std::string root = (std::filesystem::temp_directory_path() /
                      absl::StrCat("halftime-bench-", getpid()))
                         .string();
  std::filesystem::create_directories(root);
  std::printf("bench_scheduler: %d s per load, %d CPUs\n", seconds,
              static_cast<int>(std::thread::hardware_concurrency()));

  // 1. Throughput: no-op vs durable scheduler.
  Child noop = Spawn(self, "noop", root + "/noop");
  Latencies noop_load = SubmitLoad(noop.port, 16, absl::Seconds(seconds));
  Stop(noop);
  Child durable = Spawn(self, "scheduler", root + "/durable");
  double cpu0 = CpuSeconds(durable.pid);
  Latencies sched_load = SubmitLoad(durable.port, 16, absl::Seconds(seconds));
  double sched_cpu = CpuSeconds(durable.pid) - cpu0;
  double batch = MeanBatch(durable.metrics_port);
  Stop(durable);

  // 2. Submit-to-assignment with an idle capable worker.
  Child placement = Spawn(self, "scheduler", root + "/placement");
  Latencies assign;
  {
    auto channel = Channel(placement.port, 100);
    auto gateway = WorkerGateway::NewStub(channel);
    auto users = Scheduler::NewStub(Channel(placement.port, 101));
    std::mutex mu;
    std::condition_variable cv;
    std::map<std::string, absl::Time> arrived;
    SimWorker worker(gateway.get(), "idle", 1 << 30);
    worker.on_assignment = [&](const std::string& id, absl::Time t) {
      std::lock_guard<std::mutex> lock(mu);
      arrived[id] = t;
      cv.notify_all();
    };
    while (!worker.registered()) absl::SleepFor(absl::Milliseconds(5));
    absl::Time start = absl::Now();
    for (int i = 0; i < 1000; ++i) {
      v1::SubmitJobRequest request;
      *request.mutable_spec() = BenchSpec(i);
      v1::SubmitJobResponse response;
      grpc::ClientContext context;
      absl::Time t0 = absl::Now();
      if (!users->SubmitJob(&context, request, &response).ok()) continue;
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return arrived.count(response.job().id()) > 0; });
      assign.ms.push_back(
          absl::ToDoubleMilliseconds(arrived[response.job().id()] - t0));
    }
    assign.seconds = absl::ToDoubleSeconds(absl::Now() - start);
    worker.Stop();
  }
  Stop(placement);

  // 3. 1,000 workers heartbeating once a second.
  Child fleet = Spawn(self, "scheduler", root + "/fleet");
  double fleet_cpu = 0, window = 0;
  {
    std::vector<std::shared_ptr<grpc::Channel>> channels;
    std::vector<std::unique_ptr<WorkerGateway::Stub>> stubs;
    for (int c = 0; c < 8; ++c) {
      channels.push_back(Channel(fleet.port, 200 + c));
      stubs.push_back(WorkerGateway::NewStub(channels.back()));
    }
    std::vector<std::unique_ptr<SimWorker>> sims;
    for (int i = 0; i < workers; ++i) {
      sims.push_back(std::make_unique<SimWorker>(stubs[i % stubs.size()].get(),
                                                 absl::StrCat("sim-", i), 1));
    }
    for (auto& sim : sims) {
      while (!sim->registered()) absl::SleepFor(absl::Milliseconds(1));
    }
    std::atomic<bool> stop{false};
    std::thread beat([&] {
      while (!stop) {
        absl::Time round = absl::Now();
        for (size_t i = 0; i < sims.size(); ++i) {
          sims[i]->Heartbeat();
          absl::Time next = round + absl::Seconds(1) *
                                        static_cast<double>(i + 1) /
                                        static_cast<double>(sims.size());
          absl::SleepFor(next - absl::Now());
        }
      }
    });
    absl::SleepFor(absl::Seconds(2));  // warm up
    double c0 = CpuSeconds(fleet.pid);
    absl::Time t0 = absl::Now();
    absl::SleepFor(absl::Seconds(std::max(5, seconds * 2)));
    fleet_cpu = CpuSeconds(fleet.pid) - c0;
    window = absl::ToDoubleSeconds(absl::Now() - t0);
    stop = true;
    beat.join();
    for (auto& sim : sims) sim->Stop();
  }
  Stop(fleet);
  std::filesystem::remove_all(root);

  std::printf("\n%-44s %14s %18s\n", "", "no-op gRPC", "halftime (fsync)");
  std::printf("%-44s %14.0f %18.0f\n", "SubmitJob/s, 16 clients",
              noop_load.Rate(), sched_load.Rate());
  std::printf("%-44s %14.2f %18.2f\n", "  p50 latency, ms",
              noop_load.Percentile(0.50), sched_load.Percentile(0.50));
  std::printf("%-44s %14.2f %18.2f\n", "  p99 latency, ms",
              noop_load.Percentile(0.99), sched_load.Percentile(0.99));
  std::printf("%-44s %14s %18.1f\n", "  mutations per group commit (mean)", "-",
              batch);
  std::printf("%-44s %14s %17.0f%%\n", "  scheduler CPU during the load", "-",
              100 * sched_cpu / sched_load.seconds);
  std::printf("%-44s %14s %18.2f\n", "submit->assignment p50, ms (idle worker)",
              "-", assign.Percentile(0.50));
  std::printf("%-44s %14s %18.2f\n", "submit->assignment p99, ms", "-",
              assign.Percentile(0.99));
  std::printf("%-44s %14s %17.1f%%\n",
              absl::StrCat(workers, " workers x 1 heartbeat/s, CPU of one core")
                  .c_str(),
              "-", 100 * fleet_cpu / window);
  std::printf(
      "\ntargets: >= 2000 submits/s, submit p99 <= 20 ms, "
      "assignment p99 <= 10 ms, heartbeats <= 25%% of a core\n");
  return 0;
}
