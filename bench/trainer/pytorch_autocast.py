"""(d) of the trainer benchmark: the same gpt-micro step in PyTorch itself.

usage: /usr/bin/python3 bench/trainer/pytorch_autocast.py [--threads 2]
           [--steps 6] [--batch 16] [--seq 256]

Times fp32 and torch.autocast(bf16) training steps of the model the engine
trains (the mirror in tests/worker/trainer/python/gpt_parity.py: 6 layers,
384 wide, 6 heads, vocab 256), with torch.optim.AdamW and clip_grad_norm_.
PyTorch exposes no CPU peak-memory counter, so only step times are compared. Set OPENBLAS_CORETYPE as bench_trainer does
(it prints the value it used) for a fair fp32 baseline.
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests",
                                "worker", "trainer", "python"))
from gpt_parity import Gpt  # noqa: E402


def run(bf16, a):
    torch.manual_seed(1)
    model = Gpt(256, 256, 384, 6, 6)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    times = []
    for step in range(a.steps + 2):
        x = torch.randint(0, 256, (a.batch, a.seq))
        y = torch.randint(0, 256, (a.batch, a.seq))
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss.item()
        if step >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=256)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    fp32 = run(False, a)
    bf16 = run(True, a)
    print(f"PyTorch {torch.__version__}, {a.threads} threads, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'auto')}")
    print(f"gpt-micro batch {a.batch} x seq {a.seq}: fp32 {fp32:.4f} s/step, "
          f"autocast bf16 {bf16:.4f} s/step, speedup {fp32 / bf16:.2f}x")


if __name__ == "__main__":
    main()
