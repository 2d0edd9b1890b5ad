// Hostile requests against a real scheduler: every case of
// tests/fuzz/hostile/requests.textproto is sent over loopback TCP and must
// get exactly its expected status code with a message naming the field or
// the cause; after each case the scheduler must still serve.
//
// Placeholders in string fields of a request: "$RUNNING" is a job that
// runs on a worker of this test (in an upload, attempt N there means the
// current attempt + N), "$CANCELLED" a job already cancelled.
#include <google/protobuf/descriptor.h>
#include <google/protobuf/reflection.h>
#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/checkpoints.h"
#include "tests/fuzz/harness.h"

namespace halftime::fuzz {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

constexpr absl::Duration kDeadline = absl::Seconds(30);

HostileCases LoadCases() {
  HostileCases cases;
  std::ifstream in(HALFTIME_HOSTILE_REQUESTS);
  std::stringstream text;
  text << in.rdbuf();
  if (!in ||
      !google::protobuf::TextFormat::ParseFromString(text.str(), &cases)) {
    // Reported by the test below (the parser logged where).
    cases.Clear();
    cases.add_cases()->set_name("unreadable_case_file");
  }
  return cases;
}

const HostileCases& Cases() {
  static const HostileCases* cases = new HostileCases(LoadCases());
  return *cases;
}

std::vector<int> CaseIndexes() {
  std::vector<int> out;
  for (int i = 0; i < Cases().cases_size(); ++i) out.push_back(i);
  return out;
}

absl::StatusOr<grpc::StatusCode> CodeByName(const std::string& name) {
  static const std::map<std::string, grpc::StatusCode> kCodes = {
      {"OK", grpc::StatusCode::OK},
      {"CANCELLED", grpc::StatusCode::CANCELLED},
      {"INVALID_ARGUMENT", grpc::StatusCode::INVALID_ARGUMENT},
      {"DEADLINE_EXCEEDED", grpc::StatusCode::DEADLINE_EXCEEDED},
      {"NOT_FOUND", grpc::StatusCode::NOT_FOUND},
      {"ALREADY_EXISTS", grpc::StatusCode::ALREADY_EXISTS},
      {"PERMISSION_DENIED", grpc::StatusCode::PERMISSION_DENIED},
      {"RESOURCE_EXHAUSTED", grpc::StatusCode::RESOURCE_EXHAUSTED},
      {"FAILED_PRECONDITION", grpc::StatusCode::FAILED_PRECONDITION},
      {"ABORTED", grpc::StatusCode::ABORTED},
      {"OUT_OF_RANGE", grpc::StatusCode::OUT_OF_RANGE},
      {"UNIMPLEMENTED", grpc::StatusCode::UNIMPLEMENTED},
      {"UNAVAILABLE", grpc::StatusCode::UNAVAILABLE},
      {"DATA_LOSS", grpc::StatusCode::DATA_LOSS},
      {"UNAUTHENTICATED", grpc::StatusCode::UNAUTHENTICATED},
  };
  auto it = kCodes.find(name);
  if (it == kCodes.end()) {
    return absl::InvalidArgumentError(absl::StrCat("unknown code ", name));
  }
  return it->second;
}

// Replaces the placeholders in every string field of `message`.
void Substitute(const std::map<std::string, std::string>& values,
                Message* message) {
  const Reflection* reflection = message->GetReflection();
  std::vector<const FieldDescriptor*> fields;
  reflection->ListFields(*message, &fields);
  for (const FieldDescriptor* field : fields) {
    if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (field->is_repeated()) {
        for (int i = 0; i < reflection->FieldSize(*message, field); ++i) {
          Substitute(values,
                     reflection->MutableRepeatedMessage(message, field, i));
        }
      } else {
        Substitute(values, reflection->MutableMessage(message, field));
      }
    } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_STRING &&
               !field->is_repeated()) {
      auto it = values.find(reflection->GetString(*message, field));
      if (it != values.end()) reflection->SetString(message, field, it->second);
    }
  }
}

// Applies `grow` to `message` (see Grow in fuzz_input.proto).
absl::Status ApplyGrow(const Grow& grow, Message* message) {
  std::vector<std::string> path;
  std::stringstream parts(grow.field());
  for (std::string part; std::getline(parts, part, '.');) path.push_back(part);
  for (size_t i = 0; i < path.size(); ++i) {
    const FieldDescriptor* field =
        message->GetDescriptor()->FindFieldByName(path[i]);
    if (field == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("grow.field: no field ", path[i], " in ",
                       message->GetDescriptor()->full_name()));
    }
    const Reflection* reflection = message->GetReflection();
    if (i + 1 < path.size()) {
      if (!field->is_repeated()) {
        message = reflection->MutableMessage(message, field);
        continue;
      }
      // A repeated message field: the next part is the index.
      int index = -1;
      if (!absl::SimpleAtoi(path[++i], &index) || index < 0 ||
          index >= reflection->FieldSize(*message, field) ||
          i + 1 == path.size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "grow.field: ", path[i], " is not an element of ", field->name()));
      }
      message = reflection->MutableRepeatedMessage(message, field, index);
      continue;
    }
    if (field->is_repeated()) {
      if (reflection->FieldSize(*message, field) == 0) {
        return absl::InvalidArgumentError("grow.count: the field is empty");
      }
      while (static_cast<uint64_t>(reflection->FieldSize(*message, field)) <
             grow.count()) {
        if (field->cpp_type() == FieldDescriptor::CPPTYPE_ENUM) {
          reflection->AddEnumValue(
              message, field,
              reflection->GetRepeatedEnumValue(*message, field, 0));
        } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
          reflection->AddString(
              message, field,
              reflection->GetRepeatedString(*message, field, 0));
        } else {
          return absl::InvalidArgumentError("grow: unsupported field type");
        }
      }
      return absl::OkStatus();
    }
    if (field->cpp_type() != FieldDescriptor::CPPTYPE_STRING) {
      return absl::InvalidArgumentError("grow.bytes: not a string field");
    }
    const std::string fill = grow.fill().empty() ? "x" : grow.fill();
    std::string value = reflection->GetString(*message, field);
    while (value.size() < grow.bytes()) value += fill;
    value.resize(grow.bytes());
    reflection->SetString(message, field, value);
  }
  return absl::OkStatus();
}

// Where the "request" of a case lives, to grow and substitute in.
Message* RequestOf(HostileCase* c) {
  switch (c->request_case()) {
    case HostileCase::kCall: {
      SchedulerCall* call = c->mutable_call();
      const FieldDescriptor* field = call->GetDescriptor()->FindFieldByNumber(
          static_cast<int>(call->request_case()));
      if (field == nullptr) return call;
      return call->GetReflection()->MutableMessage(call, field);
    }
    case HostileCase::kConnect:
      return c->mutable_connect();
    case HostileCase::kUpload:
      if (c->upload().chunks().empty()) return c->mutable_upload();
      return c->mutable_upload()->mutable_chunks(0);
    case HostileCase::kDownload:
      return c->mutable_download();
    default:
      return c;
  }
}

class HostileRequestsTest : public ::testing::TestWithParam<int> {
 protected:
  static void SetUpTestSuite() {
    // Hostile bytes make protobuf log; the statuses are what is checked.
    google::protobuf::SetLogHandler(nullptr);
    server::ServerOptions options;
    options.durable = false;
    // The running job keeps its worker for the whole suite.
    options.lease_grace = absl::Minutes(30);
    auto s = TestScheduler::Start(options);
    ASSERT_TRUE(s.ok()) << s.status();
    scheduler_ = s->release();
    channel_ = new std::shared_ptr<grpc::Channel>(scheduler_->TcpChannel());

    // A cancelled job.
    cancelled_ = new std::string(Submit("hostile-cancelled"));
    v1::CancelJobRequest cancel;
    cancel.set_job_id(*cancelled_);
    ASSERT_TRUE(CallScheduler(channel(), CANCEL_JOB, cancel.SerializeAsString(),
                              kDeadline)
                    .status.ok());

    // A job running on a worker.
    running_ = new std::string(Submit("hostile-running"));
    worker_ = new RawConnect(channel(), absl::Hours(1));
    v1::WorkerMessage hello;
    hello.mutable_register_()->set_name("hostile-worker");
    hello.mutable_register_()->mutable_capabilities()->set_device_kind(
        v1::DEVICE_KIND_CPU);
    hello.mutable_register_()->mutable_capabilities()->add_native_precisions(
        v1::PRECISION_FP32);
    hello.mutable_register_()->mutable_capabilities()->set_slots(1);
    ASSERT_TRUE(worker_->Send(hello));
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (running_attempt_ == 0 && absl::Now() < deadline) {
      std::vector<v1::SchedulerMessage> received = worker_->Received();
      for (const v1::SchedulerMessage& m : received) {
        if (m.has_assignment() && m.assignment().job_id() == *running_) {
          running_attempt_ = m.assignment().attempt();
        }
      }
      worker_->WaitFor(received.size(), absl::Milliseconds(100));
    }
    ASSERT_GT(running_attempt_, 0) << "no assignment for " << *running_;
    v1::WorkerMessage started;
    started.mutable_started()->set_job_id(*running_);
    started.mutable_started()->set_attempt(running_attempt_);
    ASSERT_TRUE(worker_->Send(started));
    // The stream is asynchronous: wait until the scheduler has applied
    // Started, so every case's after-check sees the job RUNNING.
    v1::GetJobRequest get;
    get.set_job_id(*running_);
    v1::Job job;
    while (absl::Now() < deadline) {
      CallResult r =
          CallScheduler(channel(), GET_JOB, get.SerializeAsString(), kDeadline);
      ASSERT_TRUE(r.status.ok()) << r.status.error_message();
      ASSERT_TRUE(job.ParseFromString(r.first));
      if (job.state() == v1::JOB_STATE_RUNNING) break;
      absl::SleepFor(absl::Milliseconds(10));
    }
    ASSERT_EQ(job.state(), v1::JOB_STATE_RUNNING) << *running_;
  }

  static void TearDownTestSuite() {
    delete worker_;
    delete channel_;
    delete scheduler_;
  }

  static grpc::Channel* channel() { return channel_->get(); }

  static std::string Submit(const std::string& name) {
    v1::SubmitJobRequest request;
    request.mutable_spec()->set_name(name);
    request.mutable_spec()->mutable_model()->set_builtin("mlp");
    request.mutable_spec()->mutable_data()->set_kind(v1::DATA_KIND_SYNTHETIC);
    request.mutable_spec()->set_steps(10);
    request.mutable_spec()->set_precision(v1::PRECISION_FP32);
    CallResult r = CallScheduler(channel(), SUBMIT_JOB,
                                 request.SerializeAsString(), kDeadline);
    v1::SubmitJobResponse response;
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_TRUE(response.ParseFromString(r.first));
    return response.job().id();
  }

  // Sends the case and returns the status it got.
  grpc::Status Send(HostileCase c) {
    Substitute({{"$RUNNING", *running_}, {"$CANCELLED", *cancelled_}}, &c);
    if (c.has_grow()) {
      absl::Status grown = ApplyGrow(c.grow(), RequestOf(&c));
      if (!grown.ok()) {
        ADD_FAILURE() << grown;
        return grpc::Status::OK;
      }
    }
    switch (c.request_case()) {
      case HostileCase::kCall: {
        auto [method, bytes] = Encode(c.call());
        return CallScheduler(channel(), method, bytes, kDeadline).status;
      }
      case HostileCase::kConnect: {
        RawConnect connect(channel(), kDeadline);
        for (const ConnectMessage& m : c.connect().messages()) {
          bool sent =
              m.has_raw() ? connect.Send(m.raw()) : connect.Send(m.message());
          if (!sent) break;  // the scheduler ended the stream
        }
        return connect.HangUp();
      }
      case HostileCase::kUpload: {
        Upload upload = c.upload();
        std::string all;
        for (const auto& chunk : upload.chunks()) all += chunk.data();
        if (upload.seal() && !upload.chunks().empty()) {
          v1::CheckpointChunk* last =
              upload.mutable_chunks(upload.chunks_size() - 1);
          last->set_sha256(server::Sha256Hex(all));
          last->set_total_bytes(static_cast<int64_t>(all.size()));
        }
        std::vector<std::string> chunks;
        for (v1::CheckpointChunk& chunk : *upload.mutable_chunks()) {
          if (chunk.job_id() == *running_) {
            chunk.set_attempt(running_attempt_ + chunk.attempt());
          }
          chunks.push_back(chunk.SerializeAsString());
        }
        for (const std::string& raw : upload.raw_chunks()) {
          chunks.push_back(raw);
        }
        v1::UploadCheckpointResponse response;
        return UploadRaw(channel(), chunks, kDeadline, &response);
      }
      case HostileCase::kDownload:
        return Download(channel(), c.download().SerializeAsString(), kDeadline)
            .first;
      default:
        ADD_FAILURE() << "case " << c.name() << " has no request";
        return grpc::Status::OK;
    }
  }

  // The scheduler still answers, and the running job is still there.
  void ExpectServing() {
    v1::GetJobRequest get;
    get.set_job_id(*running_);
    CallResult r =
        CallScheduler(channel(), GET_JOB, get.SerializeAsString(), kDeadline);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    v1::Job job;
    ASSERT_TRUE(job.ParseFromString(r.first));
    EXPECT_EQ(job.state(), v1::JOB_STATE_RUNNING);
    EXPECT_TRUE(
        CallScheduler(channel(), LIST_WORKERS, "", kDeadline).status.ok());
  }

  static TestScheduler* scheduler_;
  static std::shared_ptr<grpc::Channel>* channel_;
  static RawConnect* worker_;
  static std::string* running_;
  static std::string* cancelled_;
  static int running_attempt_;
};

TestScheduler* HostileRequestsTest::scheduler_ = nullptr;
std::shared_ptr<grpc::Channel>* HostileRequestsTest::channel_ = nullptr;
RawConnect* HostileRequestsTest::worker_ = nullptr;
std::string* HostileRequestsTest::running_ = nullptr;
std::string* HostileRequestsTest::cancelled_ = nullptr;
int HostileRequestsTest::running_attempt_ = 0;

TEST(HostileRequestsTableTest, HasEnoughDistinctCases) {
  ASSERT_NE(Cases().cases(0).name(), "unreadable_case_file")
      << HALFTIME_HOSTILE_REQUESTS << " does not parse";
  EXPECT_GE(Cases().cases_size(), 100);
  std::set<std::string> names;
  for (const HostileCase& c : Cases().cases()) {
    EXPECT_TRUE(names.insert(c.name()).second) << "duplicate " << c.name();
    EXPECT_TRUE(CodeByName(c.expect_code()).ok())
        << c.name() << ": expect_code " << c.expect_code();
    EXPECT_NE(c.expect_code(), "OK") << c.name() << ": must be an error";
    EXPECT_FALSE(c.expect_message().empty()) << c.name();
  }
}

TEST_P(HostileRequestsTest, GetsItsExpectedErrorAndTheServerServesOn) {
  const HostileCase& c = Cases().cases(GetParam());
  absl::StatusOr<grpc::StatusCode> code = CodeByName(c.expect_code());
  ASSERT_TRUE(code.ok()) << code.status();
  grpc::Status status = Send(c);
  // In the XML report (--gtest_output=xml), for reviewing the answers.
  RecordProperty("code", status.error_code());
  RecordProperty("message", status.error_message().substr(0, 300));
  EXPECT_EQ(status.error_code(), *code)
      << c.name() << ": got " << status.error_code() << " \""
      << status.error_message() << "\"";
  EXPECT_NE(status.error_message().find(c.expect_message()), std::string::npos)
      << c.name() << ": the message \"" << status.error_message()
      << "\" does not hold \"" << c.expect_message() << "\"";
  EXPECT_EQ(Unclean(status), "") << c.name();
  // Errors stay short whatever the request held (trailers are limited).
  EXPECT_LE(status.error_message().size(), 4096u) << c.name();
  ExpectServing();
}

// Regression: savings a worker reports are not trusted. Extreme memory
// figures made baseline - peak overflow (UBSan: signed integer overflow in
// SavingsLedger::Derive), infinite times made totals and counters infinite.
TEST(HostileWorkerTest, ExtremeSavingsKeepTheLedgerFinite) {
  google::protobuf::SetLogHandler(nullptr);
  auto scheduler = TestScheduler::Start();
  ASSERT_TRUE(scheduler.ok()) << scheduler.status();
  std::shared_ptr<grpc::Channel> channel = (*scheduler)->TcpChannel();
  v1::SubmitJobRequest submit;
  submit.mutable_spec()->set_name("extreme-savings");
  submit.mutable_spec()->mutable_model()->set_builtin("mlp");
  submit.mutable_spec()->mutable_data()->set_kind(v1::DATA_KIND_SYNTHETIC);
  submit.mutable_spec()->set_steps(10);
  submit.mutable_spec()->set_precision(v1::PRECISION_FP32);
  ASSERT_TRUE(CallScheduler(channel.get(), SUBMIT_JOB,
                            submit.SerializeAsString(), kDeadline)
                  .status.ok());

  RawConnect worker(channel.get(), kDeadline);
  v1::WorkerMessage m;
  m.mutable_register_()->set_name("extreme");
  m.mutable_register_()->mutable_capabilities()->set_device_kind(
      v1::DEVICE_KIND_CPU);
  m.mutable_register_()->mutable_capabilities()->add_native_precisions(
      v1::PRECISION_FP32);
  m.mutable_register_()->mutable_capabilities()->set_slots(1);
  ASSERT_TRUE(worker.Send(m));
  v1::Assignment assignment;
  for (absl::Time end = absl::Now() + absl::Seconds(30);
       !assignment.attempt() && absl::Now() < end;) {
    std::vector<v1::SchedulerMessage> received = worker.Received();
    for (const v1::SchedulerMessage& r : received) {
      if (r.has_assignment()) assignment = r.assignment();
    }
    worker.WaitFor(received.size(), absl::Milliseconds(100));
  }
  ASSERT_GT(assignment.attempt(), 0) << "no assignment";
  m.Clear();
  m.mutable_started()->set_job_id(assignment.job_id());
  m.mutable_started()->set_attempt(assignment.attempt());
  ASSERT_TRUE(worker.Send(m));
  m.Clear();
  m.mutable_report()->set_job_id(assignment.job_id());
  m.mutable_report()->set_attempt(assignment.attempt());
  m.mutable_report()->mutable_report()->set_step(INT64_MAX);
  ASSERT_TRUE(worker.Send(m));
  m.Clear();
  v1::JobResult* result = m.mutable_result();
  result->set_job_id(assignment.job_id());
  result->set_attempt(assignment.attempt());
  result->set_outcome(v1::JOB_OUTCOME_SUCCEEDED);
  v1::Savings* savings = result->mutable_savings();
  savings->set_precision(v1::PRECISION_FP32);
  savings->set_baseline_step_seconds(1e308);
  savings->set_step_seconds(1e-308);
  savings->set_baseline_peak_memory_bytes(INT64_MIN);
  savings->set_peak_memory_bytes(INT64_MAX);
  savings->set_probe_seconds(-std::numeric_limits<double>::infinity());
  ASSERT_TRUE(worker.Send(m));

  v1::GetSavingsRequest request;
  request.set_job_id(assignment.job_id());
  v1::GetSavingsResponse response;
  for (absl::Time end = absl::Now() + absl::Seconds(30);
       response.jobs().empty() && absl::Now() < end;) {
    CallResult r = CallScheduler(channel.get(), GET_SAVINGS,
                                 request.SerializeAsString(), kDeadline);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    ASSERT_TRUE(response.ParseFromString(r.first));
    if (response.jobs().empty()) absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_EQ(response.jobs_size(), 1) << "the savings were not recorded";
  const v1::Savings& job = response.jobs(0);
  for (double figure : {job.speedup(), job.memory_saved_ratio(),
                        job.device_seconds_saved(), job.cost_saved()}) {
    EXPECT_TRUE(std::isfinite(figure)) << job.ShortDebugString();
  }
  EXPECT_EQ(job.baseline_peak_memory_bytes(), 0) << "negative: not measured";
  ASSERT_EQ(response.totals_size(), 1);
  EXPECT_TRUE(std::isfinite(response.totals(0).device_seconds_saved()));
  EXPECT_TRUE(std::isfinite(response.totals(0).mean_speedup()));
  EXPECT_TRUE(worker.HangUp().ok());
}

INSTANTIATE_TEST_SUITE_P(Table, HostileRequestsTest,
                         ::testing::ValuesIn(CaseIndexes()),
                         [](const ::testing::TestParamInfo<int>& info) {
                           std::string name = Cases().cases(info.param).name();
                           for (char& c : name) {
                             if (!absl::ascii_isalnum(
                                     static_cast<unsigned char>(c)))
                               c = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace halftime::fuzz
