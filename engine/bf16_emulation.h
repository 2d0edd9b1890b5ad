// bf16 compute on a CPU without native bf16 (no avx512_bf16/amx_bf16).
//
// There, libtorch 1.13's bf16 GEMMs fall to naive loops (~4 GFLOP/s against
// ~100 for fp32) and some bf16 elementwise kernels are several times slower
// than fp32 (GELU forward 7x, backward 5x). This module computes each such
// op in fp32 instead: it widens its bf16 operands to fp32 a slice at a time,
// runs the fp32 kernel (OpenBLAS for GEMMs) and rounds the result to bf16.
// A product of two bf16 numbers is exact in fp32, so an emulated GEMM equals
// a native bf16 GEMM with fp32 accumulation up to summation order. Inputs,
// outputs and what autograd saves stay bf16; only one slice's fp32 copies
// exist at a time, so a bf16 job's memory saving is the native one.
//
// The model code asks EmulatesBf16Gemm/EmulatesBf16Op before each matmul or
// GELU and calls the Emulated* functions when they say so; nothing else
// decides it.
//
// Thread safety: the functions are thread-safe; SetBf16EmulationForTesting
// must not race with training.

#ifndef HALFTIME_ENGINE_BF16_EMULATION_H_
#define HALFTIME_ENGINE_BF16_EMULATION_H_

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <string>

namespace halftime::engine {

// Whether a GEMM on `operand` (a CPU tensor) computes in bf16 here and must
// be emulated: the operand is bf16, or fp32 under bf16 CPU autocast, and the
// CPU lacks native bf16 (CpuBf16Native() in device.h), or emulation is
// forced for a test. False for CUDA tensors.
bool EmulatesBf16Gemm(const at::Tensor& operand);

// Whether an elementwise op on `x` (GELU) computes in bf16 on a CPU that
// lacks native bf16 (autocast leaves GELU in its input's dtype).
bool EmulatesBf16Op(const at::Tensor& x);

// Makes EmulatesBf16* answer `forced` (true: emulate even where bf16 is
// native, false: never) until ClearBf16EmulationForTesting. For tests that
// compare the emulated path with the native one on the same machine.
void SetBf16EmulationForTesting(bool forced);
void ClearBf16EmulationForTesting();

// y = x · weight^T + bias, differentiable, computed in fp32 slices and
// rounded to bf16. Under CPU autocast the fp32 operands are first cast to
// bf16 as autocast would (weights through its per-step cache), so the
// result, and what is saved for backward, are bf16 as in native autocast.
// The backward widens each slice of the output gradient once for the
// weight, bias and input gradients, and writes the input gradient over the
// input when nothing else holds it (so, like the native 16-bit Linear, it
// never holds both). `x` is
// [..., in], `weight` [out, in], `bias` [out] or none.
at::Tensor EmulatedLinear(const at::Tensor& x, const at::Tensor& weight,
                          const c10::optional<at::Tensor>& bias);

// a · b for a [..., n, k] and b [..., k, m] with equal batch dimensions,
// differentiable, computed in fp32 slices of the batch and rounded to bf16
// (fp32 operands under autocast are cast to bf16 first).
at::Tensor EmulatedMatmul(const at::Tensor& a, const at::Tensor& b);

// GELU (`approximate`: "none", the erf form, or "tanh") of a bf16 tensor,
// differentiable, computed in fp32 row slices and rounded to bf16; saves
// only its bf16 input.
at::Tensor EmulatedGelu(const at::Tensor& x,
                        const std::string& approximate = "none");

}  // namespace halftime::engine

#endif  // HALFTIME_ENGINE_BF16_EMULATION_H_
