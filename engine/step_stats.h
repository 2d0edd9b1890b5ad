// How a run's step times become one figure: the median of the steady steps,
// warm-up excluded. The engine's summary, the worker's fp32 probe and the
// worker's savings all read step times through these functions, so a probe
// and a full run of the same spec are measured alike. Header-only, standard
// library only: the worker daemon (no libtorch) includes it too.
//
// Thread safety: pure functions.

#ifndef HALFTIME_ENGINE_STEP_STATS_H_
#define HALFTIME_ENGINE_STEP_STATS_H_

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace halftime::engine {

// Leading steps of a run of `steps` steps that are warm-up: the first
// touches of weights, gradients and optimizer state, oneDNN's primitive
// creation and the allocator's first growth. Two steps once a run has six,
// one from three, none below (a figure from nothing would be worse).
inline size_t WarmupSteps(size_t steps) {
  return steps >= 6 ? 2 : steps >= 3 ? 1 : 0;
}

// The median of `values` after the first WarmupSteps(values.size()); the
// mean of the middle two for an even count; 0 when empty.
inline double SteadyMedian(std::vector<double> values) {
  const size_t skip = WarmupSteps(values.size());
  values.erase(values.begin(), values.begin() + static_cast<long>(skip));
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

// |a - b| / b: how far a figure is from its reference (infinity when the
// reference is 0).
inline double RelativeDifference(double a, double b) {
  return b == 0 ? INFINITY : std::abs(a - b) / std::abs(b);
}

}  // namespace halftime::engine

#endif  // HALFTIME_ENGINE_STEP_STATS_H_
