// Internal: a frozen weight matrix held in fewer bits than it computes in,
// for adapter jobs (adapter.base_dtype): plain 16-bit storage, 4-bit
// NormalFloat (QLoRA's NF4) or 8-bit per-row absmax. A FrozenWeight is
// turned back into a dense matrix (Materialize) one layer at a time, in
// forward and again in backward, with plain libtorch ops; the dense copy is
// never kept.
//
// NF4 (Dettmers et al., QLoRA, 2023): each block of 64 consecutive weights
// (row-major) is divided by its absolute maximum and each value is replaced
// by the index of the nearest of the 16 code values below (ties go to the
// lower index); two indices share a byte, the first in the high nibble.
// With double quantization the fp32 block maxima are stored as int8: their
// mean is subtracted, and each group of 256 is scaled linearly by its own
// absolute maximum to [-127, 127] (bitsandbytes uses its dynamic 8-bit map
// there instead; the 4-bit codes are the same). Storage per weight: 4.5
// bits, or 4.127 bits with double quantization.
//
// int8: each row (output channel) is divided by absmax(row) / 127 and
// rounded to the nearest integer; 8 bits per weight plus 4 bytes per row.
//
// Thread safety: a FrozenWeight is immutable after construction except for
// To(); share it across threads only for reading.

#ifndef HALFTIME_ENGINE_QUANTIZE_H_
#define HALFTIME_ENGINE_QUANTIZE_H_

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <memory>

namespace halftime::engine {

// How a FrozenWeight stores its values.
enum class FrozenStorage { kDense, kNf4, kInt8 };

// The 16 NF4 code values, ascending, as the QLoRA paper publishes them
// (bitsandbytes' get_4bit_type("nf4")).
const std::array<float, 16>& Nf4CodeBook();

// Weights per NF4 block, and block maxima per double-quantization group.
inline constexpr int64_t kNf4BlockSize = 64;
inline constexpr int64_t kNf4ScaleGroupSize = 256;

class FrozenWeight {
 public:
  // `weight` (a 2-D float tensor, any device) kept as it is, computed in
  // `compute_dtype`.
  static std::shared_ptr<FrozenWeight> Dense(const at::Tensor& weight,
                                             at::ScalarType compute_dtype);
  // NF4 blocks of `weight` (2-D, any float dtype); `double_quant` stores
  // the block maxima in 8 bits.
  static std::shared_ptr<FrozenWeight> Nf4(const at::Tensor& weight,
                                           bool double_quant,
                                           at::ScalarType compute_dtype);
  // Per-row absmax int8 of `weight` (2-D, any float dtype).
  static std::shared_ptr<FrozenWeight> Int8(const at::Tensor& weight,
                                            at::ScalarType compute_dtype);

  // The dense matrix in `dtype`, on the storage's device. A fresh tensor
  // for quantized storage; for dense storage the weight itself when it is
  // already in `dtype`.
  at::Tensor Materialize(at::ScalarType dtype) const;
  at::Tensor Materialize() const { return Materialize(compute_dtype_); }

  // Moves the storage to `device`.
  void To(at::Device device);

  FrozenStorage storage() const { return storage_; }
  at::ScalarType compute_dtype() const { return compute_dtype_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  // Bytes the storage holds (codes, scales and offsets).
  int64_t bytes() const;
  // ||W - Materialize(fp32)|| / ||W|| (Frobenius) for the matrix it was
  // built from; 0 for dense storage.
  double relative_error() const { return relative_error_; }

 private:
  FrozenWeight() = default;
  // An empty weight of `weight`'s shape with the given storage.
  static std::shared_ptr<FrozenWeight> Make(FrozenStorage storage,
                                            const at::Tensor& weight,
                                            at::ScalarType compute_dtype);

  FrozenStorage storage_ = FrozenStorage::kDense;
  at::ScalarType compute_dtype_ = at::kFloat;
  int64_t rows_ = 0, cols_ = 0;
  // kDense: the weight. kNf4: packed codes, uint8 [ceil(n / 2)] over the
  // row-major values padded to whole blocks. kInt8: int8 [rows, cols].
  at::Tensor data_;
  // kNf4: fp32 block maxima [blocks], or with double quantization int8
  // [blocks] (padded to whole groups). kInt8: fp32 row scales [rows, 1].
  at::Tensor scales_;
  // kNf4 with double quantization: fp32 [groups] group maxima, and the
  // mean of the block maxima (fp32 scalar tensor).
  at::Tensor group_scales_;
  at::Tensor scale_offset_;
  double relative_error_ = 0.0;
};

}  // namespace halftime::engine

#endif  // HALFTIME_ENGINE_QUANTIZE_H_
