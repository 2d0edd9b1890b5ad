"""Which BLAS and threading arrangement gives this machine its fastest fp32:
the measurement behind scripts/setup.sh's choice (run by hand).

usage: /usr/bin/python3 bench/blas/compare.py [--rounds 3] [--threads 2]

Runs PyTorch's fp32 training step of the demo's gpt-nano shape and of
gpt-micro (bench/engine/pytorch_autocast.py; Debian's python3-torch uses
the same libtorch and libblas.so.3 as halftime-train) with each BLAS build
installed under /usr/lib/x86_64-linux-gnu, switched per run through
LD_LIBRARY_PATH (the machine's alternatives stay as they are), plus the
pthread OpenBLAS with OMP_WAIT_POLICY=passive. Arrangements alternate run by
run within each round, so this VM's slow and fast phases hit all alike.
Prints each arrangement's median step time and its ratio to the fastest.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "engine", "pytorch_autocast.py")
LIB = "/usr/lib/x86_64-linux-gnu"

ARRANGEMENTS = [
    ("OpenBLAS OpenMP", {"LD_LIBRARY_PATH": f"{LIB}/openblas-openmp"}),
    ("OpenBLAS pthread", {"LD_LIBRARY_PATH": f"{LIB}/openblas-pthread"}),
    ("OpenBLAS pthread, OMP_WAIT_POLICY=passive",
     {"LD_LIBRARY_PATH": f"{LIB}/openblas-pthread", "OMP_WAIT_POLICY": "passive"}),
    ("OpenBLAS serial", {"LD_LIBRARY_PATH": f"{LIB}/openblas-serial"}),
    ("BLIS OpenMP", {"LD_LIBRARY_PATH": f"{LIB}/blis-openmp"}),
    ("BLIS pthread", {"LD_LIBRARY_PATH": f"{LIB}/blis-pthread"}),
    ("ATLAS", {"LD_LIBRARY_PATH": f"{LIB}/atlas"}),
    ("reference BLAS", {"LD_LIBRARY_PATH": f"{LIB}/blas"}),
]

SHAPES = [
    ("gpt-nano (demo)", ["--layers", "4", "--embd", "128", "--heads", "4",
                         "--batch", "16", "--seq", "64", "--steps", "20"]),
    ("gpt-micro", ["--layers", "6", "--embd", "384", "--heads", "6",
                   "--batch", "16", "--seq", "256", "--steps", "4"]),
]


def step_seconds(env, shape_args, threads):
    out = subprocess.run(
        [sys.executable, SCRIPT, "--json", "--mode", "fp32", "--foreach", "off",
         "--threads", str(threads), *shape_args],
        env=dict(os.environ, **env), capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout.splitlines()[-1])["step_seconds"]


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-slow", action="store_true",
                   help="leave out the reference BLAS and ATLAS on gpt-micro")
    a = p.parse_args()
    present = [(n, e) for n, e in ARRANGEMENTS
               if os.path.exists(os.path.join(e["LD_LIBRARY_PATH"], "libblas.so.3"))]
    print(f"{a.threads} threads, {a.rounds} alternating rounds, PyTorch fp32 step "
          f"(median after warm-up); OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', 'auto')}")
    for shape, args in SHAPES:
        times = {n: [] for n, _ in present}
        for _ in range(a.rounds):
            for name, env in present:
                if a.skip_slow and shape == "gpt-micro" and name in ("ATLAS", "reference BLAS"):
                    continue
                t = step_seconds(env, args, a.threads)
                if t is not None:
                    times[name].append(t)
        medians = {n: statistics.median(t) for n, t in times.items() if t}
        best = min(medians.values())
        print(f"\n{shape}")
        for name, m in sorted(medians.items(), key=lambda kv: kv[1]):
            print(f"  {name:44s} {m:8.4f} s/step  {m / best:6.2f}x the fastest")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
