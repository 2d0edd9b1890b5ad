"""Savings agreement: the ledger against real fp32 runs of the same job.

For each shape (the demo's gpt-nano fine-tune shape and gpt-micro) and each
round, on one worker of a real cluster: a full fp32 run of the spec, then the
same spec in bf16-mixed with `savings.baseline: probe`. Two checks, each the
median over the rounds:

  probe vs full run: the worker's fp32 probe step time (its baseline) against
      the full fp32 run's median step time (warm-up excluded, as both are
      measured); target within 5%.
  ledger vs real runs: the ledger's speedup against the ratio of the two real
      runs' mean step times (scripts/check_savings.py, as the demo checks it);
      target within 10%.

Run by hand on an otherwise idle machine after building:
  /usr/bin/python3 bench/savings/agreement.py --build-dir build [--rounds 3]
"""
import argparse
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SOURCE, "tests", "e2e"))
sys.path.insert(0, os.path.join(SOURCE, "scripts"))
import check_savings  # noqa: E402
import cluster  # noqa: E402
from cluster import Cluster  # noqa: E402

SPEC = """name: {name}
model: {{builtin: {builtin}}}
data: {{kind: synthetic, seq_len: {seq}, vocab_size: 256}}
precision: {precision}
batch_size: {batch}
steps: {steps}
eval: {{every_steps: 0, batches: 1}}
checkpoint: {{every_steps: 0}}
savings: {savings}
max_restarts: 0
"""

SHAPES = [
    # The demo's fine-tune: gpt-nano, batch 16 x 64 tokens, 150 steps.
    {"shape": "gpt-nano (demo)", "builtin": "gpt-nano", "batch": 16, "seq": 64,
     "steps": 150},
    {"shape": "gpt-micro", "builtin": "gpt-micro", "batch": 16, "seq": 256,
     "steps": 30},
]


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build-dir", default=os.path.join(SOURCE, "build"))
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--probe-steps", dest="probe_steps", type=int, default=10)
    p.add_argument("--shape", choices=[s["builtin"] for s in SHAPES],
                   action="append", help="only these shapes (default: all)")
    args = p.parse_args()
    b = os.path.abspath(args.build_dir)
    print(f"load average before: {os.getloadavg()[0]:.2f} "
          "(figures are only meaningful on an otherwise idle machine)")
    cluster.configure_build(b, "bench/savings/python")
    c = Cluster("bench-savings-agreement", lease_grace="60s", heartbeat="1s")
    from halftime.v1 import job_pb2, scheduler_pb2
    try:
        c.start_worker("w1", threads=args.threads)
        blas = next(w for w in c.list_workers() if w.name == "w1").capabilities.blas
        print(f"worker w1: {args.threads} threads, BLAS {blas}")

        def run(shape, precision, savings, name):
            job_id = c.submit(SPEC.format(name=name, precision=precision,
                                          savings=savings, **shape))
            job = c.wait_state(job_id, ["succeeded", "failed", "cancelled"],
                               timeout=3600)
            if job.state != job_pb2.JOB_STATE_SUCCEEDED:
                raise SystemExit(f"{job_id} ended {job.state}: {job.failure_reason}")
            with open(os.path.join(c.dir, "out", name, "summary.json")) as f:
                return job_id, json.load(f)

        verdicts = []
        for shape in SHAPES:
            if args.shape and shape["builtin"] not in args.shape:
                continue
            probe_diffs, ledger_diffs = [], []
            print(f"\n{shape['shape']}: batch {shape['batch']} x seq {shape['seq']}, "
                  f"{shape['steps']} steps, probe >= {args.probe_steps} steps and >= 3 s")
            for r in range(args.rounds):
                tag = f"{shape['builtin']}-{r}"
                _, fp32 = run(shape, "fp32", "{baseline: none}", f"fp32-{tag}")
                job_id, bf16 = run(shape, "bf16-mixed",
                                   f"{{baseline: probe, probe_steps: {args.probe_steps}}}",
                                   f"bf16-{tag}")
                s = c.stub.GetSavings(scheduler_pb2.GetSavingsRequest(job_id=job_id),
                                      timeout=10).jobs[0]
                probe_diff = abs(s.baseline_step_seconds - fp32["median_step_seconds"]) / \
                    fp32["median_step_seconds"]
                real, ledger_diff = check_savings.agreement(
                    s.speedup, fp32["mean_step_seconds"], bf16["mean_step_seconds"])
                probe_diffs.append(probe_diff)
                ledger_diffs.append(ledger_diff)
                print(f"  round {r + 1}: probe {s.baseline_step_seconds:.4f} s/step vs "
                      f"full fp32 run {fp32['median_step_seconds']:.4f} "
                      f"({probe_diff * 100:.1f}% apart); ledger {s.speedup:.2f}x vs "
                      f"real runs {real:.2f}x ({ledger_diff * 100:.1f}% apart); "
                      f"MFU fp32 {fp32['mfu'] * 100:.1f}%, bf16-mixed "
                      f"{bf16['mfu'] * 100:.1f}%")
                sys.stdout.flush()
            probe_median = statistics.median(probe_diffs)
            ledger_median = statistics.median(ledger_diffs)
            verdicts += [probe_median <= 0.05, ledger_median <= 0.10]
            print(f"  probe vs full fp32 run: {probe_median * 100:.1f}% (target <= 5%): "
                  f"{'OK' if probe_median <= 0.05 else 'MISS'}")
            print(f"  ledger vs real runs: {ledger_median * 100:.1f}% (target <= 10%): "
                  f"{'OK' if ledger_median <= 0.10 else 'MISS'}")
    finally:
        c.close()
        c.cleanup(keep=False)
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
