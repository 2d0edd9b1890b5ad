"""PyTorch's own step time for the engine's GPT on one GPU, per precision
mode, in PyTorch's fastest eager arrangement: the reference precision_checks
--speed prints beside the engine's step times.

usage: python3 bench/cuda/pytorch_speed.py [--modes fp32,tf32,...]
           [--steps 10] [--warmup 3] [--batch 16] [--seq 1024]
           [--layers 12] [--embd 768] [--heads 12] [--vocab 50257]
           [--device cuda]

The model is the engine's GPT as tests/engine/python/gpt_parity.py
mirrors it (pre-LN, fp32 LayerNorm and loss, tied embeddings), with
attention through F.scaled_dot_product_attention (flash or memory-efficient
kernels, as the engine uses on CUDA) and AdamW(fused=True), zero_grad
(set_to_none) and clip_grad_norm_(1.0). Modes:
  fp32         IEEE fp32 matmuls (set_float32_matmul_precision("highest"))
  tf32         fp32 weights, TF32 matmuls ("high")
  fp16-mixed   torch.autocast(float16) + GradScaler
  bf16-mixed   torch.autocast(bfloat16)
  fp16-master, bf16-master
               16-bit weights for forward and backward, fp32 master copies
               the fused AdamW updates (fp16 with a loss scale and an
               overflow check, as GradScaler does), copied back each step
  bf16-pure    bf16 weights updated in place by AdamW (no master copy)
Prints one JSON object per mode: mode, median step seconds after warm-up,
tokens per second, peak allocated bytes (torch.cuda.max_memory_allocated).
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "engine",
                                "python"))
import gpt_parity  # noqa: E402

ALL_MODES = ["fp32", "tf32", "fp16-mixed", "bf16-mixed", "fp16-master",
             "bf16-master", "bf16-pure"]


def sdpa_forward(self, x):
    B, T, C = x.shape
    y = F.scaled_dot_product_attention(*self.heads(x), is_causal=True)
    return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


def step_times(a, mode):
    dev = torch.device(a.device)
    torch.manual_seed(1)
    torch.set_float32_matmul_precision("high" if mode == "tf32" else "highest")
    model = gpt_parity.Gpt(a.vocab, a.seq, a.embd, a.heads, a.layers).to(dev)
    half = {"fp16-master": torch.float16, "bf16-master": torch.bfloat16,
            "bf16-pure": torch.bfloat16}.get(mode)
    if half is not None:
        model.to(half)
    params = list(model.parameters())
    master = None
    if mode.endswith("-master"):
        master = [p.detach().float().requires_grad_(True) for p in params]
    opt = torch.optim.AdamW(master if master is not None else params,
                            lr=3e-4, fused=True)
    autocast = {"fp16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(mode)
    scaler = torch.amp.GradScaler("cuda", enabled=mode == "fp16-mixed")
    loss_scale = 2.0 ** 16 if mode == "fp16-master" else 1.0
    found_inf = torch.zeros(1, device=dev)
    inv_scale = torch.full((1,), 1.0 / loss_scale, device=dev)
    x = torch.randint(0, a.vocab, (a.batch, a.seq), device=dev)
    y = torch.randint(0, a.vocab, (a.batch, a.seq), device=dev)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=autocast or torch.float16,
                            enabled=autocast is not None):
            loss = model(x, y)
        if master is None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            scaler.step(opt)
            scaler.update()
        else:
            (loss * loss_scale).backward()
            grads = [p.grad.float() for p in params]
            found_inf.zero_()
            torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf,
                                                             inv_scale)
            for m, g in zip(master, grads):
                m.grad = g
            torch.nn.utils.clip_grad_norm_(master, 1.0)
            if found_inf.item() == 0:
                opt.step()
                torch._foreach_copy_(params, master)
            for p in params:
                p.grad = None
        loss.item()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times[a.warmup:], torch.cuda.max_memory_allocated()


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", default=",".join(ALL_MODES))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--embd", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--device", default="cuda")
    a = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("pytorch_speed.py: torch sees no CUDA device")
    gpt_parity.Attention.forward = sdpa_forward
    for mode in a.modes.split(","):
        if mode not in ALL_MODES:
            sys.exit(f"pytorch_speed.py: unknown mode {mode!r}")
        times, peak = step_times(a, mode)
        step = statistics.median(times)
        print(json.dumps({"mode": mode, "step_seconds": step,
                          "tokens_per_second": a.batch * a.seq / step,
                          "peak_bytes": peak, "torch": torch.__version__}),
              flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
