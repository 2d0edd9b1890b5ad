"""Worker overhead benchmark (issue #5): the step time of a job trained under
halftime-worker (scheduler + worker on loopback, reports streamed, metrics
served) against the same spec run by hand with halftime-train, measured side
by side in one run, alternating the two so drift hits both alike.

Run by hand after building (not in CI):
  /usr/bin/python3 bench/worker/worker_overhead.py --build-dir build [--rounds 3]
Prints the median step time of each round and the ratio worker/by-hand
(target: <= 1.02), and the CPU time the scheduler and the worker themselves
used during each job as a share of the trainer's: on a machine too noisy to
resolve 2% in step times, that share bounds what the worker can take from
the trainer.
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
checkpoint: {{every_steps: {every}}}
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


def cpu_seconds(pid):
    """(own, reaped children) CPU seconds of a live process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    # Fields 14-17 of proc(5): utime, stime, cutime, cstime.
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / ticks, (cutime + cstime) / ticks


def by_hand(args, directory, name):
    spec_path = os.path.join(directory, f"{name}.yaml")
    with open(spec_path, "w") as f:
        f.write(SPEC.format(name=name, every=0, **vars(args)))
    jsonl = os.path.join(directory, f"{name}.jsonl")
    began = time.time()
    before = os.times()
    subprocess.run([cluster.BIN["train"], spec_path, "--out", os.path.join(directory, name),
                    "--metrics-jsonl", jsonl, "--threads", str(args.threads), "--quiet"],
                   check=True)
    after = os.times()
    trainer_cpu = (after.children_user + after.children_system -
                   before.children_user - before.children_system)
    return step_times(jsonl, args.warmup), time.time() - began, trainer_cpu


def under_worker(args, c, name):
    """Runs the spec through the scheduler; also returns the CPU seconds of
    the trainer, the worker and the scheduler over the job."""
    worker_pid, scheduler_pid = c.workers["w1"].proc.pid, c.scheduler.proc.pid
    worker_before, scheduler_before = cpu_seconds(worker_pid), cpu_seconds(scheduler_pid)
    began = time.time()
    job_id = c.submit(SPEC.format(name=name, every=0, **vars(args)))
    # Poll rarely: the benchmark's own calls should not cost the trainer CPU.
    from halftime.v1 import job_pb2 as states
    terminal = {states.JOB_STATE_SUCCEEDED, states.JOB_STATE_FAILED,
                states.JOB_STATE_CANCELLED}
    # CPU of worker, scheduler and trainer sampled while the trainer runs:
    # what the two daemons take per second of training, apart from the
    # one-off work at the job's start and end (spec, outputs, savings).
    # pgrep (a fork) runs only until the trainer is found; after that the
    # samples are three /proc reads a second, so the harness itself costs
    # the worker's rounds next to nothing.
    window, trainer_pid = [], None
    while (job := c.job(job_id)).state not in terminal:
        if trainer_pid is None:
            trainer_pid = next(iter(cluster.trainer_pids(c, "w1")), None)
        if trainer_pid is not None:
            try:
                window.append((cpu_seconds(worker_pid)[0], cpu_seconds(scheduler_pid)[0],
                               cpu_seconds(trainer_pid)[0]))
            except (FileNotFoundError, ProcessLookupError):  # the trainer ended
                pass
        time.sleep(1.0)
    from halftime.v1 import job_pb2
    if job.state != job_pb2.JOB_STATE_SUCCEEDED:
        raise SystemExit(f"{job_id} ended {job.state}: {job.failure_reason}")
    jsonl = os.path.join(c.dir, "w1", "jobs", job_id, "attempt-1", "metrics.jsonl")
    wall = time.time() - began
    # The worker reaps its trainer when the job ends; wait for that so the
    # trainer's CPU shows in the worker's children time.
    cluster.wait_for(lambda: not cluster.trainer_pids(c, "w1"), 60, "trainer exit")
    time.sleep(0.5)
    worker_after, scheduler_after = cpu_seconds(worker_pid), cpu_seconds(scheduler_pid)
    cpu = {"trainer": worker_after[1] - worker_before[1],
           "worker": worker_after[0] - worker_before[0],
           "scheduler": scheduler_after[0] - scheduler_before[0],
           "training_share": None}
    if len(window) >= 2:
        daemons = sum(window[-1][:2]) - sum(window[0][:2])
        cpu["training_share"] = daemons / max(window[-1][2] - window[0][2], 1e-9)
    return step_times(jsonl, args.warmup), wall, cpu


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
        hand_all, worker_all, ratios, shares, training_shares = [], [], [], [], []
        for r in range(1, args.rounds + 1):
            hand, hand_wall, hand_cpu = by_hand(args, c.dir, f"hand-{r}")
            work, work_wall, cpu = under_worker(args, c, f"worker-{r}")
            shares.append((cpu["worker"] + cpu["scheduler"]) / cpu["trainer"])
            if cpu["training_share"] is not None:
                training_shares.append(cpu["training_share"])
            hand_all += hand
            worker_all += work
            ratios.append(statistics.median(work) / statistics.median(hand))
            print(f"round {r}: by hand {statistics.median(hand) * 1e3:8.2f} ms/step "
                  f"(wall {hand_wall:5.1f} s)   under worker "
                  f"{statistics.median(work) * 1e3:8.2f} ms/step (wall {work_wall:5.1f} s)"
                  f"   ratio {ratios[-1]:.3f}")
            print(f"         CPU: trainer by hand {hand_cpu:6.1f} s, under worker "
                  f"{cpu['trainer']:6.1f} s; worker {cpu['worker']:.2f} s, scheduler "
                  f"{cpu['scheduler']:.2f} s = {shares[-1] * 100:.2f}% of the trainer's over the "
                  f"whole job; while it trained: "
                  + (f"{cpu['training_share'] * 100:.2f}%" if cpu["training_share"] is not None
                     else "n/a (too short to sample)"))
        h, w = statistics.median(hand_all), statistics.median(worker_all)
        print(f"median over all rounds: by hand {h * 1e3:.2f} ms/step, "
              f"under worker {w * 1e3:.2f} ms/step, ratio {w / h:.3f}; "
              f"median of the round ratios {statistics.median(ratios):.3f} (target <= 1.02)")
        print(f"worker + scheduler CPU as a share of the trainer's: median "
              f"{statistics.median(shares) * 100:.2f}% over whole jobs (start-up and outputs included), "
              f"max {max(shares) * 100:.2f}%")
        if training_shares:
            print(f"  while the trainer trains (what competes with its steps): median "
                  f"{statistics.median(training_shares) * 100:.2f}%, "
                  f"max {max(training_shares) * 100:.2f}%")
    finally:
        c.close()
        c.cleanup(keep=False)


if __name__ == "__main__":
    main()
