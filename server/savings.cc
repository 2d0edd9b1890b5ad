#include "server/savings.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/memory_estimate.h"

namespace halftime::server {

absl::Status PriceTable::AddFlag(const std::string& flag) {
  size_t eq = flag.rfind('=');
  if (eq == std::string::npos || eq == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--device-price: expected NAME=PRICE, got \"", flag, "\""));
  }
  double price = 0;
  if (!absl::SimpleAtod(absl::string_view(flag).substr(eq + 1), &price) ||
      !std::isfinite(price) || price < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--device-price: price must be a number >= 0, got \"",
                     flag.substr(eq + 1), "\""));
  }
  by_device[flag.substr(0, eq)] = price;
  return absl::OkStatus();
}

double PriceTable::PriceFor(const std::string& device_name) const {
  if (auto it = by_device.find(device_name); it != by_device.end()) {
    return it->second;
  }
  const std::pair<const std::string, double>* best = nullptr;
  for (const auto& entry : by_device) {
    if (absl::StrContains(absl::AsciiStrToLower(device_name),
                          absl::AsciiStrToLower(entry.first)) &&
        (best == nullptr || entry.first.size() > best->first.size())) {
      best = &entry;
    }
  }
  return best != nullptr ? best->second : default_price;
}

void AddAdapterFigures(const v1::JobSpec& spec, bool cuda,
                       v1::Savings* savings) {
  if (spec.adapter().kind() == v1::ADAPTER_KIND_UNSPECIFIED) return;
  savings->set_adapter(true);
  absl::StatusOr<v1::ModelShape> shape =
      ModelShapeOf(spec, /*read_folder=*/false);
  if (!shape.ok()) return;
  v1::JobSpec full = spec;
  full.clear_adapter();
  savings->set_full_finetune_estimated_bytes(
      EstimateMemory(full, *shape, v1::PRECISION_FP32,
                     v1::BASE_DTYPE_UNSPECIFIED, EstimateDevice{cuda, false})
          .total_bytes());
}

SavingsLedger::SavingsLedger(PriceTable prices, SchedulerMetrics* metrics)
    : prices_(std::move(prices)), metrics_(metrics) {}

namespace {

// A measured amount as the ledger uses it: the figures come from workers,
// so NaN, infinities and negative amounts count as not measured (0).
double Measured(double value) {
  return std::isfinite(value) && value > 0 ? value : 0;
}
int64_t Measured(int64_t value) { return value > 0 ? value : 0; }

// A derived figure: one that overflowed to an infinity (or NaN) is 0.
double Finite(double value) { return std::isfinite(value) ? value : 0; }

}  // namespace

v1::Savings SavingsLedger::Derive(const v1::Savings& measured,
                                  int64_t steps_run) const {
  v1::Savings s = measured;
  s.set_baseline_step_seconds(Measured(s.baseline_step_seconds()));
  s.set_step_seconds(Measured(s.step_seconds()));
  s.set_baseline_tokens_per_second(Measured(s.baseline_tokens_per_second()));
  s.set_tokens_per_second(Measured(s.tokens_per_second()));
  s.set_probe_seconds(Measured(s.probe_seconds()));
  s.set_baseline_peak_memory_bytes(Measured(s.baseline_peak_memory_bytes()));
  s.set_peak_memory_bytes(Measured(s.peak_memory_bytes()));
  s.set_speedup(s.step_seconds() > 0
                    ? Finite(s.baseline_step_seconds() / s.step_seconds())
                    : 0);
  // Both are >= 0, so the difference cannot overflow.
  s.set_memory_saved_bytes(s.baseline_peak_memory_bytes() -
                           s.peak_memory_bytes());
  s.set_memory_saved_ratio(
      s.baseline_peak_memory_bytes() > 0
          ? static_cast<double>(s.memory_saved_bytes()) /
                static_cast<double>(s.baseline_peak_memory_bytes())
          : 0);
  s.set_device_seconds_saved(
      Finite(static_cast<double>(std::max<int64_t>(steps_run, 0)) *
                 (s.baseline_step_seconds() - s.step_seconds()) -
             s.probe_seconds()));
  s.set_device_hour_price(prices_.PriceFor(s.device_name()));
  s.set_cost_saved(
      Finite(s.device_seconds_saved() / 3600.0 * s.device_hour_price()));
  return s;
}

void SavingsLedger::Record(const std::string& job_id,
                           const v1::Savings& savings) {
  {
    absl::MutexLock lock(&mu_);
    auto [it, inserted] = by_job_.insert_or_assign(job_id, savings);
    if (inserted) order_.push_back(job_id);
    // Only measured, fair baselines seed the cache; a cached one is a copy.
    if (savings.baseline() == v1::BASELINE_MODE_PROBE &&
        !savings.baseline_degraded() && !savings.fingerprint().empty() &&
        savings.baseline_step_seconds() > 0) {
      v1::Savings& b = baselines_[savings.fingerprint()];
      b.Clear();
      b.set_fingerprint(savings.fingerprint());
      b.set_device_name(savings.device_name());
      b.set_baseline(v1::BASELINE_MODE_CACHED);
      b.set_baseline_step_seconds(savings.baseline_step_seconds());
      b.set_baseline_tokens_per_second(savings.baseline_tokens_per_second());
      b.set_baseline_peak_memory_bytes(savings.baseline_peak_memory_bytes());
    }
  }
  metrics_->AddSavings(savings);
}

std::optional<v1::Savings> SavingsLedger::CachedBaseline(
    const std::string& fingerprint) const {
  absl::MutexLock lock(&mu_);
  auto it = baselines_.find(fingerprint);
  if (it == baselines_.end()) return std::nullopt;
  return it->second;
}

absl::StatusOr<v1::Savings> SavingsLedger::ForJob(
    const std::string& job_id) const {
  absl::MutexLock lock(&mu_);
  auto it = by_job_.find(job_id);
  if (it == by_job_.end()) {
    return absl::NotFoundError(
        absl::StrCat("job ", job_id, " has no measured savings"));
  }
  return it->second;
}

std::vector<v1::PrecisionSavings> SavingsLedger::Totals() const {
  absl::MutexLock lock(&mu_);
  return TotalsLocked();
}

std::vector<v1::PrecisionSavings> SavingsLedger::TotalsLocked() const {
  // Emulated jobs (memory saved, time lost) apart from the native ones.
  std::map<std::pair<int, bool>, v1::PrecisionSavings> totals;
  for (const auto& [job_id, s] : by_job_) {
    v1::PrecisionSavings& t = totals[{s.precision(), s.emulated()}];
    t.set_precision(s.precision());
    t.set_emulated(s.emulated());
    // Measured against a crippled fp32: counted, kept out of every figure.
    if (s.baseline_degraded()) {
      t.set_degraded_jobs(t.degraded_jobs() + 1);
      continue;
    }
    t.set_jobs(t.jobs() + 1);
    t.set_device_seconds_saved(t.device_seconds_saved() +
                               s.device_seconds_saved());
    t.set_cost_saved(t.cost_saved() + s.cost_saved());
    // Running sums; divided below.
    t.set_mean_speedup(t.mean_speedup() + s.speedup());
    t.set_mean_memory_saved_ratio(t.mean_memory_saved_ratio() +
                                  s.memory_saved_ratio());
  }
  std::vector<v1::PrecisionSavings> out;
  for (auto& [key, t] : totals) {
    if (t.jobs() > 0) {
      const double n = static_cast<double>(t.jobs());
      t.set_mean_speedup(t.mean_speedup() / n);
      t.set_mean_memory_saved_ratio(t.mean_memory_saved_ratio() / n);
    }
    out.push_back(std::move(t));
  }
  return out;
}

v1::GetSavingsResponse SavingsLedger::Fleet() const {
  v1::GetSavingsResponse response;
  // One lock: the jobs and the totals describe the same records.
  absl::MutexLock lock(&mu_);
  for (const std::string& job_id : order_) {
    *response.add_jobs() = by_job_.at(job_id);
    response.add_job_ids(job_id);
  }
  for (v1::PrecisionSavings& t : TotalsLocked()) {
    *response.add_totals() = std::move(t);
  }
  response.set_currency(prices_.currency);
  return response;
}

}  // namespace halftime::server
