#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server_builder.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "server/request_checks.h"

namespace halftime::server {

absl::StatusOr<std::unique_ptr<SchedulerServer>> SchedulerServer::Start(
    ServerOptions options, Clock* clock) {
  if (options.data_dir.empty()) {
    return absl::InvalidArgumentError("--data-dir: required");
  }
  if (options.lease_grace <= absl::ZeroDuration() ||
      options.heartbeat_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "--lease-grace and --heartbeat-interval: must be positive");
  }
  std::unique_ptr<SchedulerServer> s(new SchedulerServer());
  if (clock == nullptr) {
    s->owned_clock_ = std::make_unique<RealClock>();
    clock = s->owned_clock_.get();
  }
  s->clock_ = clock;
  s->logger_ = std::make_unique<Logger>(options.log);

  std::optional<auth::TokenTable> tokens;
  if (!options.token_file.empty()) {
    absl::StatusOr<auth::TokenTable> table =
        auth::TokenTable::LoadFile(options.token_file);
    if (!table.ok()) return table.status();
    tokens = *std::move(table);
  }
  s->authorizer_ = std::make_unique<auth::Authorizer>(std::move(tokens));
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      auth::MakeServerCredentials(options.tls);
  if (!credentials.ok()) return credentials.status();

  std::error_code ec;
  std::filesystem::create_directories(options.data_dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--data-dir: cannot create ", options.data_dir, ": ", ec.message()));
  }
  absl::StatusOr<std::unique_ptr<SchedulerMetrics>> metrics =
      SchedulerMetrics::Create(options.metrics_listen);
  if (!metrics.ok()) return metrics.status();
  s->metrics_ = *std::move(metrics);

  SqliteStore::Options store_options;
  store_options.path =
      (std::filesystem::path(options.data_dir) / "halftime.db").string();
  store_options.durable = options.durable;
  store_options.on_commit = [metrics = s->metrics_.get()](
                                int mutations, absl::Duration duration) {
    metrics->store_batch_mutations().Observe(mutations);
    metrics->store_commit_seconds().Observe(absl::ToDoubleSeconds(duration));
  };
  absl::StatusOr<std::unique_ptr<SqliteStore>> store =
      SqliteStore::Open(store_options);
  if (!store.ok()) return store.status();
  s->store_ = *std::move(store);

  absl::StatusOr<std::unique_ptr<CheckpointFiles>> files =
      CheckpointFiles::Create(options.data_dir);
  if (!files.ok()) return files.status();
  s->files_ = *std::move(files);
  s->savings_ =
      std::make_unique<SavingsLedger>(options.prices, s->metrics_.get());

  JobManagerOptions job_options = options.jobs;
  job_options.lease_grace = options.lease_grace;
  job_options.heartbeat_interval = options.heartbeat_interval;
  absl::StatusOr<std::unique_ptr<JobManager>> jobs =
      JobManager::Create(job_options, s->store_.get(), clock, s->metrics_.get(),
                         s->savings_.get(), s->files_.get(), s->logger_.get());
  if (!jobs.ok()) return jobs.status();
  s->jobs_ = *std::move(jobs);

  s->executor_ = std::make_unique<Executor>(2);
  s->scheduler_service_ =
      std::make_unique<SchedulerService>(s->jobs_.get(), s->authorizer_.get());
  s->gateway_service_ = std::make_unique<WorkerGatewayService>(
      s->jobs_.get(), s->files_.get(), s->executor_.get(), s->authorizer_.get(),
      s->logger_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, *credentials, &s->port_);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  // Workers may keep their stream alive with pings.
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Requests that do not parse get INVALID_ARGUMENT saying so (gRPC's own
  // answer is an empty UNIMPLEMENTED).
  std::vector<
      std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(
      std::make_unique<MalformedRequestInterceptorFactory>());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  builder.RegisterService(s->scheduler_service_.get());
  builder.RegisterService(s->gateway_service_.get());
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    s->jobs_->Shutdown();
    s->store_->Close();
    return absl::UnavailableError(
        absl::StrCat("--listen: cannot listen on ", options.listen));
  }
  if (options.tick_interval > absl::ZeroDuration()) {
    s->ticker_ =
        std::thread([server = s.get(), interval = options.tick_interval] {
          server->TickLoop(interval);
        });
  }
  if (s->logger_->enabled()) {
    s->logger_->Log("scheduler_started",
                    {{"port", absl::StrCat(s->port_)},
                     {"metrics_port", absl::StrCat(s->metrics_->port())},
                     {"data_dir", options.data_dir},
                     {"auth", s->authorizer_->enabled() ? "token" : "none"},
                     {"tls", options.tls.cert.empty()
                                 ? "off"
                                 : (options.tls.ca.empty() ? "tls" : "mtls")}});
  }
  return s;
}

SchedulerServer::~SchedulerServer() { Shutdown(); }

std::shared_ptr<grpc::Channel> SchedulerServer::InProcessChannel(
    const grpc::ChannelArguments& args) {
  return server_->InProcessChannel(args);
}

void SchedulerServer::TickLoop(absl::Duration interval) {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      // Returns at once when Shutdown began, else after `interval`.
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), interval);
      if (stopping_) return;
    }
    jobs_->Tick();
  }
}

void SchedulerServer::Shutdown(absl::Duration deadline) {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (ticker_.joinable()) ticker_.join();
  if (server_ != nullptr) {
    if (grpc::HealthCheckServiceInterface* health =
            server_->GetHealthCheckService()) {
      health->SetServingStatus(false);
    }
    jobs_->Shutdown();
    server_->Shutdown(absl::ToChronoTime(absl::Now() + deadline));
    server_->Wait();
  }
  if (executor_ != nullptr) executor_->Shutdown();
  if (store_ != nullptr) store_->Close();
  if (logger_ != nullptr && logger_->enabled()) {
    logger_->Log("scheduler_stopped", {});
  }
  absl::MutexLock lock(&mu_);
  stopped_ = true;
}

void SchedulerServer::Wait() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&stopped_));
}

}  // namespace halftime::server
