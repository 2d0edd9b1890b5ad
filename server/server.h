// SchedulerServer: the whole scheduler wired together (store, metrics,
// savings ledger, checkpoint files, job manager, gRPC services with health
// checking and reflection, lease ticker). main.cc parses flags into
// ServerOptions and runs one; integration tests run one on port 0.
#ifndef HALFTIME_SERVER_SERVER_H_
#define HALFTIME_SERVER_SERVER_H_

#include <grpcpp/channel.h>
#include <grpcpp/server.h>
#include <grpcpp/support/channel_arguments.h>

#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "server/auth.h"
#include "server/checkpoints.h"
#include "server/executor.h"
#include "server/job_manager.h"
#include "server/logger.h"
#include "server/metrics.h"
#include "server/savings.h"
#include "server/scheduler_service.h"
#include "server/sqlite_store.h"
#include "server/worker_gateway_service.h"

namespace halftime::server {

// Settings of a scheduler (the binary's flags).
struct ServerOptions {
  // gRPC address; port 0 picks a free port (see SchedulerServer::port).
  std::string listen = "127.0.0.1:50051";
  // /metrics address; port 0 picks one; empty serves no metrics.
  std::string metrics_listen = "127.0.0.1:9464";
  // Directory of the database (halftime.db) and checkpoints/; created when
  // missing.
  std::string data_dir;
  // Lease grace period and the heartbeat period announced to workers.
  absl::Duration lease_grace = absl::Seconds(15);
  absl::Duration heartbeat_interval = absl::Seconds(2);
  // How often leases are checked; zero runs no ticker (tests call
  // jobs()->Tick() themselves).
  absl::Duration tick_interval = absl::Milliseconds(250);
  // Token file (see auth.h); empty: no authentication.
  std::string token_file;
  // TLS files (see auth.h); empty: plaintext.
  auth::TlsFiles tls;
  // Device-hour prices for the savings ledger.
  PriceTable prices;
  // Largest message received or sent, bytes.
  int max_message_bytes = 16 << 20;
  // Commit with fsync (synchronous=FULL). Only benchmarks turn it off.
  bool durable = true;
  // Structured log lines go here (not owned); nullptr discards them.
  std::FILE* log = stderr;
  // Further job manager settings (lease_grace and heartbeat_interval above
  // override the ones in here).
  JobManagerOptions jobs;
};

// A running scheduler.
//
// Thread-safety: thread-safe; Shutdown may be called from any thread (not
// from a gRPC callback).
class SchedulerServer {
 public:
  // Opens the data dir and the store, loads the state, and starts serving.
  // `clock` is not owned (nullptr: the real clock). Errors:
  // INVALID_ARGUMENT for bad options (token file, TLS files), UNAVAILABLE
  // when an address cannot be bound, the store's errors.
  static absl::StatusOr<std::unique_ptr<SchedulerServer>> Start(
      ServerOptions options, Clock* clock = nullptr);

  // Shuts down (if not yet) and frees everything.
  ~SchedulerServer();

  SchedulerServer(const SchedulerServer&) = delete;
  SchedulerServer& operator=(const SchedulerServer&) = delete;

  // The bound gRPC port and /metrics port (0 when not served).
  int port() const { return port_; }
  int metrics_port() const { return metrics_->port(); }

  // A channel to this server that bypasses the network: no TLS, but tokens
  // and message size limits apply as usual. For tests and fuzzers.
  std::shared_ptr<grpc::Channel> InProcessChannel(
      const grpc::ChannelArguments& args = grpc::ChannelArguments());

  // Components, for tests and the benchmark. Owned by the server.
  JobManager* jobs() const { return jobs_.get(); }
  SchedulerMetrics* metrics() const { return metrics_.get(); }

  // Graceful shutdown: health turns NOT_SERVING, worker streams and
  // watches end (UNAVAILABLE), new calls are refused, in-flight calls get
  // up to `deadline` to finish (then they are cancelled), queued store
  // writes are committed and the store closed. Idempotent.
  void Shutdown(absl::Duration deadline = absl::Seconds(5))
      ABSL_LOCKS_EXCLUDED(mu_);

  // Blocks until Shutdown has finished.
  void Wait() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  SchedulerServer() = default;
  void TickLoop(absl::Duration interval) ABSL_LOCKS_EXCLUDED(mu_);

  std::unique_ptr<Clock> owned_clock_;
  Clock* clock_ = nullptr;
  std::unique_ptr<Logger> logger_;
  std::unique_ptr<SchedulerMetrics> metrics_;
  std::unique_ptr<SqliteStore> store_;
  std::unique_ptr<SavingsLedger> savings_;
  std::unique_ptr<CheckpointFiles> files_;
  std::unique_ptr<JobManager> jobs_;
  std::unique_ptr<auth::Authorizer> authorizer_;
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<SchedulerService> scheduler_service_;
  std::unique_ptr<WorkerGatewayService> gateway_service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;

  std::thread ticker_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace halftime::server

#endif  // HALFTIME_SERVER_SERVER_H_
