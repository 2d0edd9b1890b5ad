"""Worker overhead benchmark (issue #5): the step time of a job trained under
halftime-worker (scheduler + worker on loopback, reports streamed, metrics
served) against the same spec run by hand with halftime-train, measured side
by side in one run, alternating the two so drift hits both alike.

Run by hand after building (not in CI):
  /usr/bin/python3 bench/worker/worker_overhead.py --build-dir build [--rounds 3]
Prints the median step time of each round and the ratio worker/by-hand
(target: <= 1.02).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SOURCE, "tests", "e2e"))
import cluster  # noqa: E402
from cluster import Cluster  # noqa: E402

SPEC = """name: {name}
model: {{builtin: {model}}}
data: {{kind: synthetic, seq_len: {seq_len}, vocab_size: 256}}
precision: bf16-mixed
batch_size: {batch}
steps: {steps}
eval: {{every_steps: 0, batches: 1}}
checkpoint: {{every_steps: 0}}
savings: {{baseline: none}}
max_restarts: 0
"""


def step_times(jsonl_path, warmup):
    steps = []
    with open(jsonl_path) as f:
        for line in f:
            event = json.loads(line)
            if "step_seconds" in event and event.get("step", 0) > warmup:
                steps.append(event["step_seconds"])
    if not steps:
        raise SystemExit(f"no step reports in {jsonl_path}")
    return steps


def by_hand(args, directory, name):
    spec_path = os.path.join(directory, f"{name}.yaml")
    with open(spec_path, "w") as f:
        f.write(SPEC.format(name=name, **vars(args)))
    jsonl = os.path.join(directory, f"{name}.jsonl")
    began = time.time()
    subprocess.run([cluster.BIN["train"], spec_path, "--out", os.path.join(directory, name),
                    "--metrics-jsonl", jsonl, "--threads", str(args.threads), "--quiet"],
                   check=True)
    return step_times(jsonl, args.warmup), time.time() - began


def under_worker(args, c, name):
    began = time.time()
    job_id = c.submit(SPEC.format(name=name, **vars(args)))
    # Poll rarely: the benchmark's own calls should not cost the trainer CPU.
    from halftime.v1 import job_pb2 as states
    terminal = {states.JOB_STATE_SUCCEEDED, states.JOB_STATE_FAILED,
                states.JOB_STATE_CANCELLED}
    while (job := c.job(job_id)).state not in terminal:
        time.sleep(1.0)
    from halftime.v1 import job_pb2
    if job.state != job_pb2.JOB_STATE_SUCCEEDED:
        raise SystemExit(f"{job_id} ended {job.state}: {job.failure_reason}")
    jsonl = os.path.join(c.dir, "w1", "jobs", job_id, "attempt-1", "metrics.jsonl")
    return step_times(jsonl, args.warmup), time.time() - began


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build-dir", default=os.path.join(SOURCE, "build"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--model", default="gpt-micro")
    p.add_argument("--seq-len", dest="seq_len", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()
    b = os.path.abspath(args.build_dir)
    cluster.configure_build(b, "bench/worker/python")

    c = Cluster("bench-worker-overhead", lease_grace="30s", heartbeat="1s")
    try:
        c.start_worker("w1", threads=args.threads)
        print(f"{args.model}, bf16-mixed, batch {args.batch} x {args.seq_len}, "
              f"{args.steps} steps ({args.warmup} warm-up left out), "
              f"{args.threads} threads, {args.rounds} rounds alternating")
        print(f"load average before: {os.getloadavg()[0]:.2f} "
              "(figures are only meaningful on an otherwise idle machine)")
        hand_all, worker_all, ratios = [], [], []
        for r in range(1, args.rounds + 1):
            hand, hand_wall = by_hand(args, c.dir, f"hand-{r}")
            work, work_wall = under_worker(args, c, f"worker-{r}")
            hand_all += hand
            worker_all += work
            ratios.append(statistics.median(work) / statistics.median(hand))
            print(f"round {r}: by hand {statistics.median(hand) * 1e3:8.2f} ms/step "
                  f"(wall {hand_wall:5.1f} s)   under worker "
                  f"{statistics.median(work) * 1e3:8.2f} ms/step (wall {work_wall:5.1f} s)"
                  f"   ratio {ratios[-1]:.3f}")
        h, w = statistics.median(hand_all), statistics.median(worker_all)
        print(f"median over all rounds: by hand {h * 1e3:.2f} ms/step, "
              f"under worker {w * 1e3:.2f} ms/step, ratio {w / h:.3f}; "
              f"median of the round ratios {statistics.median(ratios):.3f} (target <= 1.02)")
    finally:
        c.close()
        c.cleanup(keep=False)


if __name__ == "__main__":
    main()
