#include "engine/optimizer.h"

#include <ATen/CPUGeneratorImpl.h>
#ifdef HALFTIME_WITH_CUDA
#include <ATen/cuda/CUDAGeneratorImpl.h>
#endif

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <numeric>

namespace halftime::engine {
namespace {

constexpr double kPi = 3.14159265358979323846;

std::vector<int64_t> AllDims(const at::Tensor& t) {
  std::vector<int64_t> dims(t.dim());
  std::iota(dims.begin(), dims.end(), 0);
  return dims;
}

// Rounds fp32 `x` to bf16 stochastically: adds uniform noise below the bf16
// ulp to the fp32 bit pattern, then truncates.
at::Tensor StochasticRoundToBf16(const at::Tensor& x, at::Generator& gen) {
  at::Tensor bits = x.contiguous().view(at::kInt);
  at::Tensor noise = at::randint(0, 1 << 16, bits.sizes(), gen,
                                 bits.options().dtype(at::kInt));
  at::Tensor rounded = at::bitwise_and(bits + noise, -65536);
  return rounded.view(at::kFloat).to(at::kBFloat16);
}

// Stochastic rounding draws its noise on the weights' device: at::randint
// refuses a CPU generator for CUDA tensors.
at::Generator RoundingGenerator(
    const std::vector<std::pair<std::string, at::Tensor>>& params,
    uint64_t seed) {
#ifdef HALFTIME_WITH_CUDA
  if (!params.empty() && params.front().second.is_cuda()) {
    at::Generator gen = at::cuda::detail::createCUDAGenerator(
        params.front().second.device().index());
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(seed);
    return gen;
  }
#endif
  (void)params;
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

}  // namespace

GradCheck CheckGradients(const std::vector<at::Tensor>& grads, double scale,
                         double max_grad_norm) {
  GradCheck out;
  std::vector<at::Tensor> defined;
  defined.reserve(grads.size());
  for (const at::Tensor& g : grads) {
    if (g.defined()) defined.push_back(g);
  }
  if (defined.empty()) return out;
  const bool unscale = scale != 1.0;
  bool unscaled_in_place = false;
  at::Tensor found_inf_dev;
  // The fused op unscales in place: only fp32 grads (fp16-mixed) may take
  // it. It has no bf16 kernel, and unscaling fp16 grads (fp16-master) in
  // fp16 would flush small ones to zero (GradScaler refuses that too);
  // those keep the scale until the fp32 update, as on the CPU.
  const bool all_fp32 = std::all_of(
      defined.begin(), defined.end(),
      [](const at::Tensor& g) { return g.scalar_type() == at::kFloat; });
  if (defined.front().is_cuda() && unscale && all_fp32) {
    // Fused unscale + non-finite check over all grads (CUDA only in 1.13).
    found_inf_dev = at::zeros({}, defined.front().options().dtype(at::kFloat));
    at::Tensor inv = at::full({}, 1.0 / scale, found_inf_dev.options());
    at::_amp_foreach_non_finite_check_and_unscale_(defined, found_inf_dev, inv);
    unscaled_in_place = true;
  }
  // Still-scaled gradients are measured in double: squares of fp32 values
  // above 2^64 overflow, which with a large scale (2^120 is legal) would
  // turn every finite step into a false overflow.
  const bool scaled = unscale && !unscaled_in_place;
  std::vector<at::Tensor> norms;
  norms.reserve(defined.size());
  for (const at::Tensor& g : defined) {
    if (scaled) {
      norms.push_back(at::norm(g, 2, AllDims(g), false, at::kDouble));
    } else if (g.scalar_type() == at::kFloat) {
      norms.push_back(at::norm(g, 2, AllDims(g), false));
    } else {
      norms.push_back(at::norm(g, 2, AllDims(g), false, at::kFloat));
    }
  }
  at::Tensor total =
      norms.size() == 1 ? norms[0] : at::norm(at::stack(norms), 2, {0}, false);
  if (scaled) total = (total * (1.0 / scale)).to(at::kFloat);
  if (found_inf_dev.defined())
    total = NormWithOverflowFlag(total, found_inf_dev);
  out.grad_norm = total.item<double>();  // the step's one host sync
  out.found_inf = !std::isfinite(out.grad_norm);
  if (out.found_inf) return out;
  at::Tensor coef;
  if (max_grad_norm > 0.0) {
    // Exactly torch.nn.utils.clip_grad_norm_'s arithmetic.
    coef = at::clamp_max((total + 1e-6).reciprocal() * max_grad_norm, 1.0);
  }
  if (unscale && !unscaled_in_place) {
    at::Tensor inv = at::full({}, 1.0 / scale, total.options());
    coef = coef.defined() ? coef * inv : inv;
  }
  out.grad_coef = coef;
  return out;
}

at::Tensor NormWithOverflowFlag(const at::Tensor& norm,
                                const at::Tensor& found_inf) {
  // Not norm + found_inf * inf: 0 * inf is NaN, which would turn every
  // clean step into an overflow.
  return norm.masked_fill(found_inf.gt(0),
                          std::numeric_limits<float>::infinity());
}

double LearningRate(const OptimizerOptions& opt, const LrScheduleOptions& s,
                    int64_t step, int64_t total_steps) {
  const double peak = opt.lr;
  if (s.warmup_steps > 0 && step < s.warmup_steps) {
    return peak * static_cast<double>(step + 1) / s.warmup_steps;
  }
  if (s.decay == LrDecay::kConstant) return peak;
  const double min_lr = peak * s.min_lr_ratio;
  const int64_t decay_steps = total_steps - s.warmup_steps;
  if (decay_steps <= 0) return peak;
  double progress = static_cast<double>(step - s.warmup_steps) /
                    static_cast<double>(decay_steps);
  progress = std::min(1.0, std::max(0.0, progress));
  if (s.decay == LrDecay::kCosine) {
    return min_lr + 0.5 * (peak - min_lr) * (1.0 + std::cos(kPi * progress));
  }
  return peak - (peak - min_lr) * progress;
}

Optimizer::Optimizer(std::vector<std::pair<std::string, at::Tensor>> params,
                     const OptimizerOptions& options, WeightLayout layout,
                     uint64_t seed)
    : options_(options),
      layout_(layout),
      weight_decay_(options.weight_decay >= 0.0
                        ? options.weight_decay
                        : (options.name == OptimizerName::kAdamW ? 0.01 : 0.0)),
      rounding_gen_(RoundingGenerator(params, seed)) {
  at::NoGradGuard no_grad;
  for (auto& [name, p] : params) {
    Slot s;
    s.name = name;
    s.param = p;
    s.decay = p.dim() >= 2;
    at::Tensor ref = p;
    if (layout_ == WeightLayout::kMaster) {
      s.master = p.detach().to(at::kFloat).clone();
      ref = s.master;
    }
    if (options_.name == OptimizerName::kAdamW) {
      s.exp_avg = at::zeros_like(ref);
      s.exp_avg_sq = at::zeros_like(ref);
    }
    if (layout_ == WeightLayout::kPure &&
        options_.pure_update == PureUpdate::kKahan) {
      s.compensation = at::zeros_like(p);
    }
    slots_.push_back(std::move(s));
  }
}

void Optimizer::Step(double lr, const at::Tensor& grad_coef) {
  at::NoGradGuard no_grad;
  ++steps_;
  if (layout_ == WeightLayout::kPure &&
      options_.pure_update == PureUpdate::kStochasticRounding) {
    // Re-seeded per step so the rounding is a function of (seed, step) and
    // needs no checkpointed generator state.
    std::lock_guard<std::mutex> lock(rounding_gen_.mutex());
    rounding_gen_.set_current_seed(0x9E3779B97F4A7C15ULL ^
                                   static_cast<uint64_t>(steps_));
  }
  for (Slot& s : slots_) {
    at::Tensor grad = s.param.grad();
    if (!grad.defined()) continue;
    switch (layout_) {
      case WeightLayout::kPlain:
        if (grad_coef.defined()) grad.mul_(grad_coef);
        StepPlain(s, grad, lr);
        break;
      case WeightLayout::kMaster: {
        at::Tensor g32 = grad.to(at::kFloat);
        if (grad_coef.defined()) g32.mul_(grad_coef);
        StepPlain(s, g32, lr);
        s.param.copy_(s.master);
        break;
      }
      case WeightLayout::kPure: {
        at::Tensor g32 = grad.to(at::kFloat);
        if (grad_coef.defined()) g32.mul_(grad_coef);
        StepPure(s, g32, lr);
        break;
      }
    }
  }
}

void Optimizer::StepPlain(Slot& s, const at::Tensor& grad, double lr) {
  at::Tensor& p = layout_ == WeightLayout::kMaster ? s.master : s.param;
  const double wd = s.decay ? weight_decay_ : 0.0;
  if (options_.name == OptimizerName::kAdamW) {
    // torch.optim.adamw._single_tensor_adamw, op for op.
    const double b1 = options_.beta1, b2 = options_.beta2;
    p.mul_(1 - lr * wd);
    s.exp_avg.mul_(b1).add_(grad, 1 - b1);
    s.exp_avg_sq.mul_(b2).addcmul_(grad, grad, 1 - b2);
    const double step = static_cast<double>(steps_);
    const double bc1 = 1 - std::pow(b1, step);
    const double bc2 = 1 - std::pow(b2, step);
    const double step_size = lr / bc1;
    at::Tensor denom =
        (s.exp_avg_sq.sqrt() / std::sqrt(bc2)).add_(options_.eps);
    p.addcdiv_(s.exp_avg, denom, -step_size);
  } else {
    // torch.optim.sgd._single_tensor_sgd (dampening 0, no nesterov).
    at::Tensor g = wd != 0.0 ? grad.add(p, wd) : grad;
    if (options_.momentum != 0.0) {
      if (!s.momentum_buf.defined()) {
        s.momentum_buf = g.clone().detach();
      } else {
        s.momentum_buf.mul_(options_.momentum).add_(g);
      }
      g = s.momentum_buf;
    }
    p.add_(g, -lr);
  }
}

at::Tensor Optimizer::Delta(Slot& s, const at::Tensor& g, const at::Tensor& p32,
                            double lr) {
  const double wd = s.decay ? weight_decay_ : 0.0;
  if (options_.name == OptimizerName::kAdamW) {
    const double b1 = options_.beta1, b2 = options_.beta2;
    at::Tensor m = s.exp_avg.to(at::kFloat).mul_(b1).add_(g, 1 - b1);
    at::Tensor v = s.exp_avg_sq.to(at::kFloat).mul_(b2).addcmul_(g, g, 1 - b2);
    s.exp_avg.copy_(m);
    s.exp_avg_sq.copy_(v);
    const double step = static_cast<double>(steps_);
    const double bc1 = 1 - std::pow(b1, step);
    const double bc2 = 1 - std::pow(b2, step);
    at::Tensor denom = (v.sqrt_() / std::sqrt(bc2)).add_(options_.eps);
    at::Tensor delta = m.div_(denom).mul_(-lr / bc1);
    if (wd != 0.0) delta.add_(p32, -lr * wd);
    return delta;
  }
  at::Tensor d = wd != 0.0 ? g.add(p32, wd) : g;
  if (options_.momentum != 0.0) {
    if (!s.momentum_buf.defined()) {
      s.momentum_buf = d.to(s.param.scalar_type());
    } else {
      d = s.momentum_buf.to(at::kFloat).mul_(options_.momentum).add_(d);
      s.momentum_buf.copy_(d);
    }
  }
  return d.mul(-lr);
}

void Optimizer::StepPure(Slot& s, const at::Tensor& g32, double lr) {
  at::Tensor p32 = s.param.to(at::kFloat);
  at::Tensor delta = Delta(s, g32, p32, lr);
  if (options_.pure_update == PureUpdate::kKahan) {
    // Kahan summation: the compensation carries what bf16 rounding dropped.
    at::Tensor y = delta.add_(s.compensation.to(at::kFloat));
    at::Tensor t = (p32 + y).to(s.param.scalar_type());
    s.compensation.copy_(y.sub_(t.to(at::kFloat).sub_(p32)));
    s.param.copy_(t);
  } else {
    s.param.copy_(StochasticRoundToBf16(p32.add_(delta), rounding_gen_));
  }
}

std::vector<std::pair<std::string, at::Tensor>> Optimizer::StateTensors()
    const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const Slot& s : slots_) {
    if (s.master.defined()) out.emplace_back(s.name + "/master", s.master);
    if (s.exp_avg.defined()) out.emplace_back(s.name + "/exp_avg", s.exp_avg);
    if (s.exp_avg_sq.defined()) {
      out.emplace_back(s.name + "/exp_avg_sq", s.exp_avg_sq);
    }
    if (s.momentum_buf.defined()) {
      out.emplace_back(s.name + "/momentum_buffer", s.momentum_buf);
    }
    if (s.compensation.defined()) {
      out.emplace_back(s.name + "/compensation", s.compensation);
    }
  }
  return out;
}

std::string Optimizer::LoadState(const std::map<std::string, at::Tensor>& state,
                                 int64_t steps) {
  at::NoGradGuard no_grad;
  auto load = [&](const Slot& s, const char* what, at::Tensor& dst,
                  bool required) -> std::string {
    auto it = state.find(s.name + "/" + what);
    if (it == state.end()) {
      return required ? "optimizer state " + s.name + "/" + what + " missing"
                      : "";
    }
    if (!dst.defined()) {
      dst =
          it->second.to(s.master.defined() ? at::kFloat : s.param.scalar_type())
              .clone();
      return "";
    }
    if (!dst.sizes().equals(it->second.sizes())) {
      return "optimizer state " + s.name + "/" + what + " has the wrong shape";
    }
    dst.copy_(it->second);
    return "";
  };
  const bool adam = options_.name == OptimizerName::kAdamW;
  for (Slot& s : slots_) {
    std::string err;
    if (s.master.defined()) {
      // A checkpoint from another precision has no master: use the weights.
      if (state.count(s.name + "/master"))
        err += load(s, "master", s.master, true);
    }
    if (adam) {
      err += load(s, "exp_avg", s.exp_avg, true);
      err += load(s, "exp_avg_sq", s.exp_avg_sq, true);
    } else {
      s.momentum_buf = at::Tensor();
      err += load(s, "momentum_buffer", s.momentum_buf, false);
    }
    if (s.compensation.defined()) {
      err += load(s, "compensation", s.compensation, false);
    }
    if (!err.empty()) return err;
  }
  steps_ = steps;
  return "";
}

std::vector<std::pair<std::string, at::Tensor>> Optimizer::Fp32Weights() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const Slot& s : slots_) {
    out.emplace_back(s.name, s.master.defined()
                                 ? s.master
                                 : s.param.detach().to(at::kFloat));
  }
  return out;
}

void Optimizer::SetWeights(
    const std::vector<std::pair<std::string, at::Tensor>>& w) {
  at::NoGradGuard no_grad;
  std::map<std::string, at::Tensor> by_name(w.begin(), w.end());
  for (Slot& s : slots_) {
    auto it = by_name.find(s.name);
    if (it == by_name.end()) continue;
    if (s.master.defined()) s.master.copy_(it->second);
    s.param.copy_(it->second);
  }
}

int64_t Optimizer::StateBytes() const {
  int64_t total = 0;
  for (const auto& [name, t] : StateTensors()) total += t.nbytes();
  return total;
}

}  // namespace halftime::engine
