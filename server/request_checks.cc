#include "server/request_checks.h"

#include "absl/strings/str_cat.h"
#include "common/spec.h"

namespace halftime::server {
namespace {

using grpc::experimental::InterceptionHookPoints;

// One per call of a unary or server-streaming method: remembers whether
// the request failed to parse, and if so rewrites the status gRPC sends.
class MalformedRequestInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit MalformedRequestInterceptor(absl::string_view method)
      : method_(method) {}

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::POST_RECV_MESSAGE) &&
        methods->GetRecvMessage() == nullptr) {
      // The one request message of the call is missing: it did not parse.
      malformed_ = true;
    }
    if (malformed_ && methods->QueryInterceptionHookPoint(
                          InterceptionHookPoints::PRE_SEND_STATUS)) {
      grpc::Status status = methods->GetSendStatus();
      // gRPC fails such calls with UNIMPLEMENTED (callback API) or
      // INTERNAL (sync API), both without a useful message.
      if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED ||
          status.error_code() == grpc::StatusCode::INTERNAL) {
        methods->ModifySendStatus(
            grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                         MalformedRequestMessage(method_)));
      }
    }
    methods->Proceed();
  }

 private:
  const std::string method_;
  bool malformed_ = false;
};

}  // namespace

absl::StatusOr<v1::JobSpec> CheckSubmitRequest(
    const v1::SubmitJobRequest& request) {
  const bool has_spec = request.has_spec();
  const bool has_text = !request.spec_text().empty();
  if (has_spec && has_text) {
    return absl::InvalidArgumentError(
        "spec, spec_text: set exactly one of them, not both");
  }
  if (!has_spec && !has_text) {
    return absl::InvalidArgumentError("spec: required (or spec_text)");
  }
  if (request.idempotency_key().size() > kMaxIdempotencyKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "idempotency_key: longer than ", kMaxIdempotencyKeyBytes, " bytes"));
  }
  v1::JobSpec spec;
  if (has_spec) {
    spec = request.spec();
    ApplyJobSpecDefaults(&spec);
    if (absl::Status s = ValidateJobSpec(spec); !s.ok()) return s;
  } else {
    absl::StatusOr<v1::JobSpec> parsed =
        ParseJobSpec(request.spec_text(), "spec_text");
    if (!parsed.ok()) return parsed.status();
    spec = *std::move(parsed);
  }
  if (absl::Status s = ValidateDataRootPaths(spec); !s.ok()) return s;
  return spec;
}

absl::Status CheckJobIdArgument(absl::string_view field,
                                absl::string_view job_id) {
  if (job_id.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": required"));
  }
  if (job_id.size() > kMaxJobIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", job_id.size(),
                     " bytes long; a job id has at most ", kMaxJobIdBytes));
  }
  return absl::OkStatus();
}

std::string MalformedRequestMessage(absl::string_view method) {
  return absl::StrCat(
      "request: cannot parse the ", method,
      " request: not a valid protobuf message of its type (malformed or "
      "truncated bytes, or a string field that is not valid UTF-8)");
}

grpc::experimental::Interceptor*
MalformedRequestInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  using Type = grpc::experimental::ServerRpcInfo::Type;
  if (info->type() != Type::UNARY && info->type() != Type::SERVER_STREAMING) {
    return nullptr;
  }
  return new MalformedRequestInterceptor(
      info->method() == nullptr ? "" : info->method());
}

}  // namespace halftime::server
