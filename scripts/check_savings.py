#!/usr/bin/env python3
"""Checks a job's measured savings against a real fp32 run of the same job.

The savings ledger's speedup comes from a short fp32 probe on the worker.
When a full fp32 run of the same spec exists (the demo runs one), the ratio
of the two jobs' own mean step times is the check: they must agree within
--limit (default 10%).

usage: scripts/check_savings.py FP32_SUMMARY JOB_SUMMARY SAVINGS_JSON
  FP32_SUMMARY, JOB_SUMMARY: the jobs' summary.json (out/<job>/summary.json)
  SAVINGS_JSON: `halftime savings JOB -o json` of the 16-bit job ("-": stdin)

Prints the comparison; exits 0 when they agree, 1 when not, 2 on bad input.
"""
import argparse
import json
import sys


def agreement(ledger_speedup, fp32_mean_step, job_mean_step):
    """The speedup of the two real runs and how far the ledger's is from it
    (relative to the real one)."""
    if fp32_mean_step <= 0 or job_mean_step <= 0:
        raise ValueError("mean step times must be positive")
    real = fp32_mean_step / job_mean_step
    return real, abs(ledger_speedup - real) / real


def load(path):
    with (sys.stdin if path == "-" else open(path)) as f:
        return json.load(f)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fp32_summary")
    p.add_argument("job_summary")
    p.add_argument("savings_json")
    p.add_argument("--limit", type=float, default=0.10)
    a = p.parse_args(argv)
    try:
        fp32, job = load(a.fp32_summary), load(a.job_summary)
        savings = load(a.savings_json)["jobs"][0]
        ledger = float(savings["speedup"])
        baseline = float(savings["baseline_step_seconds"])
        real, diff = agreement(ledger, float(fp32["mean_step_seconds"]),
                               float(job["mean_step_seconds"]))
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        print(f"check_savings: cannot read the figures: {e!r}", file=sys.stderr)
        return 2
    ok = diff <= a.limit
    print(f"savings ledger: {job['precision']} is {ledger:.2f}x faster than fp32 "
          f"(the worker's fp32 probe: {baseline:.4f} s/step)")
    print(f"the real runs:  fp32 {fp32['mean_step_seconds']:.4f} s/step, "
          f"{job['precision']} {job['mean_step_seconds']:.4f} s/step "
          f"(mean step times) -> {real:.2f}x")
    print(f"{'agree' if ok else 'DISAGREE'}: the ledger is {diff * 100:.1f}% from the "
          f"real runs' ratio (limit {a.limit * 100:.0f}%)")
    if savings.get("baseline_degraded"):
        print(f"note: this worker's baseline is degraded: "
              f"{savings.get('baseline_degraded_reason', '')}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
