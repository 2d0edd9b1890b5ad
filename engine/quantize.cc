#include "engine/quantize.h"

#include <cmath>

namespace halftime::engine {
namespace {

at::Tensor CodeBookTensor(at::Device device) {
  const std::array<float, 16>& c = Nf4CodeBook();
  return at::tensor(at::ArrayRef<float>(c.data(), c.size()),
                    at::TensorOptions().dtype(at::kFloat).device(device));
}

// The code values of both nibbles of every byte value: [256, 2], high
// nibble first, so that unpacking is one lookup per byte.
at::Tensor PairTable(at::Device device) {
  const at::Tensor codes = CodeBookTensor(device);
  const at::Tensor bytes =
      at::arange(256, at::TensorOptions().dtype(at::kLong).device(device));
  return at::stack({codes.index_select(0, bytes.div(16, "floor")),
                    codes.index_select(0, bytes.remainder(16))},
                   1);
}

// Divides `x` by `divisor`, treating a zero divisor as 1 (an all-zero
// block or row stays zero).
at::Tensor SafeDivide(const at::Tensor& x, const at::Tensor& divisor) {
  return x / at::where(divisor == 0, at::ones_like(divisor), divisor);
}

double RelativeError(const at::Tensor& exact32, const at::Tensor& approx32) {
  const double norm = exact32.norm().item<double>();
  if (norm == 0.0) return 0.0;
  return (exact32 - approx32).norm().item<double>() / norm;
}

}  // namespace

const std::array<float, 16>& Nf4CodeBook() {
  static const std::array<float, 16> kCodes = {-1.0f,
                                               -0.6961928009986877f,
                                               -0.5250730514526367f,
                                               -0.39491748809814453f,
                                               -0.28444138169288635f,
                                               -0.18477343022823334f,
                                               -0.09105003625154495f,
                                               0.0f,
                                               0.07958029955625534f,
                                               0.16093020141124725f,
                                               0.24611230194568634f,
                                               0.33791524171829224f,
                                               0.44070982933044434f,
                                               0.5626170039176941f,
                                               0.7229568362236023f,
                                               1.0f};
  return kCodes;
}

std::shared_ptr<FrozenWeight> FrozenWeight::Make(FrozenStorage storage,
                                                 const at::Tensor& weight,
                                                 at::ScalarType compute_dtype) {
  std::shared_ptr<FrozenWeight> w(new FrozenWeight);
  w->storage_ = storage;
  w->compute_dtype_ = compute_dtype;
  w->rows_ = weight.size(0);
  w->cols_ = weight.size(1);
  return w;
}

std::shared_ptr<FrozenWeight> FrozenWeight::Dense(
    const at::Tensor& weight, at::ScalarType compute_dtype) {
  auto w = Make(FrozenStorage::kDense, weight, compute_dtype);
  w->data_ = weight.detach();
  return w;
}

std::shared_ptr<FrozenWeight> FrozenWeight::Nf4(const at::Tensor& weight,
                                                bool double_quant,
                                                at::ScalarType compute_dtype) {
  auto w = Make(FrozenStorage::kNf4, weight, compute_dtype);
  const at::Tensor flat = weight.detach().to(at::kFloat).reshape({-1});
  const int64_t n = flat.numel();
  const int64_t blocks = (n + kNf4BlockSize - 1) / kNf4BlockSize;
  const at::Tensor padded =
      at::constant_pad_nd(flat, {0, blocks * kNf4BlockSize - n})
          .view({blocks, kNf4BlockSize});
  const at::Tensor absmax = std::get<0>(padded.abs().max(1));
  const at::Tensor normalized = SafeDivide(padded, absmax.unsqueeze(1));
  // The index of the nearest code: the number of midpoints strictly below
  // the value, so a value on a midpoint takes the lower code.
  const at::Tensor codes = CodeBookTensor(flat.device());
  const at::Tensor midpoints =
      (codes.narrow(0, 0, 15) + codes.narrow(0, 1, 15)) / 2;
  const at::Tensor index =
      at::searchsorted(midpoints, normalized.reshape({-1}).contiguous())
          .view({-1, 2});
  w->data_ = (index.select(1, 0) * 16 + index.select(1, 1)).to(at::kByte);
  if (double_quant) {
    const int64_t groups =
        (blocks + kNf4ScaleGroupSize - 1) / kNf4ScaleGroupSize;
    w->scale_offset_ = absmax.mean();
    const at::Tensor centered =
        at::constant_pad_nd(absmax - w->scale_offset_,
                            {0, groups * kNf4ScaleGroupSize - blocks})
            .view({groups, kNf4ScaleGroupSize});
    w->group_scales_ = std::get<0>(centered.abs().max(1));
    w->scales_ = (SafeDivide(centered, w->group_scales_.unsqueeze(1)) * 127)
                     .round()
                     .clamp(-127, 127)
                     .to(at::kChar)
                     .reshape({-1});
  } else {
    w->scales_ = absmax;
  }
  w->relative_error_ = RelativeError(flat.view({w->rows_, w->cols_}),
                                     w->Materialize(at::kFloat));
  return w;
}

std::shared_ptr<FrozenWeight> FrozenWeight::Int8(const at::Tensor& weight,
                                                 at::ScalarType compute_dtype) {
  auto w = Make(FrozenStorage::kInt8, weight, compute_dtype);
  const at::Tensor w32 = weight.detach().to(at::kFloat);
  w->scales_ = std::get<0>(w32.abs().max(1, /*keepdim=*/true)) / 127;
  w->data_ = SafeDivide(w32, w->scales_).round().clamp(-127, 127).to(at::kChar);
  w->relative_error_ = RelativeError(w32, w->Materialize(at::kFloat));
  return w;
}

at::Tensor FrozenWeight::Materialize(at::ScalarType dtype) const {
  switch (storage_) {
    case FrozenStorage::kDense:
      return data_.to(dtype);
    case FrozenStorage::kInt8:
      return (data_.to(at::kFloat) * scales_).to(dtype);
    case FrozenStorage::kNf4:
      break;
  }
  at::Tensor absmax = scales_;
  if (group_scales_.defined()) {
    absmax = (scales_.to(at::kFloat).view({-1, kNf4ScaleGroupSize}) / 127 *
                  group_scales_.unsqueeze(1) +
              scale_offset_)
                 .reshape({-1});
  }
  const int64_t blocks = data_.numel() * 2 / kNf4BlockSize;
  const at::Tensor values = PairTable(data_.device())
                                .index_select(0, data_.to(at::kLong))
                                .view({blocks, kNf4BlockSize});
  return (values * absmax.narrow(0, 0, blocks).unsqueeze(1))
      .reshape({-1})
      .narrow(0, 0, rows_ * cols_)
      .view({rows_, cols_})
      .to(dtype);
}

void FrozenWeight::To(at::Device device) {
  auto move = [&](at::Tensor& t) {
    if (t.defined()) t = t.to(device);
  };
  move(data_);
  move(scales_);
  move(group_scales_);
  move(scale_offset_);
}

int64_t FrozenWeight::bytes() const {
  int64_t n = 0;
  for (const at::Tensor* t :
       {&data_, &scales_, &group_scales_, &scale_offset_}) {
    if (t->defined()) n += static_cast<int64_t>(t->nbytes());
  }
  return n;
}

}  // namespace halftime::engine
