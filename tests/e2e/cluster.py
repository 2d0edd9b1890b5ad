"""A real Halftime on loopback for end-to-end tests: a scheduler process,
worker processes and the CLI, plus a Python gRPC client generated from the
protos. Every process is killed when the test ends."""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BIN = {}  # name -> path, set by configure()
PROTO_OUT = None


def configure(bin_dir_args, proto_root, protoc, grpc_python_plugin, out):
    global PROTO_OUT
    BIN.update(bin_dir_args)
    PROTO_OUT = out
    os.makedirs(out, exist_ok=True)
    protos = [os.path.relpath(os.path.join(dp, f), proto_root)
              for dp, _, fs in os.walk(proto_root) for f in fs if f.endswith(".proto")]
    subprocess.run([protoc, f"-I{proto_root}", f"--python_out={out}",
                    f"--grpc_python_out={out}",
                    f"--plugin=protoc-gen-grpc_python={grpc_python_plugin}", *protos],
                   check=True)
    sys.path.insert(0, out)


SOURCE_DIR = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                          "..", ".."))


def configure_build(build_dir, python_out, source_dir=SOURCE_DIR):
    """configure() for the binaries of the build tree `build_dir`, with the
    Python stubs generated into `build_dir`/`python_out` (one folder per
    suite, so suites running at once do not rewrite each other's stubs)."""
    b = os.path.abspath(build_dir)
    configure({"scheduler": f"{b}/server/halftime-scheduler",
               "worker": f"{b}/worker/halftime-worker",
               "train": f"{b}/train/halftime-train",
               "cli": f"{b}/client/halftime"},
              os.path.join(source_dir, "proto"), "/usr/bin/protoc",
              "/usr/bin/grpc_python_plugin", os.path.join(b, python_out))


def main_args(python_out):
    """The command line every end-to-end suite takes (--build-dir,
    --source-dir, --keep; the rest goes to unittest), configured for that
    build. Returns (args, the arguments left for unittest)."""
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", required=True)
    parser.add_argument("--source-dir", default=SOURCE_DIR)
    parser.add_argument("--keep", action="store_true")
    args, rest = parser.parse_known_args()
    args.source_dir = os.path.abspath(args.source_dir)
    configure_build(args.build_dir, python_out, args.source_dir)
    return args, rest


def nano_spec(name, steps, checkpoint_every=10, precision="bf16-mixed",
              max_restarts=2, extra="", savings="{baseline: none}", seq_len=32,
              batch_size=4, emulation="allow"):
    """A gpt-nano job on synthetic data: a few steps a second on one CPU
    thread at the default size. `savings` is the YAML of the savings block;
    `extra` is appended as more YAML lines. bf16 runs natively where the CPU
    has it and emulated elsewhere (`emulation`: allow), so the suite passes
    on both kinds of machine."""
    return f"""name: {name}
model: {{builtin: gpt-nano}}
data: {{kind: synthetic, seq_len: {seq_len}, vocab_size: 64}}
precision: {precision}
resources: {{emulation: {emulation}}}
batch_size: {batch_size}
steps: {steps}
eval: {{every_steps: 0, batches: 1}}
checkpoint: {{every_steps: {checkpoint_every}}}
savings: {savings}
max_restarts: {max_restarts}
{extra}"""


def test_failed(test):
    """Whether unittest recorded an error or a failure for `test` (a
    TestCase, asked from its tearDown)."""
    result = test._outcome.result
    return any(t is test for t, _ in result.errors + result.failures)


def finish(test, clusters, keep):
    """Closes `clusters` at the end of `test`; keeps their logs, and says
    where, when the test failed or `keep` is set. Returns whether it kept."""
    keep = keep or test_failed(test)
    for c in clusters:
        c.close()
    for c in clusters:
        if keep:
            print(f"\nlogs kept in {c.dir}", file=sys.stderr)
        c.cleanup(keep=keep)
    return keep


def wait_for(predicate, timeout, what, interval=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Process:
    def __init__(self, args, log_path, env=None, pipe_log=False):
        """pipe_log: the process writes its output into a pipe that a thread
        copies to the log, so limits on the process's file writes (prlimit
        --fsize) do not apply to its log."""
        self.args = args
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE if pipe_log else self.log,
            stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.copier = None
        if pipe_log:
            import threading
            self.copier = threading.Thread(target=self._copy, daemon=True)
            self.copier.start()

    def _copy(self):
        for chunk in iter(lambda: self.proc.stdout.read1(65536), b""):
            self.log.write(chunk)
            self.log.flush()

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def address(self, what, timeout=60):
        def find():
            m = re.search(what + r" on (\d+\.\d+\.\d+\.\d+:\d+)", self.text())
            if self.proc.poll() is not None and not m:
                raise AssertionError(f"{self.args[0]} exited: {self.text()[-2000:]}")
            return m.group(1) if m else None
        return wait_for(find, timeout, f"'{what} on' in {self.log_path}")

    def signal(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill_group(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        if self.copier:
            self.copier.join(timeout=10)
            self.proc.stdout.close()
        self.log.close()


class Cluster:
    """Scheduler + workers in a temporary directory."""

    def __init__(self, name, lease_grace="3s", heartbeat="500ms", scheduler_args=(),
                 scheduler_pipe_log=False):
        self.dir = tempfile.mkdtemp(prefix=f"halftime-e2e-{name}-")
        self.data_root = os.path.join(self.dir, "data")
        os.makedirs(self.data_root)
        self.lease_grace = lease_grace
        self.heartbeat = heartbeat
        self.scheduler_args = list(scheduler_args)
        self.scheduler_pipe_log = scheduler_pipe_log
        self.scheduler = None
        self.channel = None
        self.workers = {}
        try:
            self.start_scheduler()
        except BaseException:
            self.close()  # a scheduler that never said where it listens
            raise

    def start_scheduler(self, listen="127.0.0.1:0"):
        self.scheduler_starts = getattr(self, "scheduler_starts", 0) + 1
        self.scheduler = Process(
            [BIN["scheduler"], "--listen", listen, "--metrics", "127.0.0.1:0",
             "--data-dir", os.path.join(self.dir, "scheduler"),
             "--lease-grace", self.lease_grace, "--heartbeat-interval", self.heartbeat,
             *self.scheduler_args],
            os.path.join(self.dir, f"scheduler-{self.scheduler_starts}.log"),
            pipe_log=self.scheduler_pipe_log)
        self.address = self.scheduler.address("listening")
        self.metrics_address = self.scheduler.address("metrics")
        import grpc
        from halftime.v1 import scheduler_pb2_grpc
        self.channel = grpc.insecure_channel(self.address)
        self.stub = scheduler_pb2_grpc.SchedulerStub(self.channel)

    def restart_scheduler(self, sig=signal.SIGKILL):
        """Stops the scheduler with `sig` and starts it again on the same
        address and data dir, so connected workers find it again."""
        self.scheduler.signal(sig)
        self.scheduler.proc.wait(timeout=60)
        self.scheduler.kill_group()
        self.channel.close()
        self.start_scheduler(listen=self.address)

    def start_worker(self, name, slots=1, threads=1, extra=(), scheduler=None,
                     env=None):
        """scheduler: the address the worker dials (default: the scheduler's
        own; a test puts a proxy in between). env: variables added to the
        worker's environment (its trainers inherit them)."""
        p = Process(
            [BIN["worker"], "--scheduler", scheduler or self.address,
             "--metrics", "127.0.0.1:0",
             "--name", name, "--slots", str(slots), "--threads-per-job", str(threads),
             "--data-root", self.data_root, "--work-dir", os.path.join(self.dir, name),
             "--out-root", os.path.join(self.dir, "out"), "--trainer", BIN["train"],
             "--stop-grace", "5", *extra],
            os.path.join(self.dir, f"{name}.log"),
            env=dict(os.environ, **env) if env else None)
        self.workers[name] = p  # close() kills it even if it never comes up
        p.metrics_address = p.address("metrics", timeout=120)
        wait_for(lambda: any(w.name == name for w in self.list_workers()), 60,
                 f"worker {name} to register")
        return p

    def list_workers(self):
        from halftime.v1 import scheduler_pb2
        return self.stub.ListWorkers(scheduler_pb2.ListWorkersRequest(), timeout=10).workers

    def cli(self, *args, check=False, timeout=300):
        result = subprocess.run([BIN["cli"], "--server", self.address, *args],
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"halftime {' '.join(args)} -> {result.returncode}: "
                                 f"{result.stderr}")
        return result

    def submit(self, spec_text, key=None):
        from halftime.v1 import scheduler_pb2
        response = self.stub.SubmitJob(scheduler_pb2.SubmitJobRequest(
            spec_text=spec_text, idempotency_key=key or ""), timeout=10)
        return response.job.id

    def job(self, job_id):
        from halftime.v1 import scheduler_pb2
        return self.stub.GetJob(scheduler_pb2.GetJobRequest(job_id=job_id), timeout=10)

    def wait_state(self, job_id, states, timeout=300):
        from halftime.v1 import job_pb2
        names = {job_pb2.JobState.Value(f"JOB_STATE_{s.upper()}") for s in states}
        return wait_for(lambda: (j := self.job(job_id)).state in names and j, timeout,
                        f"{job_id} to reach {states}", interval=0.2)

    def events(self, job_id, include_reports=True, timeout=300):
        from halftime.v1 import scheduler_pb2
        return list(self.stub.WatchJob(scheduler_pb2.WatchJobRequest(
            job_id=job_id, include_reports=include_reports), timeout=timeout))

    def close(self):
        for w in self.workers.values():
            w.kill_group()
        if self.channel:
            self.channel.close()
        if self.scheduler:
            self.scheduler.kill_group()

    def cleanup(self, keep):
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def trainer_pids(cluster, worker_name):
    """pids of halftime-train processes started by this cluster's worker."""
    # "job[s]" matches the trainers' paths but not the command line of
    # another pgrep running this search at the same time.
    out = subprocess.run(["pgrep", "-f", f"{cluster.dir}/{worker_name}/job[s]/"],
                         capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]
