// Helpers shared by the scheduler's tests: a fake clock, a recording worker
// sink, temporary directories and spec/capability builders.
#ifndef HALFTIME_TESTS_SERVER_TEST_UTIL_H_
#define HALFTIME_TESTS_SERVER_TEST_UTIL_H_

#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "halftime/v1/job_spec.pb.h"
#include "halftime/v1/worker.pb.h"
#include "halftime/v1/worker_gateway.pb.h"
#include "server/job_manager.h"
#include "server/sqlite_store.h"
#include "tests/testing/fake_clock.h"

namespace halftime::server::testing {

using ::halftime::testing::FakeClock;

// Records what the JobManager sends to one worker session.
//
// Thread-safety: thread-safe.
class RecordingSink : public WorkerSink {
 public:
  // Runs at the start of every Take(): the manager sends once a change is
  // durable, so tests set a hook that waits for the store.
  void set_before_take(std::function<void()> hook) {
    std::lock_guard<std::mutex> lock(mu_);
    before_take_ = std::move(hook);
  }
  void Send(const v1::SchedulerMessage& message) override {
    std::lock_guard<std::mutex> lock(mu_);
    messages_.push_back(message);
  }
  void Close(const absl::Status& status) override {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = status;
  }
  // Removes and returns what was sent so far.
  std::vector<v1::SchedulerMessage> Take() {
    std::function<void()> hook;
    {
      std::lock_guard<std::mutex> lock(mu_);
      hook = before_take_;
    }
    if (hook) hook();
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<v1::SchedulerMessage> out;
    out.swap(messages_);
    return out;
  }
  // Only the assignments among Take().
  std::vector<v1::Assignment> TakeAssignments() {
    std::vector<v1::Assignment> out;
    for (const auto& m : Take()) {
      if (m.has_assignment()) out.push_back(m.assignment());
    }
    return out;
  }
  absl::Status closed() {
    std::lock_guard<std::mutex> lock(mu_);
    return closed_;
  }

 private:
  std::mutex mu_;
  std::vector<v1::SchedulerMessage> messages_;
  absl::Status closed_;
  std::function<void()> before_take_;
};

// A fresh empty directory under $TMPDIR, removed by the destructor.
class TempDir {
 public:
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "halftime-test-XXXXXX")
            .string();
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Options of a store at `path`.
inline SqliteStore::Options StoreOptions(const std::string& path,
                                         bool durable) {
  SqliteStore::Options options;
  options.path = path;
  options.durable = durable;
  return options;
}

// A valid spec (defaults not applied).
inline v1::JobSpec Spec(const std::string& name,
                        v1::Precision precision = v1::PRECISION_FP32,
                        int priority = 0) {
  v1::JobSpec spec;
  spec.set_name(name);
  spec.mutable_model()->set_builtin("mlp");
  spec.mutable_data()->set_kind(v1::DATA_KIND_SYNTHETIC);
  spec.set_steps(100);
  spec.set_precision(precision);
  spec.set_priority(priority);
  return spec;
}

inline v1::WorkerCapabilities CpuCaps(int slots = 1, bool bf16 = true) {
  v1::WorkerCapabilities caps;
  caps.set_device_kind(v1::DEVICE_KIND_CPU);
  caps.set_device_name("test cpu");
  caps.set_memory_bytes(int64_t{16} << 30);
  caps.add_native_precisions(v1::PRECISION_FP32);
  // Without native bf16, a CPU worker emulates the bf16 modes.
  for (v1::Precision p : {v1::PRECISION_BF16_MIXED, v1::PRECISION_BF16_MASTER,
                          v1::PRECISION_BF16_PURE}) {
    if (bf16) {
      caps.add_native_precisions(p);
    } else {
      caps.add_emulated_precisions(p);
    }
  }
  caps.set_slots(slots);
  return caps;
}

inline v1::WorkerCapabilities CudaCaps(const std::string& cc, int slots = 1,
                                       int64_t memory = int64_t{80} << 30) {
  v1::WorkerCapabilities caps;
  caps.set_device_kind(v1::DEVICE_KIND_CUDA);
  caps.set_device_name("NVIDIA Test GPU");
  caps.set_compute_capability(cc);
  caps.set_memory_bytes(memory);
  caps.add_native_precisions(v1::PRECISION_FP32);
  caps.add_native_precisions(v1::PRECISION_FP16_MIXED);
  caps.add_native_precisions(v1::PRECISION_FP16_MASTER);
  if (cc >= "8.0") {
    caps.add_native_precisions(v1::PRECISION_TF32);
    caps.add_native_precisions(v1::PRECISION_BF16_MIXED);
  }
  caps.set_slots(slots);
  return caps;
}

}  // namespace halftime::server::testing

#endif  // HALFTIME_TESTS_SERVER_TEST_UTIL_H_
