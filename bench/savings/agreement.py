"""Savings agreement check (issue #7): the speedup Halftime's savings ledger
reports for a bf16-mixed gpt-micro job (worker's fp32 probe vs the job's own
steps) against the engine benchmark's bf16-mixed/fp32 ratio (bench_trainer,
same model, batch and threads), measured in one run. They should agree
within 15%.

Run by hand on an otherwise idle machine after building:
  /usr/bin/python3 bench/savings/agreement.py --build-dir build
"""
import argparse
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SOURCE, "tests", "e2e"))
import cluster  # noqa: E402
from cluster import Cluster  # noqa: E402

SPEC = """name: savings-agreement
model: {{builtin: gpt-micro}}
data: {{kind: synthetic, seq_len: {seq}}}
precision: bf16-mixed
batch_size: {batch}
steps: {steps}
eval: {{every_steps: 0, batches: 1}}
checkpoint: {{every_steps: 0}}
savings: {{baseline: probe, probe_steps: {probe_steps}}}
max_restarts: 0
"""


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build-dir", default=os.path.join(SOURCE, "build"))
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--probe-steps", dest="probe_steps", type=int, default=10)
    args = p.parse_args()
    b = os.path.abspath(args.build_dir)
    print(f"load average before: {os.getloadavg()[0]:.2f} "
          "(figures are only meaningful on an otherwise idle machine)")

    bench = subprocess.run(
        [f"{b}/bench/trainer/bench_trainer", "--threads", str(args.threads),
         "--batch", str(args.batch), "--seq", str(args.seq), "--steps", "8"],
        capture_output=True, text=True, check=True).stdout
    engine = float(re.search(r"\(b\) bf16-mixed speedup over fp32[^:]*: ([0-9.]+)x", bench).group(1))
    print(f"engine benchmark (bench_trainer): bf16-mixed is {engine:.2f}x fp32")

    cluster.configure_build(b, "bench/savings/python")
    c = Cluster("bench-savings-agreement", lease_grace="60s", heartbeat="1s")
    try:
        c.start_worker("w1", threads=args.threads)
        job_id = c.submit(SPEC.format(**vars(args)))
        job = c.wait_state(job_id, ["succeeded", "failed", "cancelled"], timeout=3600)
        from halftime.v1 import job_pb2, scheduler_pb2
        if job.state != job_pb2.JOB_STATE_SUCCEEDED:
            raise SystemExit(f"{job_id} ended {job.state}: {job.failure_reason}")
        s = c.stub.GetSavings(scheduler_pb2.GetSavingsRequest(job_id=job_id), timeout=10).jobs[0]
        print(f"savings ledger ({job_id}): fp32 probe {s.baseline_step_seconds:.4f} s/step, "
              f"bf16-mixed {s.step_seconds:.4f} s/step, speedup {s.speedup:.2f}x, "
              f"memory saved {s.memory_saved_ratio * 100:.1f}%")
        diff = abs(s.speedup - engine) / engine
        print(f"agreement: {diff * 100:.1f}% apart (target within 15%): "
              f"{'OK' if diff <= 0.15 else 'MISS'}")
    finally:
        c.close()
        c.cleanup(keep=False)


if __name__ == "__main__":
    main()
