"""PyTorch's own step time for the model the engine trains, in PyTorch's
fastest arrangement on this machine: the reference bench_engine compares
our fp32 and bf16-mixed steps against, round by round.

usage: /usr/bin/python3 bench/engine/pytorch_autocast.py [--threads 2]
           [--steps 6] [--warmup 2] [--batch 16] [--seq 256]
           [--layers 6] [--embd 384] [--heads 6] [--vocab 256]
           [--mode fp32|bf16-mixed|both] [--json]

Times training steps of the engine's GPT (the mirror in
tests/engine/python/gpt_parity.py: pre-LN, fp32 LayerNorm and loss,
tied embeddings) with torch.optim.AdamW and clip_grad_norm_, in fp32 or
under torch.autocast("cpu", bfloat16). The arrangement is PyTorch's best
found here: the OpenMP OpenBLAS that scripts/setup.sh installs, the
threads given, and AdamW's faster implementation (--foreach auto times both
for a few steps and keeps the faster one; PyTorch 1.13 defaults to the
per-tensor loop on CPU). bench_engine sets OPENBLAS_CORETYPE and passes the
same shape. Prints the median step time after warm-up, or one JSON object
per mode with --json.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "engine",
                                "python"))
from gpt_parity import Gpt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_timing import median_step  # noqa: E402


def run(a, bf16):
    # The faster AdamW on this machine, timed on a few steps.
    return median_step(
        lambda: Gpt(a.vocab, max(a.seq, 256), a.embd, a.heads, a.layers),
        a, bf16, short=max(2, a.steps // 3))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--embd", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--mode", choices=["fp32", "bf16-mixed", "both"], default="both")
    p.add_argument("--foreach", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    modes = ["fp32", "bf16-mixed"] if a.mode == "both" else [a.mode]
    results = {m: run(a, m == "bf16-mixed") for m in modes}
    if a.json:
        for m, (seconds, foreach) in results.items():
            print(json.dumps({"mode": m, "step_seconds": seconds,
                              "adamw_foreach": foreach, "torch": torch.__version__}))
        return
    print(f"PyTorch {torch.__version__}, {a.threads} threads, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'auto')}")
    for m, (seconds, foreach) in results.items():
        print(f"{a.layers}x{a.embd} batch {a.batch} x seq {a.seq}: {m} "
              f"{seconds:.4f} s/step (AdamW foreach={foreach})")


if __name__ == "__main__":
    main()
