"""What the checkpoint bound costs (issue #5): under halftime-worker a trainer
waits after each checkpoint until the scheduler has stored it, so a crash
repeats at most `checkpoint.every_steps` steps. This runs one job per model
through a real scheduler and worker on loopback and prints, from the worker's
log and the job's reports, the checkpoint size, the time each upload took
(the trainer's wait), the median step time and the share of the job's
training time spent waiting.

Run by hand after building (not in CI):
  /usr/bin/python3 bench/worker/checkpoint_wait.py --build-dir build
"""
import argparse
import os
import re
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SOURCE, "tests", "e2e"))
import cluster  # noqa: E402
from cluster import Cluster  # noqa: E402
from worker_overhead import SPEC  # noqa: E402  (the same job, with checkpoints)


UPLOADED = re.compile(r"uploaded checkpoint of step (\d+) \((\d+) bytes in ([0-9.]+) s\)")


def run(c, worker_log, args, model):
    from halftime.v1 import job_pb2
    name = f"ckpt-{model}"
    job_id = c.submit(SPEC.format(name=name, model=model, seq_len=args.seq_len,
                                  batch=args.batch, steps=args.steps, every=args.every))
    job = c.wait_state(job_id, ["succeeded", "failed"], timeout=1800)
    if job.state != job_pb2.JOB_STATE_SUCCEEDED:
        raise SystemExit(f"{name} failed: {job.failure_reason}")
    reports = [e.report for e in c.events(job_id)
               if e.kind == job_pb2.JOB_EVENT_KIND_REPORT]
    steps = [r.step_seconds for r in reports if r.step > 2]
    uploads = []
    with open(worker_log) as f:
        for line in f:
            match = UPLOADED.search(line)
            if match and f"{job_id}: " in line:
                uploads.append((int(match[1]), int(match[2]), float(match[3])))
    waits = [t for _, _, t in uploads]
    trained = sum(r.step_seconds for r in reports)
    return {
        "model": model,
        "checkpoints": len(uploads),
        "mib": uploads[-1][1] / 2**20 if uploads else 0.0,
        "wait": statistics.median(waits) if waits else 0.0,
        "step": statistics.median(steps),
        "share": sum(waits) / (trained + sum(waits)) if waits else 0.0,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build-dir", default="build")
    parser.add_argument("--models", default="gpt-nano,gpt-micro")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    cluster.configure_build(os.path.abspath(args.build_dir), "bench/worker/python")
    c = Cluster("checkpoint-wait")
    try:
        c.start_worker("w1", threads=args.threads)
        worker_log = os.path.join(c.dir, "w1.log")
        rows = [run(c, worker_log, args, m) for m in args.models.split(",")]
    finally:
        c.close()
        c.cleanup(keep=False)
    print(f"bf16-mixed, batch {args.batch}x{args.seq_len}, {args.steps} steps, "
          f"checkpoint every {args.every} steps, {args.threads} threads")
    print(f"{'model':<10} {'ckpts':>5} {'size MiB':>9} {'wait s (median)':>16} "
          f"{'step s (median)':>16} {'share of time waiting':>22}")
    for r in rows:
        print(f"{r['model']:<10} {r['checkpoints']:>5} {r['mib']:>9.1f} {r['wait']:>16.3f} "
              f"{r['step']:>16.3f} {100 * r['share']:>21.1f}%")


if __name__ == "__main__":
    main()
