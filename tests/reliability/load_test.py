#!/usr/bin/env python3
"""Load test of halftime-scheduler (issue #9).

Starts a real scheduler (port 0) and, for a bounded time on loopback, runs
many concurrent clients and simulated workers against it over the real gRPC
API, until a number of jobs have finished:

  * clients (--clients, asyncio in --client-procs processes, one channel
    each) submit jobs with idempotency keys (some keys twice: the retry must
    be answered with the same job, deduplicated), follow every job they
    submitted with a WatchJob stream (reports included) to its end, then
    GetJob it and check its events (gapless sequences, legal lifecycle,
    last event agrees with GetJob), and meanwhile list (ListJobs, a few
    pages, some filtered by state) and GetJob earlier jobs;
  * workers (--workers, crash_durability.SimWorker threads in
    --worker-procs processes) register over WorkerGateway.Connect,
    heartbeat at the interval the scheduler asks for, and run what they get:
    started, a few reports, a SUCCEEDED result.

Checks, each failing the test:
  * every RPC answers OK (non-OK answers are counted by method and code and
    printed; a worker stream that ends before the test stops it counts as
    Connect with its code);
  * every acknowledged job SUCCEEDED under attempt 1, ListJobs holds exactly
    the acknowledged jobs, no stale messages or restarts were counted;
  * memory is flat after warm-up: the scheduler's VmRSS (/proc/PID/status)
    sampled when --rss-early jobs had finished and when --jobs had finished
    satisfies RSS(late) <= --rss-ratio x RSS(early);
  * --jobs jobs finish within --max-seconds and the scheduler stays up.

Prints p50/p99 latencies per method (SubmitJob, GetJob, ListJobs,
WatchJob time to first event; worker round trips measured across processes
on the host's monotonic clock: submit->assignment (0 when the assignment
reached the worker before the SubmitJob answer reached the client),
report->REPORT event at a watcher, result->SUCCEEDED event at a watcher),
throughput, jobs finished, the RSS samples (with the scheduler's CPU time)
and the duration.

  load_test.py --build-dir build [--clients 50 --workers 200 --jobs 1500
                                  --rss-early 500]
"""
import argparse
import asyncio
import collections
import json
import multiprocessing
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
import types
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import crash_durability as cd  # noqa: E402  (the simulated worker, stubs)

TERMINAL_STATES = ("succeeded", "failed", "cancelled")


# ---------------------------------------------------------------------------
# Shared helpers.

def import_stubs(out):
    """Imports stubs that cd.load_stubs generated into `out` (in a child
    process) and installs them as crash_durability's `pb`."""
    if out not in sys.path:
        sys.path.insert(0, out)
    from halftime.v1 import job_pb2, scheduler_pb2, scheduler_pb2_grpc
    from halftime.v1 import worker_gateway_pb2, worker_gateway_pb2_grpc
    from halftime.v1 import worker_pb2, job_spec_pb2
    ns = types.SimpleNamespace(
        job=job_pb2, sched=scheduler_pb2, sched_grpc=scheduler_pb2_grpc,
        gw=worker_gateway_pb2, gw_grpc=worker_gateway_pb2_grpc,
        worker=worker_pb2, spec=job_spec_pb2)
    cd.pb = ns
    return ns


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1,
            max(0, int(round(q / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[i]


def rss_kb(pid):
    """VmRSS, RssAnon, RssFile (kB), threads and CPU seconds of `pid`."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM",
                       "Threads"):
                out[key] = int(value.split()[0])
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    out["cpu_s"] = round((int(fields[11]) + int(fields[12])) /
                         os.sysconf("SC_CLK_TCK"), 2)
    return out


def scrape(metrics_address):
    """The scheduler's /metrics as {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://{metrics_address}/metrics",
                                timeout=10) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            values[name] = float(value)
        except ValueError:
            pass
    return values


# ---------------------------------------------------------------------------
# Worker processes: crash_durability.SimWorker threads, instrumented.

class StaticScheduler:
    """What SimWorker asks for the scheduler's address: here it never
    moves."""

    def __init__(self, address):
        self.address = address

    def current(self, timeout):
        return 1, self.address


class LoadWorker(cd.SimWorker):
    """SimWorker that records when it got each assignment and sent each
    report and result, and counts a stream that ended before the test
    stopped it."""

    def __init__(self, name, sched, hist, rng, stop, stall, rec):
        super().__init__(name, sched, hist, rng, stop, stall)
        self.rec = rec

    def _on_assignment(self, a):
        self.rec["assign"][a.job_id] = time.monotonic()
        super()._on_assignment(a)

    def _send(self, **kw):
        if "report" in kw:
            r = kw["report"]
            self.rec["reports"].setdefault(r.job_id, {})[
                str(r.report.step)] = time.monotonic()
        super()._send(**kw)

    def _finish(self, run, outcome, reason=""):
        self.rec["results"][run.job_id] = [
            time.monotonic(), cd.pb.gw.JobOutcome.Name(outcome)]
        super()._finish(run, outcome, reason)

    def _serve(self, address):
        self.rec["sessions"] += 1
        super()._serve(address)
        if self.stop.is_set():
            return
        call = CALLS.pop(threading.get_ident(), None)
        code = "ended"
        if call is not None:
            try:
                code = call.code().name if call.done() else "not done"
            except Exception as e:  # noqa: BLE001
                code = type(e).__name__
        self.rec["errors"][f"Connect {code}"] += 1
        self.rec["problems"].append(
            f"{self.wname}: Connect stream ended early ({code})")


CALLS = {}  # thread id -> its latest Connect call


class _GatewayShim:
    """Stands in for worker_gateway_pb2_grpc so that the Connect call of each
    SimWorker thread can be asked for its status afterwards."""

    def __init__(self, real):
        self.real = real

    def WorkerGatewayStub(self, channel):
        stub = self.real.WorkerGatewayStub(channel)

        class Stub:
            def Connect(self_, requests):
                call = stub.Connect(requests)
                CALLS[threading.get_ident()] = call
                return call
        return Stub()


def worker_process(index, names, address, stubs, opts, stop_mp, out_path):
    pb = import_stubs(stubs)
    pb.gw_grpc = _GatewayShim(pb.gw_grpc)
    cd.ARGS = types.SimpleNamespace(slots=opts["slots"],
                                    run_min=opts["run_min"],
                                    run_max=opts["run_max"])
    random.seed(opts["seed"] + 1000 + index)
    rec = {"assign": {}, "reports": {}, "results": {},
           "errors": collections.Counter(), "problems": [], "sessions": 0}
    hist = cd.History()
    stop = threading.Event()
    sched = StaticScheduler(address)
    workers = []
    for i, name in enumerate(names):
        w = LoadWorker(name, sched, hist,
                       random.Random(opts["seed"] * 7919 + index * 1009 + i),
                       stop, {}, rec)
        w.start()
        workers.append(w)
        time.sleep(0.005)  # spread the registrations a little
    stop_mp.wait()
    stop.set()
    for w in workers:
        w.join(timeout=15)
        if w.error:
            rec["problems"].append(f"{w.wname}: {w.error}")
        if w.is_alive():
            rec["problems"].append(f"{w.wname}: did not stop")
    rec["errors"] = dict(rec["errors"])
    rec["rejected_assignments"] = hist.rejected_assignments
    rec["runs"] = len(hist.runs)
    rec["cancel_storms"] = hist.cancel_storms
    with open(out_path, "w") as f:
        json.dump(rec, f)


# ---------------------------------------------------------------------------
# Client processes: asyncio, one channel per client.

class ClientStats:
    def __init__(self):
        self.lat = collections.defaultdict(list)  # method -> [[t, s]]
        self.errors = collections.Counter()  # "method CODE" -> n
        self.error_samples = []
        self.acks = {}  # job id -> monotonic time of the SubmitJob answer
        self.seen = {}  # job id -> {"end": t, "reports": {step: t}}
        self.problems = []
        self.final = collections.Counter()  # state at the end of each watch
        self.keys = 0
        self.dedup = 0
        self.watches = 0

    def record(self, method, began):
        now = time.monotonic()
        self.lat[method].append((now, now - began))

    def error(self, method, e):
        code = e.code().name if hasattr(e, "code") else type(e).__name__
        self.errors[f"{method} {code}"] += 1
        if len(self.error_samples) < 20:
            details = e.details() if hasattr(e, "details") else str(e)
            self.error_samples.append(f"{method} {code}: {details}")


async def run_client(cid, address, opts, stats, stop_submit, rate, pb):
    import grpc
    rng = random.Random(opts["seed"] * 1000003 + cid)
    channel = grpc.aio.insecure_channel(
        address, options=[("grpc.use_local_subchannel_pool", 1)])
    stub = pb.sched_grpc.SchedulerStub(channel)
    inflight = asyncio.Semaphore(opts["inflight"])
    watches = set()
    my_jobs = []
    n = 0
    S = pb.job

    async def watch(job_id):
        events = []
        began = time.monotonic()
        seen = {"reports": {}}
        try:
            call = stub.WatchJob(pb.sched.WatchJobRequest(
                job_id=job_id, include_reports=True),
                timeout=opts["watch_timeout"])
            async for ev in call:
                now = time.monotonic()
                if not events:
                    stats.lat["WatchJob first event"].append(
                        (now, now - began))
                events.append(ev)
                if ev.kind == S.JOB_EVENT_KIND_REPORT:
                    seen["reports"][str(ev.report.step)] = now
                elif ev.kind == S.JOB_EVENT_KIND_STATE_CHANGED and \
                        ev.state in (S.JOB_STATE_SUCCEEDED,
                                     S.JOB_STATE_FAILED,
                                     S.JOB_STATE_CANCELLED):
                    seen["end"] = now
            stats.record("WatchJob to the end", began)
            t = time.monotonic()
            job = await stub.GetJob(pb.sched.GetJobRequest(job_id=job_id),
                                    timeout=opts["rpc_timeout"])
            stats.record("GetJob", t)
            stats.seen[job_id] = seen
            stats.final[cd.state_name(job.state)] += 1
            stats.watches += 1
            problems = []
            cd.check_events(job, events, problems)
            if job.state != S.JOB_STATE_SUCCEEDED:
                problems.append(f"{job_id}: ended {cd.state_name(job.state)}"
                                f" ({job.failure_reason})")
            elif job.attempt != 1:
                problems.append(f"{job_id}: succeeded under attempt "
                                f"{job.attempt} (requeued)")
            stats.problems.extend(problems)
        except grpc.aio.AioRpcError as e:
            stats.error("WatchJob" if "end" not in seen else "GetJob", e)
        finally:
            inflight.release()

    async def list_pages():
        filtered = rng.random() < opts["filtered_fraction"]
        states = ([S.JOB_STATE_QUEUED, S.JOB_STATE_ASSIGNED,
                   S.JOB_STATE_RUNNING] if filtered else [])
        method = "ListJobs (live states)" if filtered else "ListJobs"
        size = rng.choice((10, 50, 100))
        token = ""
        for _ in range(rng.randint(1, 3)):
            t = time.monotonic()
            try:
                page = await stub.ListJobs(pb.sched.ListJobsRequest(
                    states=states, page_size=size, page_token=token),
                    timeout=opts["rpc_timeout"])
            except grpc.aio.AioRpcError as e:
                stats.error("ListJobs", e)
                return
            stats.record(method, t)
            token = page.next_page_token
            if not token:
                return

    async def submit(key, text):
        t = time.monotonic()
        try:
            reply = await stub.SubmitJob(pb.sched.SubmitJobRequest(
                spec_text=text, idempotency_key=key),
                timeout=opts["rpc_timeout"])
        except grpc.aio.AioRpcError as e:
            stats.error("SubmitJob", e)
            return None
        stats.record("SubmitJob", t)
        if reply.job.spec.name != key:
            stats.problems.append(
                f"SubmitJob {key} answered {reply.job.id} named "
                f"{reply.job.spec.name}")
        return reply

    try:
        while not stop_submit.is_set():
            await inflight.acquire()
            if stop_submit.is_set():
                inflight.release()
                break
            await rate.take()
            n += 1
            key = f"{opts['tag']}-c{cid:03d}-{n:05d}"
            text = cd.SPEC.format(name=key, steps=rng.randint(
                opts["steps_min"], opts["steps_max"]))
            reply = await submit(key, text)
            if reply is None:
                inflight.release()
                await asyncio.sleep(0.1)
                continue
            job_id = reply.job.id
            stats.acks[job_id] = time.monotonic()
            stats.keys += 1
            if reply.deduplicated:
                stats.problems.append(f"SubmitJob {key}: first submit "
                                      f"answered deduplicated")
            my_jobs.append(job_id)
            task = asyncio.ensure_future(watch(job_id))
            watches.add(task)
            task.add_done_callback(watches.discard)
            if rng.random() < opts["resubmit_fraction"]:
                again = await submit(key, text)
                if again is not None:
                    stats.dedup += 1
                    if again.job.id != job_id or not again.deduplicated:
                        stats.problems.append(
                            f"SubmitJob {key} again: {again.job.id} "
                            f"deduplicated={again.deduplicated}, first "
                            f"{job_id}")
            if rng.random() < opts["list_fraction"]:
                await list_pages()
            if rng.random() < opts["get_fraction"]:
                other = rng.choice(my_jobs)
                t = time.monotonic()
                try:
                    await stub.GetJob(pb.sched.GetJobRequest(job_id=other),
                                      timeout=opts["rpc_timeout"])
                    stats.record("GetJob", t)
                except grpc.aio.AioRpcError as e:
                    stats.error("GetJob", e)
        if watches:
            await asyncio.gather(*list(watches))
    except Exception:  # a harness bug: fail loudly
        import traceback
        stats.problems.append(f"client {cid}: {traceback.format_exc()}")
    finally:
        await channel.close()


class RateLimiter:
    """At most `rate` takes per second (0: no limit) in one process."""

    def __init__(self, rate):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = time.monotonic()

    async def take(self):
        if self.interval == 0:
            return
        now = time.monotonic()
        self.next = max(self.next + self.interval, now - 1.0)
        wait = self.next - now
        if wait > 0:
            await asyncio.sleep(wait)


def client_process(index, cids, address, stubs, opts, stop_mp, out_path):
    pb = import_stubs(stubs)
    stats = ClientStats()

    async def main():
        loop = asyncio.get_running_loop()
        stop_submit = asyncio.Event()

        def waiter():
            stop_mp.wait()
            loop.call_soon_threadsafe(stop_submit.set)
        threading.Thread(target=waiter, daemon=True).start()
        rate = RateLimiter(opts["rate"] / max(1, opts["client_procs"]))
        await asyncio.gather(*(run_client(cid, address, opts, stats,
                                          stop_submit, rate, pb)
                               for cid in cids))
    asyncio.run(main())
    with open(out_path, "w") as f:
        json.dump({"lat": stats.lat, "errors": dict(stats.errors),
                   "error_samples": stats.error_samples, "acks": stats.acks,
                   "seen": stats.seen, "problems": stats.problems,
                   "final": dict(stats.final), "keys": stats.keys,
                   "dedup": stats.dedup, "watches": stats.watches}, f)


# ---------------------------------------------------------------------------
# The run.

def split(items, parts):
    return [items[i::parts] for i in range(parts)]


def finished(metrics):
    return int(sum(metrics.get(f'halftime_jobs{{state="{s}"}}', 0)
                   for s in TERMINAL_STATES))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build-dir", required=True)
    p.add_argument("--source-dir", default=os.path.join(HERE, "..", ".."))
    p.add_argument("--scheduler", default=None,
                   help="binary to test (default: BUILD/server/halftime-scheduler)")
    p.add_argument("--protoc", default="/usr/bin/protoc")
    p.add_argument("--grpc-python-plugin", default="/usr/bin/grpc_python_plugin")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--workers", type=int, default=200)
    p.add_argument("--client-procs", type=int, default=2)
    p.add_argument("--worker-procs", type=int, default=2)
    p.add_argument("--jobs", type=int, default=1500,
                   help="stop submitting once this many jobs finished; "
                        "the late RSS sample is taken then")
    p.add_argument("--rss-early", type=int, default=500,
                   help="finished jobs at the early (warm) RSS sample")
    p.add_argument("--rss-ratio", type=float, default=1.2,
                   help="largest allowed RSS(late) / RSS(early)")
    p.add_argument("--max-seconds", type=float, default=240,
                   help="the load phase must reach --jobs within this")
    p.add_argument("--inflight", type=int, default=2,
                   help="unfinished jobs per client at most")
    p.add_argument("--rate", type=float, default=0,
                   help="submits per second, all clients together (0: as "
                        "fast as the in-flight limit lets)")
    p.add_argument("--slots", type=int, default=2)
    p.add_argument("--run-min", type=float, default=0.1,
                   help="shortest simulated run, seconds")
    p.add_argument("--run-max", type=float, default=0.5)
    p.add_argument("--steps-min", type=int, default=2)
    p.add_argument("--steps-max", type=int, default=4)
    p.add_argument("--heartbeat-interval", default="1s")
    p.add_argument("--lease-grace", default="15s")
    p.add_argument("--resubmit-fraction", type=float, default=0.05)
    p.add_argument("--list-fraction", type=float, default=0.3)
    p.add_argument("--filtered-fraction", type=float, default=0.2,
                   help="share of ListJobs calls filtered by live states")
    p.add_argument("--get-fraction", type=float, default=0.5)
    p.add_argument("--rpc-timeout", type=float, default=30)
    p.add_argument("--watch-timeout", type=float, default=300)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--keep", action="store_true", help="keep the data dir")
    p.add_argument("--work-dir", default=None)
    args = p.parse_args()
    b = os.path.abspath(args.build_dir)
    args.scheduler = args.scheduler or os.path.join(b, "server",
                                                    "halftime-scheduler")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    if not 0 < args.rss_early < args.jobs:
        p.error("--rss-early must be between 0 and --jobs")
    print(f"load_test: seed {args.seed}, {args.clients} clients in "
          f"{args.client_procs} processes, {args.workers} workers in "
          f"{args.worker_procs} processes, until {args.jobs} jobs finished "
          f"(RSS at {args.rss_early} and {args.jobs}, bound "
          f"x{args.rss_ratio})",
          flush=True)

    # crash_durability's scheduler process and stub generator read its ARGS.
    cd.ARGS = types.SimpleNamespace(
        scheduler=args.scheduler, protoc=args.protoc,
        grpc_python_plugin=args.grpc_python_plugin,
        lease_grace=args.lease_grace, heartbeat=args.heartbeat_interval)
    stubs = os.path.join(b, "tests", "reliability", "python-load")
    cd.load_stubs(os.path.join(args.source_dir, "proto"), stubs)
    root = tempfile.mkdtemp(prefix="halftime-load-", dir=args.work_dir)
    opts = {
        "seed": args.seed, "tag": f"lt{args.seed % 100000}",
        "slots": args.slots, "run_min": args.run_min, "run_max": args.run_max,
        "steps_min": args.steps_min, "steps_max": args.steps_max,
        "inflight": args.inflight, "rate": args.rate,
        "client_procs": args.client_procs,
        "resubmit_fraction": args.resubmit_fraction,
        "list_fraction": args.list_fraction,
        "filtered_fraction": args.filtered_fraction,
        "get_fraction": args.get_fraction, "rpc_timeout": args.rpc_timeout,
        "watch_timeout": args.watch_timeout,
    }
    sched = cd.SchedulerProcess(root)
    problems = []
    figures = collections.OrderedDict()
    mp = multiprocessing.get_context("spawn")
    stop_clients = mp.Event()
    stop_workers = mp.Event()
    procs = []
    began = time.monotonic()
    samples = {}
    timeline = []
    marks = {}
    ok = False
    try:
        sched.start()
        with open(sched.log_path, "rb") as f:
            m = re.search(r"metrics on (\S+:\d+)", f.read().decode(
                errors="replace"))
        if not m:
            raise RuntimeError("scheduler did not say where /metrics is")
        metrics_address = m.group(1)
        pid = sched.proc.pid
        samples["start"] = rss_kb(pid)
        def spawn(kind, target, members, count, stop):
            """Starts `count` processes running `target` over `members`."""
            for i, part in enumerate(split(members, count)):
                proc = mp.Process(target=target, name=f"{kind}-{i}",
                                  args=(i, part, sched.address, stubs, opts, stop,
                                        os.path.join(root, f"{kind}-{i}.json")))
                proc.start()
                procs.append((kind, proc))

        spawn("workers", worker_process,
              [f"lw{i:03d}" for i in range(args.workers)], args.worker_procs,
              stop_workers)
        # Let the workers register before the clients start.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready = scrape(metrics_address).get(
                'halftime_workers{state="ready"}', 0)
            if ready >= args.workers:
                break
            time.sleep(0.2)
        figures["workers registered"] = int(ready)
        if ready < args.workers:
            problems.append(f"only {int(ready)} of {args.workers} workers "
                            f"registered in 60 s")
        samples["workers registered"] = rss_kb(pid)
        spawn("clients", client_process, list(range(args.clients)),
              args.client_procs, stop_clients)
        load_began = time.monotonic()
        marks["load began"] = load_began
        last_print = load_began
        done = 0
        while True:
            time.sleep(0.25)
            now = time.monotonic()
            if not sched.check_alive():
                problems.append(f"scheduler died: {sched.crashes[-1]}")
                break
            dead = [pr.name for _, pr in procs if not pr.is_alive()]
            if dead:
                problems.append(f"harness processes exited early: {dead}")
                break
            metrics = scrape(metrics_address)
            done = finished(metrics)
            if "early" not in samples and done >= args.rss_early:
                samples["early"] = rss_kb(pid)
                samples["early"]["finished"] = done
                marks["early"] = now
            if done >= args.jobs:
                samples["late"] = rss_kb(pid)
                samples["late"]["finished"] = done
                marks["late"] = now
                break
            if now - last_print >= 10:
                r = rss_kb(pid)
                timeline.append((round(now - load_began, 1), done,
                                 r["VmRSS"], r["RssAnon"]))
                print(f"  t={now - load_began:6.1f}s finished={done} "
                      f"rate={done / (now - load_began):.1f}/s "
                      f"VmRSS={r['VmRSS']} kB RssAnon={r['RssAnon']} kB",
                      flush=True)
                last_print = now
            if now - load_began > args.max_seconds:
                problems.append(f"only {done} of {args.jobs} jobs finished "
                                f"in {args.max_seconds:.0f} s")
                break
        load_seconds = time.monotonic() - load_began
        # Drain: clients stop submitting and follow their jobs to the end.
        stop_clients.set()
        for kind, proc in procs:
            if kind == "clients":
                proc.join(timeout=args.watch_timeout + 60)
                if proc.is_alive():
                    problems.append(f"{proc.name} did not finish")
                    proc.kill()
        drained = time.monotonic()
        stop_workers.set()
        for kind, proc in procs:
            if kind == "workers":
                proc.join(timeout=60)
                if proc.is_alive():
                    problems.append(f"{proc.name} did not finish")
                    proc.kill()
        metrics = scrape(metrics_address)
        samples["end"] = rss_kb(pid)
        figures["duration s"] = round(time.monotonic() - began, 1)
        figures["load phase s"] = round(load_seconds, 1)
        figures["drain s"] = round(drained - began - load_seconds, 1)
        ok = analyse(args, sched, metrics, root, samples, marks, timeline,
                     figures, problems, load_seconds)
    except Exception:  # noqa: BLE001  (scheduler gone, harness bug)
        import traceback
        problems.append(f"load test aborted: {traceback.format_exc()}")
    finally:
        stop_clients.set()
        stop_workers.set()
        for _, proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
        sched.stop()
        if sched.proc is not None and sched.proc.returncode not in (0, None):
            problems.append(f"scheduler exited with {sched.proc.returncode} "
                            f"on SIGTERM")
    for p_ in problems[:40]:
        print(f"  PROBLEM: {p_}", flush=True)
    if len(problems) > 40:
        print(f"  ... and {len(problems) - 40} more", flush=True)
    ok = ok and not problems
    print("figures: " + ", ".join(f"{k}={v}" for k, v in figures.items()),
          flush=True)
    print("PASS" if ok else "FAIL", flush=True)
    if ok and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"data and logs kept in {root}", flush=True)
    return 0 if ok else 1


def analyse(args, sched, metrics, root, samples, marks, timeline, figures,
            problems, load_seconds):
    """Merges what the processes recorded, checks it and prints figures.
    Returns False when a check failed (problems are appended)."""
    import grpc
    pb = cd.pb
    clients, workers = [], []
    for name in sorted(os.listdir(root)):
        if name.endswith(".json"):
            with open(os.path.join(root, name)) as f:
                (clients if name.startswith("clients") else workers).append(
                    json.load(f))
    if len(clients) != args.client_procs or len(workers) != args.worker_procs:
        problems.append(f"results of {len(clients)}/{args.client_procs} "
                        f"client and {len(workers)}/{args.worker_procs} "
                        f"worker processes")
    errors = collections.Counter()
    lat = collections.defaultdict(list)
    acks, seen = {}, {}
    final = collections.Counter()
    for c in clients:
        errors.update(c["errors"])
        for method, values in c["lat"].items():
            lat[method].extend(values)
        acks.update(c["acks"])
        seen.update(c["seen"])
        final.update(c["final"])
        problems.extend(c["problems"])
        for s in c["error_samples"]:
            print(f"  error: {s}", flush=True)
    assign, reports, results = {}, {}, {}
    for w in workers:
        errors.update(w["errors"])
        assign.update(w["assign"])
        reports.update(w["reports"])
        results.update(w["results"])
        problems.extend(w["problems"])
        problems.extend(w["cancel_storms"])
    # Worker round trips, joined across processes on the monotonic clock.
    for job_id, t in assign.items():
        if job_id in acks:
            lat["submit -> assignment at a worker"].append(
                (t, max(0.0, t - acks[job_id])))
    for job_id, steps in reports.items():
        got = seen.get(job_id, {}).get("reports", {})
        for step, t in steps.items():
            if step in got:
                lat["report -> REPORT event at a watcher"].append(
                    (got[step], got[step] - t))
    for job_id, (t, outcome) in results.items():
        end = seen.get(job_id, {}).get("end")
        if end is not None:
            lat["result -> SUCCEEDED event at a watcher"].append(
                (end, end - t))

    # The scheduler's view: exactly the acknowledged jobs, all SUCCEEDED.
    channel = grpc.insecure_channel(sched.address)
    stub = pb.sched_grpc.SchedulerStub(channel)
    try:
        jobs = cd.list_all(stub)
    except grpc.RpcError as e:
        errors[f"ListJobs {e.code().name}"] += 1
        jobs = []
    finally:
        channel.close()
    states = collections.Counter(cd.state_name(j.state) for j in jobs)
    ids = {j.id for j in jobs}
    if ids != set(acks):
        problems.append(f"ListJobs has {len(ids)} jobs, clients were "
                        f"acknowledged {len(acks)}; missing "
                        f"{sorted(set(acks) - ids)[:5]}, unknown "
                        f"{sorted(ids - set(acks))[:5]}")
    if states.get("SUCCEEDED", 0) != len(jobs):
        problems.append(f"final states {dict(states)}")
    requeued = sum(1 for j in jobs if j.attempt != 1)
    if requeued:
        problems.append(f"{requeued} jobs ran more than once")
    unwatched = set(acks) - set(seen)
    if unwatched:
        problems.append(f"{len(unwatched)} jobs never watched to the end, "
                        f"e.g. {sorted(unwatched)[:5]}")
    stale = sum(v for k, v in metrics.items()
                if k.startswith("halftime_stale_messages_total"))
    restarts = metrics.get("halftime_job_restarts_total", 0)
    if stale or restarts:
        problems.append(f"scheduler counted {int(stale)} stale messages and "
                        f"{int(restarts)} restarts")
    if sum(errors.values()):
        problems.append(f"{sum(errors.values())} RPCs failed: "
                        + ", ".join(f"{k}: {v}" for k, v in
                                    sorted(errors.items())))

    # Memory.
    ratio = None
    if "early" in samples and "late" in samples:
        ratio = samples["late"]["VmRSS"] / samples["early"]["VmRSS"]
        if ratio > args.rss_ratio:
            e, la = samples["early"], samples["late"]
            per_job = ((la["VmRSS"] - e["VmRSS"]) * 1024 /
                       max(1, la["finished"] - e["finished"]))
            problems.append(
                f"scheduler RSS grew {ratio:.2f}x (bound {args.rss_ratio}x) "
                f"from {e['VmRSS']} kB at {e['finished']} finished jobs to "
                f"{la['VmRSS']} kB at {la['finished']}: {per_job:.0f} bytes "
                f"per finished job (RssAnon {e['RssAnon']} -> "
                f"{la['RssAnon']} kB)")
    else:
        problems.append("RSS samples missing (target not reached)")

    # Figures.
    print("latency per method (seconds):", flush=True)
    print(f"  {'method':42s} {'n':>7s} {'p50':>8s} {'p99':>8s} {'max':>8s}"
          f"   p99 before/after the early RSS mark", flush=True)
    split_at = marks.get("early", float("inf"))
    for method in sorted(lat):
        values = lat[method]
        s = sorted(v for _, v in values)
        before = sorted(v for t, v in values if t < split_at)
        after = sorted(v for t, v in values if t >= split_at)
        print(f"  {method:42s} {len(s):7d} {percentile(s, 50):8.4f} "
              f"{percentile(s, 99):8.4f} {s[-1] if s else float('nan'):8.4f}"
              f"   {percentile(before, 99):.4f} / {percentile(after, 99):.4f}",
              flush=True)
    print("RSS samples (kB): " + "; ".join(
        f"{k}: VmRSS={v['VmRSS']} RssAnon={v['RssAnon']} "
        f"RssFile={v['RssFile']} threads={v['Threads']} cpu={v['cpu_s']}s"
        + (f" finished={v['finished']}" if "finished" in v else "")
        for k, v in samples.items()), flush=True)
    if ratio is not None:
        e, la = samples["early"], samples["late"]
        jobs = max(1, la["finished"] - e["finished"])
        warm = samples["workers registered"]
        warm_ms = ((e["cpu_s"] - warm["cpu_s"]) * 1000 /
                   max(1, e["finished"]))
        print(f"between the samples, per finished job: "
              f"{(la['VmRSS'] - e['VmRSS']) * 1024 / jobs:.0f} bytes of "
              f"VmRSS, {(la['RssAnon'] - e['RssAnon']) * 1024 / jobs:.0f} "
              f"of RssAnon, {(la['cpu_s'] - e['cpu_s']) * 1000 / jobs:.2f} "
              f"ms of scheduler CPU (before the early sample: "
              f"{warm_ms:.2f} ms)", flush=True)
    if timeline:
        print("RSS timeline (s, finished, VmRSS kB, RssAnon kB): "
              + " ".join(f"({t},{d},{r},{a})" for t, d, r, a in timeline),
              flush=True)
    print("errors by method and code: " + (", ".join(
        f"{k}={v}" for k, v in sorted(errors.items())) or "none"), flush=True)
    done_jobs = finished(metrics)
    figures["jobs finished"] = done_jobs
    figures["jobs acknowledged"] = len(acks)
    figures["final states"] = dict(states)
    figures["watched to the end"] = sum(final.values())
    figures["resubmits deduplicated"] = sum(c["dedup"] for c in clients)
    figures["worker sessions"] = sum(w["sessions"] for w in workers)
    figures["handed back (no slot)"] = sum(w["rejected_assignments"]
                                           for w in workers)
    figures["throughput jobs/s"] = round(
        samples.get("late", {}).get("finished", done_jobs) /
        max(1e-9, load_seconds), 1)
    figures["rpc errors"] = sum(errors.values())
    if ratio is not None:
        figures["RSS early kB"] = samples["early"]["VmRSS"]
        figures["RSS late kB"] = samples["late"]["VmRSS"]
        figures["RSS ratio"] = round(ratio, 3)
    return not problems


if __name__ == "__main__":
    sys.exit(main())
