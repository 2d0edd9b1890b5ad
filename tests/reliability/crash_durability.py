#!/usr/bin/env python3
"""Crash durability of halftime-scheduler (issue #9).

Starts a real scheduler on a data dir, plays workers over the real
WorkerGateway Connect stream and clients over the Scheduler service, and
kill -9s the scheduler at random moments (seeded RNG), restarting it on the
same data dir on a new port, while the clients submit jobs with idempotency
keys and the workers run others. After a final restart with no more kills
it waits until every job has finished and checks the history recorded on
the client side against what the scheduler says:

  * every acknowledged submit is there (GetJob, ListJobs), under the name
    (the idempotency key) it was submitted with; a key never maps to two jobs
    and repeated submits of one key are answered with one job id;
  * every job's events (WatchJob from 0, reports included) have gapless,
    increasing sequence numbers and a legal lifecycle: QUEUED -> ASSIGNED ->
    RUNNING -> terminal, with requeues to QUEUED (attempt + 1) from ASSIGNED
    or RUNNING; FAILED or CANCELLED from any live state; nothing after a
    terminal state; the last event agrees with GetJob;
  * no job ran on two workers under the same attempt at the same time (the
    workers record every assignment with the interval they ran it); no
    (job, attempt) was handed out twice (an attempt fences one placement);
    no worker was handed a job that the scheduler then forgot (a "phantom":
    an assignment sent before it was durable and lost in the crash);
  * every SUCCEEDED job succeeded under an attempt and on a worker that
    really ran it and reported success;
  * every job ends in a terminal state; acknowledged cancels stick;
  * the scheduler never exits on its own (a crash on restart), and no
    (job, attempt) gets an endless stream of cancels (a livelock).

Prints the seed and, at the end, the figures: runs, kills, jobs
submitted/acknowledged, jobs lost, double runs, illegal transitions, time.
Exit status 0 when every check passed.

  crash_durability.py --build-dir build [--runs 2 --jobs 150 --seed N]

The workers answer like worker/worker.cc: a Cancel of a run they do not know
is confirmed with a CANCELLED result, a run they were told is stale ends
with a CANCELLED result, an assignment for a job they already run or beyond
their slots is handed back (RELEASED), and results they could not send wait
for the next session. Unlike it, they match Cancels on job and attempt.
"""
import argparse
import collections
import importlib.util
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ARGS = None
pb = None  # namespace of generated modules, set by load_stubs()


# ---------------------------------------------------------------------------
# Generated stubs.

def load_stubs(proto_root, out):
    """Generates the Python stubs (Debian's protoc + grpc_python_plugin, or
    grpc_tools when installed) into `out` and imports them."""
    global pb
    os.makedirs(out, exist_ok=True)
    protos = sorted(os.path.relpath(os.path.join(dp, f), proto_root)
                    for dp, _, fs in os.walk(proto_root)
                    for f in fs if f.endswith(".proto"))
    if importlib.util.find_spec("grpc_tools") is not None:
        cmd = [sys.executable, "-m", "grpc_tools.protoc"]
        plugin = []
    else:
        cmd = [ARGS.protoc]
        plugin = [f"--plugin=protoc-gen-grpc_python={ARGS.grpc_python_plugin}"]
    subprocess.run([*cmd, f"-I{proto_root}", f"--python_out={out}",
                    f"--grpc_python_out={out}", *plugin, *protos], check=True)
    sys.path.insert(0, out)
    from halftime.v1 import job_pb2, scheduler_pb2, scheduler_pb2_grpc
    from halftime.v1 import worker_gateway_pb2, worker_gateway_pb2_grpc
    from halftime.v1 import worker_pb2, job_spec_pb2

    class NS:
        pass
    pb = NS()
    pb.job = job_pb2
    pb.sched = scheduler_pb2
    pb.sched_grpc = scheduler_pb2_grpc
    pb.gw = worker_gateway_pb2
    pb.gw_grpc = worker_gateway_pb2_grpc
    pb.worker = worker_pb2
    pb.spec = job_spec_pb2


def state_name(state):
    return pb.job.JobState.Name(state).replace("JOB_STATE_", "")


# ---------------------------------------------------------------------------
# The scheduler process.

class SchedulerProcess:
    """One data dir, restarted on a new port after each kill -9. Clients and
    workers ask for the current address (None while it is down)."""

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.data_dir = os.path.join(run_dir, "data")
        self.proc = None
        self.starts = 0
        self.kills = 0
        self.crashes = []  # descriptions of exits we did not cause
        self.cv = threading.Condition()
        self.address = None
        self.generation = 0

    def start(self):
        self.starts += 1
        log_path = os.path.join(self.run_dir, f"scheduler-{self.starts}.log")
        with open(log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [ARGS.scheduler, "--listen", "127.0.0.1:0",
                 "--metrics", "127.0.0.1:0", "--data-dir", self.data_dir,
                 "--lease-grace", ARGS.lease_grace,
                 "--heartbeat-interval", ARGS.heartbeat],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.log_path = log_path
        deadline = time.time() + 60
        address = None
        while time.time() < deadline:
            with open(log_path, "rb") as f:
                text = f.read().decode(errors="replace")
            m = re.search(r"listening on (\S+:\d+)", text)
            if m:
                address = m.group(1)
                break
            if self.proc.poll() is not None:
                self.crashes.append(
                    f"start {self.starts} exited with {self.proc.returncode}: "
                    f"{text[-1500:]}")
                raise RuntimeError(f"scheduler did not start: {text[-1500:]}")
            time.sleep(0.02)
        if address is None:
            raise RuntimeError(f"scheduler did not say where it listens "
                               f"({log_path})")
        with self.cv:
            self.address = address
            self.generation += 1
            self.cv.notify_all()

    def check_alive(self):
        """Records an exit we did not cause (a crash)."""
        if self.proc is not None and self.proc.poll() is not None:
            with open(self.log_path, "rb") as f:
                tail = f.read().decode(errors="replace")[-1500:]
            self.crashes.append(f"start {self.starts} exited by itself with "
                                f"{self.proc.returncode}: {tail}")
            return False
        return True

    def kill9(self):
        with self.cv:
            self.address = None
        self.check_alive()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.kills += 1

    def stop(self):
        with self.cv:
            self.address = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def current(self, timeout):
        """(generation, address) once up, or None after `timeout` s."""
        deadline = time.time() + timeout
        with self.cv:
            while self.address is None:
                left = deadline - time.time()
                if left <= 0:
                    return None
                self.cv.wait(left)
            return self.generation, self.address


# ---------------------------------------------------------------------------
# Client-side history.

class Run:
    """One assignment a simulated worker received and ran."""
    __slots__ = ("worker", "job_id", "attempt", "name", "start", "end",
                 "outcome", "steps", "step_seconds", "next_time", "stage")

    def __init__(self, worker, job_id, attempt, name, steps, duration):
        self.worker = worker
        self.job_id = job_id
        self.attempt = attempt
        self.name = name
        self.start = time.monotonic()
        self.end = None
        self.outcome = None  # SUCCEEDED, CANCELLED, stale, ...
        self.steps = steps
        self.step_seconds = duration / max(1, steps)
        self.next_time = self.start + random.uniform(0, 0.05)
        self.stage = 0  # 0: started not sent; k: k reports sent


class History:
    def __init__(self):
        self.mu = threading.Lock()
        self.acks = collections.defaultdict(list)  # key -> [job ids]
        self.submit_calls = 0
        self.submit_errors = collections.Counter()
        self.runs = []
        # Every assignment received, run or refused: (job id, attempt) ->
        # [(worker, time, job name)].
        self.assignments = collections.defaultdict(list)
        self.cancels_acked = {}  # job id -> state in the reply
        self.cancel_storms = []
        self.rejected_assignments = 0

    def ack(self, key, job_id):
        with self.mu:
            self.acks[key].append(job_id)


# ---------------------------------------------------------------------------
# Simulated worker.

class SimWorker(threading.Thread):
    """Plays halftime-worker: registers with the jobs it still runs,
    heartbeats, runs assignments (started, reports, result), obeys stale
    lists and cancels, and keeps results it could not send for the next
    session, as worker/worker.cc does."""

    def __init__(self, name, sched, hist, rng, stop, stall):
        super().__init__(name=name, daemon=True)
        self.wname = name
        self.sched = sched
        self.hist = hist
        self.rng = rng
        self.stop = stop
        self.stall = stall  # generation -> seconds to wait before connecting
        self.runs = {}  # job id -> Run
        self.pending_results = []
        self.out = None  # queue of the live stream, or None
        self.cancels = collections.Counter()
        self.storm = set()
        self.error = None

    # -- runs --

    def _finish(self, run, outcome, reason=""):
        run.end = time.monotonic()
        run.outcome = outcome
        del self.runs[run.job_id]
        result = pb.gw.JobResult(job_id=run.job_id, attempt=run.attempt,
                                 outcome=outcome, reason=reason)
        self._send_result(result)

    def _send_result(self, result):
        if self.out is not None:
            self.out.put(pb.gw.WorkerMessage(result=result))
        else:
            self.pending_results.append(result)

    def _send(self, **kw):
        if self.out is not None:
            self.out.put(pb.gw.WorkerMessage(**kw))

    def _progress(self):
        now = time.monotonic()
        for run in list(self.runs.values()):
            while run.job_id in self.runs and run.next_time <= now:
                if run.stage == 0:
                    self._send(started=pb.gw.JobStarted(
                        job_id=run.job_id, attempt=run.attempt))
                    run.stage = 1
                    run.next_time += run.step_seconds
                elif run.stage <= run.steps:
                    step = run.stage
                    self._send(report=pb.gw.JobReport(
                        job_id=run.job_id, attempt=run.attempt,
                        report=pb.job.TrainingReport(
                            step=step, total_steps=run.steps, loss=1.0 / step,
                            loss_scale=1.0, attempt=run.attempt)))
                    run.stage += 1
                    if run.stage > run.steps:
                        self._finish(run, pb.gw.JOB_OUTCOME_SUCCEEDED)
                    else:
                        run.next_time += run.step_seconds

    def _stop_run(self, job_id, attempt, why):
        run = self.runs.get(job_id)
        if run is None or run.attempt != attempt:
            return False
        # The real worker kills the trainer, then reports CANCELLED.
        self._finish(run, pb.gw.JOB_OUTCOME_CANCELLED, why)
        return True

    def _on_assignment(self, a):
        with self.hist.mu:
            self.hist.assignments[(a.job_id, a.attempt)].append(
                (self.wname, time.monotonic(), a.spec.name))
        if a.job_id in self.runs or len(self.runs) >= ARGS.slots:
            with self.hist.mu:
                self.hist.rejected_assignments += 1
            why = ("job already runs here" if a.job_id in self.runs
                   else "worker has no free slot")
            self._send_result(pb.gw.JobResult(
                job_id=a.job_id, attempt=a.attempt,
                outcome=pb.gw.JOB_OUTCOME_RELEASED, reason=why))
            return
        run = Run(self.wname, a.job_id, a.attempt, a.spec.name, a.spec.steps,
                  self.rng.uniform(ARGS.run_min, ARGS.run_max))
        self.runs[a.job_id] = run
        with self.hist.mu:
            self.hist.runs.append(run)

    def _on_cancel(self, c):
        key = (c.job_id, c.attempt)
        self.cancels[key] += 1
        if self.cancels[key] > 20:
            if key not in self.storm:
                self.storm.add(key)
                with self.hist.mu:
                    self.hist.cancel_storms.append(
                        f"{self.wname}: more than 20 cancels for {c.job_id} "
                        f"attempt {c.attempt}")
            return  # stop feeding the loop
        if self._stop_run(c.job_id, c.attempt, "cancelled"):
            return
        if c.job_id not in self.runs:
            # Unknown here: confirm, so the scheduler does not wait for us.
            self._send_result(pb.gw.JobResult(
                job_id=c.job_id, attempt=c.attempt,
                outcome=pb.gw.JOB_OUTCOME_CANCELLED,
                reason="not running on this worker"))

    # -- sessions --

    def run(self):
        try:
            while not self.stop.is_set():
                cur = self.sched.current(0.2)
                if cur is None:
                    self._progress()
                    continue
                generation, address = cur
                wait = self.stall.pop((self.wname, generation), 0)
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline and not self.stop.is_set():
                    self._progress()
                    time.sleep(0.05)
                self._serve(address)
                if not self.stop.is_set():
                    time.sleep(self.rng.uniform(0.02, 0.2))
        except Exception as e:  # a harness bug: fail loudly
            import traceback
            self.error = traceback.format_exc()
            raise e

    def _serve(self, address):
        import grpc
        out = queue.Queue()
        inbox = queue.Queue()
        register = pb.gw.RegisterWorker(
            name=self.wname,
            capabilities=pb.worker.WorkerCapabilities(
                device_kind=pb.spec.DEVICE_KIND_CPU, device_name="sim",
                memory_bytes=1 << 34, slots=ARGS.slots, threads_per_job=1,
                native_precisions=[pb.spec.PRECISION_FP32,
                                   pb.spec.PRECISION_BF16_MIXED]),
            running_jobs=[pb.gw.RunningJob(job_id=r.job_id, attempt=r.attempt)
                          for r in self.runs.values()])
        out.put(pb.gw.WorkerMessage(register=register))

        def requests():
            while True:
                m = out.get()
                if m is None:
                    return
                yield m

        channel = grpc.insecure_channel(address)
        call = pb.gw_grpc.WorkerGatewayStub(channel).Connect(requests())

        def reader():
            try:
                for m in call:
                    inbox.put(m)
            except grpc.RpcError:
                pass
            inbox.put(None)
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        try:
            try:
                first = inbox.get(timeout=10)
            except queue.Empty:
                return
            if first is None or not first.HasField("registered"):
                return
            reg = first.registered
            for stale in reg.stale_jobs:
                self._stop_run(stale.job_id, stale.attempt, "stale")
            self.out = out
            pending, self.pending_results = self.pending_results, []
            for r in pending:
                self._send_result(r)
            interval = max(0.05, reg.heartbeat_interval_ms / 1000.0)
            next_hb = time.monotonic() + interval
            while not self.stop.is_set():
                now = time.monotonic()
                wake = next_hb
                for r in self.runs.values():
                    wake = min(wake, r.next_time)
                try:
                    m = inbox.get(timeout=max(0.0, wake - now))
                except queue.Empty:
                    m = False
                if m is None:
                    return
                if m is not False:
                    if m.HasField("assignment"):
                        self._on_assignment(m.assignment)
                    elif m.HasField("cancel"):
                        self._on_cancel(m.cancel)
                self._progress()
                if time.monotonic() >= next_hb:
                    self._send(heartbeat=pb.gw.Heartbeat(running_jobs=[
                        pb.gw.RunningJob(job_id=r.job_id, attempt=r.attempt)
                        for r in self.runs.values()]))
                    next_hb = time.monotonic() + interval
        finally:
            self.out = None
            # Results still queued on the dead stream: keep them for later,
            # as the real worker does with writes that failed.
            while True:
                try:
                    m = out.get_nowait()
                except queue.Empty:
                    break
                if m is not None and m.HasField("result"):
                    self.pending_results.append(m.result)
            out.put(None)
            call.cancel()
            channel.close()
            t.join(timeout=5)


# ---------------------------------------------------------------------------
# Clients.

SPEC = """name: {name}
model: {{builtin: gpt-nano}}
data: {{kind: synthetic, seq_len: 16}}
precision: fp32
batch_size: 2
steps: {steps}
max_restarts: 100
savings: {{baseline: none}}
"""


class Clients:
    """Submits the run's keys at a bounded rate from several threads, each
    retrying until an OK reply; some keys are submitted twice, some jobs
    cancelled."""

    def __init__(self, sched, hist, keys, rng):
        self.sched = sched
        self.hist = hist
        self.keys = list(keys)
        self.next = 0
        self.mu = threading.Lock()
        self.rng = rng
        self.started = time.monotonic()
        self.threads = []
        self.errors = []
        self.done = threading.Event()

    def _take(self):
        with self.mu:
            if self.next >= len(self.keys):
                return None
            i = self.next
            self.next += 1
        # Pace: key i goes out at i / rate seconds.
        delay = self.started + i / ARGS.submit_rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return self.keys[i]

    def _stub(self, cache):
        import grpc
        cur = self.sched.current(30)
        if cur is None:
            raise RuntimeError("scheduler down for 30 s")
        generation, address = cur
        if cache.get("generation") != generation:
            if cache.get("channel") is not None:
                cache["channel"].close()
            cache["channel"] = grpc.insecure_channel(address)
            cache["stub"] = pb.sched_grpc.SchedulerStub(cache["channel"])
            cache["generation"] = generation
        return cache["stub"]

    def _call(self, cache, what, fn):
        """Retries `fn(stub)` until it answers; returns its reply or the
        RpcError of a final (non-retryable) failure."""
        import grpc
        while True:
            stub = self._stub(cache)
            try:
                return fn(stub)
            except grpc.RpcError as e:
                code = e.code()
                with self.hist.mu:
                    self.hist.submit_errors[f"{what} {code.name}"] += 1
                if code in (grpc.StatusCode.UNAVAILABLE,
                            grpc.StatusCode.DEADLINE_EXCEEDED,
                            grpc.StatusCode.CANCELLED,
                            grpc.StatusCode.UNKNOWN,
                            grpc.StatusCode.INTERNAL):
                    time.sleep(random.uniform(0.02, 0.15))
                    continue
                return e

    def _submit(self, cache, key, rng):
        text = SPEC.format(name=key, steps=rng.randint(ARGS.steps_min,
                                                       ARGS.steps_max))
        with self.hist.mu:
            self.hist.submit_calls += 1

        def call(stub):
            return stub.SubmitJob(pb.sched.SubmitJobRequest(
                spec_text=text, idempotency_key=key), timeout=10)
        reply = self._call(cache, "SubmitJob", call)
        if not isinstance(reply, pb.sched.SubmitJobResponse):
            raise RuntimeError(f"SubmitJob {key}: {reply.code()} "
                               f"{reply.details()}")
        if reply.job.spec.name != key:
            raise RuntimeError(f"SubmitJob {key} answered job "
                               f"{reply.job.id} named {reply.job.spec.name}")
        self.hist.ack(key, reply.job.id)
        return reply.job.id

    def _cancel(self, cache, job_id):
        def call(stub):
            return stub.CancelJob(pb.sched.CancelJobRequest(
                job_id=job_id, reason="harness"), timeout=10)
        reply = self._call(cache, "CancelJob", call)
        if isinstance(reply, pb.job.Job):
            with self.hist.mu:
                self.hist.cancels_acked[job_id] = reply.state

    def _loop(self, index):
        rng = random.Random(self.rng.random())
        cache = {}
        later = []  # (due time, action, key or job id): resubmits, cancels
        try:
            while True:
                key = self._take()
                now = time.monotonic()
                due = sorted(x for x in later if key is None or x[0] <= now)
                for item in due:
                    later.remove(item)
                    wait = item[0] - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    if item[1] == "resubmit":
                        self._submit(cache, item[2], rng)
                    else:
                        self._cancel(cache, item[2])
                if key is None:
                    break
                job_id = self._submit(cache, key, rng)
                if rng.random() < ARGS.resubmit_fraction:
                    later.append((time.monotonic() + rng.uniform(0, 3),
                                  "resubmit", key))
                if rng.random() < ARGS.cancel_fraction:
                    later.append((time.monotonic() + rng.uniform(0, 2),
                                  "cancel", job_id))
        except Exception:
            import traceback
            self.errors.append(traceback.format_exc())
        finally:
            if cache.get("channel") is not None:
                cache["channel"].close()

    def start(self):
        for i in range(ARGS.clients):
            t = threading.Thread(target=self._loop, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)

    def alive(self):
        return any(t.is_alive() for t in self.threads)


# ---------------------------------------------------------------------------
# Checks.

def legal(prev, to):
    S = pb.job
    if prev is None:
        return to == S.JOB_STATE_QUEUED
    allowed = {
        S.JOB_STATE_QUEUED: {S.JOB_STATE_ASSIGNED, S.JOB_STATE_CANCELLED},
        S.JOB_STATE_ASSIGNED: {S.JOB_STATE_RUNNING, S.JOB_STATE_QUEUED,
                               S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED},
        S.JOB_STATE_RUNNING: {S.JOB_STATE_QUEUED, S.JOB_STATE_SUCCEEDED,
                              S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED},
    }
    return to in allowed.get(prev, set())


def check_events(job, events, problems):
    """Returns the number of illegal transitions / sequence faults."""
    S = pb.job
    bad = 0

    def fault(msg):
        nonlocal bad
        bad += 1
        problems.append(f"{job.id}: {msg}")

    state = None
    attempt = 0
    for i, ev in enumerate(events):
        if ev.sequence != i + 1:
            fault(f"event #{i + 1} has sequence {ev.sequence} (gap or "
                  f"reorder)")
            break
        if ev.job_id != job.id:
            fault(f"event {ev.sequence} belongs to {ev.job_id}")
        if state in (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED,
                     S.JOB_STATE_CANCELLED):
            fault(f"event {ev.sequence} ({pb.job.JobEventKind.Name(ev.kind)})"
                  f" after terminal {state_name(state)}")
        if ev.kind == S.JOB_EVENT_KIND_STATE_CHANGED:
            if not legal(state, ev.state):
                fault(f"illegal transition {state_name(state) if state else '-'}"
                      f" -> {state_name(ev.state)} at sequence {ev.sequence}")
            want = 1 if state is None else (
                attempt + 1 if ev.state == S.JOB_STATE_QUEUED else attempt)
            if ev.attempt != want:
                fault(f"{state_name(ev.state)} at sequence {ev.sequence} has "
                      f"attempt {ev.attempt}, expected {want}")
            state = ev.state
            attempt = ev.attempt
        else:
            if state is None:
                fault(f"event {ev.sequence} before the job was QUEUED")
            elif ev.state != state or ev.attempt != attempt:
                fault(f"{pb.job.JobEventKind.Name(ev.kind)} event "
                      f"{ev.sequence} says {state_name(ev.state)}/attempt "
                      f"{ev.attempt}, job is {state_name(state)}/{attempt}")
            if (ev.kind == S.JOB_EVENT_KIND_REPORT and
                    ev.report.attempt != ev.attempt):
                fault(f"report at sequence {ev.sequence} of attempt "
                      f"{ev.report.attempt} under attempt {ev.attempt}")
    if events and (state != job.state or attempt != job.attempt or
                   events[-1].sequence != job.last_event_sequence):
        fault(f"events end in {state_name(state)}/attempt {attempt}/seq "
              f"{events[-1].sequence}, GetJob says {state_name(job.state)}/"
              f"attempt {job.attempt}/seq {job.last_event_sequence}")
    if not events:
        fault("no events")
    return bad


def list_all(stub, states=()):
    jobs, token = [], ""
    while True:
        page = stub.ListJobs(pb.sched.ListJobsRequest(
            states=states, page_size=1000, page_token=token), timeout=30)
        jobs.extend(page.jobs)
        token = page.next_page_token
        if not token:
            return jobs


def verify(sched, hist, keys, figures, problems):
    import grpc
    S = pb.job
    _, address = sched.current(10)
    channel = grpc.insecure_channel(address)
    stub = pb.sched_grpc.SchedulerStub(channel)
    try:
        jobs = list_all(stub)
        by_id = {j.id: j for j in jobs}
        by_name = collections.defaultdict(list)
        for j in jobs:
            by_name[j.spec.name].append(j)
        keyset = set(keys)
        # Acknowledged submits.
        lost = dup = 0
        for key in keys:
            ids = hist.acks.get(key, [])
            if not ids:
                problems.append(f"{key}: never acknowledged (harness)")
                continue
            if len(set(ids)) > 1:
                dup += 1
                problems.append(f"{key}: acknowledged as {sorted(set(ids))}")
            for job_id in set(ids):
                try:
                    j = stub.GetJob(pb.sched.GetJobRequest(job_id=job_id),
                                    timeout=10)
                except grpc.RpcError as e:
                    lost += 1
                    problems.append(f"{key}: acknowledged {job_id} is gone "
                                    f"({e.code().name})")
                    continue
                if j.spec.name != key:
                    lost += 1
                    problems.append(f"{key}: acknowledged {job_id} is now "
                                    f"job {j.spec.name!r}")
                elif job_id not in by_id:
                    lost += 1
                    problems.append(f"{key}: {job_id} missing from ListJobs")
        for name, js in by_name.items():
            if len(js) > 1:
                dup += 1
                problems.append(f"{name}: {len(js)} jobs "
                                f"{[j.id for j in js]} for one key")
            if name not in keyset:
                problems.append(f"{name}: a job nobody submitted "
                                f"({[j.id for j in js]})")
        figures["jobs lost"] = lost
        figures["duplicate jobs"] = dup

        # Terminal states, events.
        illegal = 0
        finals = collections.Counter()
        for j in jobs:
            finals[state_name(j.state)] += 1
            if j.state in (S.JOB_STATE_QUEUED, S.JOB_STATE_ASSIGNED,
                           S.JOB_STATE_RUNNING):
                problems.append(f"{j.id}: still {state_name(j.state)}")
            events = list(stub.WatchJob(pb.sched.WatchJobRequest(
                job_id=j.id, include_reports=True), timeout=30))
            illegal += check_events(j, events, problems)
            if j.state == S.JOB_STATE_FAILED:
                problems.append(f"{j.id}: FAILED: {j.failure_reason}")
        figures["illegal transitions"] = illegal
        figures["final states"] = dict(finals)
        for job_id, state in hist.cancels_acked.items():
            j = by_id.get(job_id)
            if state == S.JOB_STATE_CANCELLED and (
                    j is None or j.state != S.JOB_STATE_CANCELLED):
                problems.append(f"{job_id}: cancel acknowledged as CANCELLED,"
                                f" now {state_name(j.state) if j else 'gone'}")

        # Runs: double runs, phantoms, successes backed by a run.
        end = time.monotonic()
        by_attempt = collections.defaultdict(list)
        phantoms = 0
        for r in hist.runs:
            by_attempt[(r.job_id, r.attempt)].append(r)
            j = by_id.get(r.job_id)
            if j is None or j.spec.name != r.name:
                phantoms += 1
                problems.append(
                    f"phantom: {r.worker} ran {r.job_id} attempt {r.attempt} "
                    f"({r.name}); the scheduler has "
                    f"{repr(j.spec.name) if j else 'no such job'}")
        double = 0
        for (job_id, attempt), rs in by_attempt.items():
            rs.sort(key=lambda r: r.start)
            for i, a in enumerate(rs):
                for b in rs[i + 1:]:
                    if a.worker == b.worker:
                        continue
                    if b.start < (a.end if a.end is not None else end):
                        double += 1
                        problems.append(
                            f"double run: {job_id} attempt {attempt} on "
                            f"{a.worker} [{a.start - T0:.3f}, "
                            f"{(a.end or end) - T0:.3f}] and {b.worker} "
                            f"[{b.start - T0:.3f}, {(b.end or end) - T0:.3f}]")
        figures["double runs"] = double
        # An attempt number fences one placement: the scheduler hands each
        # (job, attempt) out once. A second assignment of the same attempt
        # means it forgot the first one (sent before it was durable).
        reused = 0
        for (job_id, attempt), got in hist.assignments.items():
            if len(got) > 1:
                reused += 1
                problems.append(
                    f"attempt reused: {job_id} attempt {attempt} assigned "
                    f"{len(got)} times: " + ", ".join(
                        f"{w} at {t - T0:.3f} ({name})" for w, t, name in got))
        figures["reused attempts"] = reused
        figures["phantom runs"] = phantoms
        unbacked = 0
        for j in jobs:
            if j.state != S.JOB_STATE_SUCCEEDED:
                continue
            if not any(r.worker == j.worker and
                       r.outcome == pb.gw.JOB_OUTCOME_SUCCEEDED
                       for r in by_attempt.get((j.id, j.attempt), [])):
                unbacked += 1
                problems.append(f"{j.id}: SUCCEEDED as attempt {j.attempt} "
                                f"on {j.worker}, which never ran it to the end")
        figures["unbacked successes"] = unbacked
        figures["assignments"] = len(hist.runs)
    finally:
        channel.close()


# ---------------------------------------------------------------------------
# One run.

T0 = time.monotonic()


def chaos(sched, clients, workers, stall, rng, problems):
    """Kill -9 at random moments, restarting each time, until every key is
    acknowledged and at least --kills kills happened."""
    deadline = time.monotonic() + ARGS.chaos_timeout
    while time.monotonic() < deadline:
        if rng.random() < 0.25:
            gap = rng.uniform(0.02, 0.3)  # while workers re-register
        else:
            gap = rng.uniform(ARGS.kill_min_gap, ARGS.kill_max_gap)
        time.sleep(gap)
        if not sched.check_alive():
            problems.append(f"scheduler crashed: {sched.crashes[-1]}")
            return
        if not clients.alive() and sched.kills >= ARGS.kills:
            return
        sched.kill9()
        time.sleep(rng.uniform(0, 0.3))  # down for a moment
        if rng.random() < ARGS.stall_fraction:
            # One worker comes back only after its lease ran out.
            stall[(rng.choice(workers).wname, sched.generation + 1)] = (
                ARGS.lease_grace_s * 1.5)
        sched.start()
    problems.append("chaos phase did not end in time (clients stuck?)")


def wait_finished(sched, clients, problems):
    """Waits until the clients are done and no job is live."""
    import grpc
    for t in clients.threads:
        t.join(timeout=ARGS.finish_timeout)
    problems.extend(f"client: {e}" for e in clients.errors)
    _, address = sched.current(10)
    channel = grpc.insecure_channel(address)
    stub = pb.sched_grpc.SchedulerStub(channel)
    deadline = time.monotonic() + ARGS.finish_timeout
    live = None
    while time.monotonic() < deadline:
        try:
            live = list_all(stub, states=[pb.job.JOB_STATE_QUEUED,
                                          pb.job.JOB_STATE_ASSIGNED,
                                          pb.job.JOB_STATE_RUNNING])
        except grpc.RpcError as e:
            live = [e]
        if not live and not clients.alive():
            break
        time.sleep(0.25)
    channel.close()
    if live:
        problems.append(f"{len(live)} jobs not finished after "
                        f"{ARGS.finish_timeout} s, e.g. "
                        f"{[getattr(j, 'id', j) for j in live[:5]]}")


COUNTED = ("jobs lost", "double runs", "illegal transitions", "duplicate jobs",
           "phantom runs", "reused attempts", "unbacked successes",
           "cancel storms")


def one_run(index, seed, root, totals):
    rng = random.Random(seed)
    run_dir = os.path.join(root, f"run-{index}")
    os.makedirs(run_dir)
    hist = History()
    sched = SchedulerProcess(run_dir)
    stop = threading.Event()
    stall = {}
    keys = [f"r{index}-k{i:05d}-{seed % 100000}" for i in range(ARGS.jobs)]
    problems = []
    figures = {"seed": seed}
    began = time.monotonic()
    workers = []
    try:
        sched.start()
        workers = [SimWorker(f"w{i}", sched, hist, random.Random(rng.random()),
                             stop, stall) for i in range(ARGS.workers)]
        for w in workers:
            w.start()
        clients = Clients(sched, hist, keys, rng)
        clients.start()
        chaos(sched, clients, workers, stall, rng, problems)
        if not problems:
            # The final restart; no more kills.
            sched.kill9()
            sched.start()
            wait_finished(sched, clients, problems)
            if sched.check_alive():
                verify(sched, hist, keys, figures, problems)
            else:
                problems.append(f"scheduler crashed: {sched.crashes[-1]}")
    except RuntimeError as e:  # the scheduler did not come back
        problems.append(f"restart failed: {e}")
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=10)
            if w.error:
                problems.append(f"worker {w.wname}: {w.error}")
        sched.stop()
    problems.extend(hist.cancel_storms)
    acked = sum(1 for k in keys if hist.acks.get(k))
    figures.update({
        "kills": sched.kills, "starts": sched.starts,
        "jobs submitted": len(keys), "jobs acknowledged": acked,
        "submit calls": hist.submit_calls,
        "client retries": sum(hist.submit_errors.values()),
        "cancel storms": len(hist.cancel_storms),
        "time s": round(time.monotonic() - began, 1),
    })
    print(f"run {index}: " + ", ".join(f"{k}={v}" for k, v in figures.items()),
          flush=True)
    for p in problems[:40]:
        print(f"  PROBLEM: {p}", flush=True)
    if len(problems) > 40:
        print(f"  ... and {len(problems) - 40} more", flush=True)
    totals["runs"] += 1
    totals["kills"] += sched.kills
    totals["jobs submitted"] += len(keys)
    totals["jobs acknowledged"] += acked
    for k in COUNTED:
        totals[k] += figures.get(k, 0)
    totals["crashes"] += len(sched.crashes)
    if problems:
        totals["failed runs"] += 1
        print(f"  logs kept in {run_dir}", flush=True)
    return not problems


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build-dir", required=True)
    p.add_argument("--source-dir", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    p.add_argument("--scheduler", default=None,
                   help="binary to test (default: BUILD/server/halftime-scheduler)")
    p.add_argument("--protoc", default="/usr/bin/protoc")
    p.add_argument("--grpc-python-plugin", default="/usr/bin/grpc_python_plugin")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--jobs", type=int, default=150, help="jobs per run")
    p.add_argument("--kills", type=int, default=6,
                   help="at least this many kill -9 per run")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--submit-rate", type=float, default=30.0,
                   help="submits per second, all clients together")
    p.add_argument("--run-min", type=float, default=0.2,
                   help="shortest simulated run, seconds")
    p.add_argument("--run-max", type=float, default=1.2)
    p.add_argument("--steps-min", type=int, default=2)
    p.add_argument("--steps-max", type=int, default=6)
    p.add_argument("--kill-min-gap", type=float, default=0.4,
                   help="seconds between kills (a quarter of them come "
                        "sooner, while workers re-register)")
    p.add_argument("--kill-max-gap", type=float, default=1.5)
    p.add_argument("--lease-grace", default="2s")
    p.add_argument("--heartbeat", default="250ms")
    p.add_argument("--stall-fraction", type=float, default=0.2,
                   help="share of restarts after which one worker comes back "
                        "only once its lease expired")
    p.add_argument("--resubmit-fraction", type=float, default=0.1)
    p.add_argument("--cancel-fraction", type=float, default=0.03)
    p.add_argument("--chaos-timeout", type=float, default=600)
    p.add_argument("--finish-timeout", type=float, default=120)
    p.add_argument("--keep", action="store_true", help="keep the data dirs")
    p.add_argument("--work-dir", default=None)
    ARGS = p.parse_args()
    b = os.path.abspath(ARGS.build_dir)
    ARGS.scheduler = ARGS.scheduler or os.path.join(b, "server",
                                                    "halftime-scheduler")
    m = re.fullmatch(r"([\d.]+)(ms|s)?", ARGS.lease_grace)
    if not m:
        p.error("--lease-grace: give seconds (2, 2s) or milliseconds (500ms)")
    ARGS.lease_grace_s = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    if ARGS.seed is None:
        ARGS.seed = random.SystemRandom().randrange(1 << 31)
    print(f"crash_durability: seed {ARGS.seed} (rerun with --seed "
          f"{ARGS.seed}), {ARGS.runs} runs x {ARGS.jobs} jobs, >= {ARGS.kills}"
          f" kills per run", flush=True)
    load_stubs(os.path.join(ARGS.source_dir, "proto"),
               os.path.join(b, "tests", "reliability", "python"))
    root = tempfile.mkdtemp(prefix="halftime-durability-", dir=ARGS.work_dir)
    totals = collections.Counter()
    began = time.monotonic()
    master = random.Random(ARGS.seed)
    ok = True
    for i in range(ARGS.runs):
        ok &= one_run(i, master.randrange(1 << 31), root, totals)
    print("figures: " + ", ".join(
        f"{k}={totals[k]}" for k in (
            "runs", "kills", "jobs submitted", "jobs acknowledged", *COUNTED,
            "crashes", "failed runs")) +
        f", time={time.monotonic() - began:.1f}s", flush=True)
    if ok and not ARGS.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"data kept in {root}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
