"""End-to-end tests with real processes on loopback: halftime-scheduler,
halftime-worker (which runs halftime-train children) and the halftime CLI.

Run by CTest (label e2e); by hand:
  python3 tests/e2e/e2e_test.py --build-dir build [-k name] [--keep]
"""
import argparse
import os
import signal
import sys
import time
import unittest

import cluster
from cluster import Cluster, wait_for, trainer_pids

ARGS = None


def spec(name, steps, checkpoint_every=10, precision="bf16-mixed", max_restarts=2,
         extra=""):
    return f"""name: {name}
model: {{builtin: gpt-nano}}
data: {{kind: synthetic, seq_len: 32, vocab_size: 64}}
precision: {precision}
batch_size: 4
steps: {steps}
eval: {{every_steps: 0, batches: 1}}
checkpoint: {{every_steps: {checkpoint_every}}}
savings: {{baseline: none}}
max_restarts: {max_restarts}
{extra}"""


class E2ETest(unittest.TestCase):
    def setUp(self):
        self.cluster = Cluster(self._testMethodName)

    def tearDown(self):
        self.cluster.close()
        failed = any(e for _, e in (self._outcome.result.errors +
                                     self._outcome.result.failures)
                     if _ is self)
        if failed or ARGS.keep:
            print(f"\nlogs kept in {self.cluster.dir}", file=sys.stderr)
        self.cluster.cleanup(keep=failed or ARGS.keep)

    def reports(self, events):
        from halftime.v1 import job_pb2
        return [e.report for e in events if e.kind == job_pb2.JOB_EVENT_KIND_REPORT]

    def states(self, events):
        from halftime.v1 import job_pb2
        return [job_pb2.JobState.Name(e.state) for e in events
                if e.kind == job_pb2.JOB_EVENT_KIND_STATE_CHANGED]

    def wait_step(self, job_id, step, timeout=180):
        return wait_for(lambda: self.cluster.job(job_id).latest_report.step >= step,
                        timeout, f"{job_id} to reach step {step}", interval=0.2)

    def test_job_trains_to_completion_with_reports_in_order(self):
        c = self.cluster
        c.start_worker("w1")
        c.start_worker("w2")
        job_id = c.submit(spec("complete", steps=25))
        job = c.wait_state(job_id, ["succeeded", "failed"])
        self.assertEqual(job.failure_reason, "")
        from halftime.v1 import job_pb2
        self.assertEqual(job.state, job_pb2.JOB_STATE_SUCCEEDED)
        events = c.events(job_id)
        sequences = [e.sequence for e in events]
        self.assertEqual(sequences, list(range(1, len(events) + 1)), "no gaps")
        steps = [r.step for r in self.reports(events)]
        self.assertEqual(steps, list(range(1, 26)))
        self.assertEqual(self.states(events)[:1], ["JOB_STATE_QUEUED"])
        self.assertIn("JOB_STATE_RUNNING", self.states(events))
        self.assertEqual(self.states(events)[-1], "JOB_STATE_SUCCEEDED")

    def test_killed_worker_job_resumes_elsewhere_from_its_checkpoint(self):
        c = self.cluster
        first = c.start_worker("w1")
        job_id = c.submit(spec("resume", steps=400, checkpoint_every=10, max_restarts=2))
        self.wait_step(job_id, 1)
        self.assertEqual(c.job(job_id).worker, "w1")
        c.start_worker("w2")
        self.wait_step(job_id, 25)
        first.kill_group()  # kill -9 of the worker (its trainer dies with it)
        job = c.wait_state(job_id, ["succeeded", "failed"], timeout=300)
        from halftime.v1 import job_pb2
        self.assertEqual(job.state, job_pb2.JOB_STATE_SUCCEEDED, job.failure_reason)
        self.assertEqual(job.worker, "w2")
        self.assertEqual(job.attempt, 2)
        reports = self.reports(c.events(job_id))
        first_attempt = [r.step for r in reports if r.attempt == 1]
        second_attempt = [r.step for r in reports if r.attempt == 2]
        self.assertTrue(second_attempt, "the second worker reported")
        resumed_from = second_attempt[0] - 1
        self.assertEqual(resumed_from % 10, 0, "resumed from a checkpoint")
        self.assertGreaterEqual(resumed_from, 20)
        self.assertLessEqual(max(first_attempt) - resumed_from, 10,
                             "no step repeated beyond the checkpoint interval")
        self.assertEqual(second_attempt, list(range(resumed_from + 1, 401)),
                         "none skipped")

    def test_trainer_killed_by_signal_is_retried_then_fails(self):
        c = self.cluster
        c.start_worker("w1")
        job_id = c.submit(spec("crashy", steps=100000, max_restarts=1))
        for attempt in (1, 2):
            wait_for(lambda: c.job(job_id).attempt == attempt and
                     c.job(job_id).latest_report.step >= 2 and
                     c.job(job_id).latest_report.attempt == attempt,
                     180, f"attempt {attempt} running")
            for pid in trainer_pids("w1"):
                os.kill(pid, signal.SIGKILL)
        job = c.wait_state(job_id, ["failed", "succeeded"])
        from halftime.v1 import job_pb2
        self.assertEqual(job.state, job_pb2.JOB_STATE_FAILED)
        self.assertIn("killed by signal 9", job.failure_reason)
        self.assertEqual(job.attempt, 2)

    def test_cancel_ends_the_trainer_within_the_grace_period(self):
        c = self.cluster
        c.start_worker("w1")
        job_id = c.submit(spec("cancel-me", steps=100000))
        self.wait_step(job_id, 3)
        self.assertTrue(trainer_pids("w1"))
        began = time.time()
        result = c.cli("cancel", job_id)
        self.assertEqual(result.returncode, 0, result.stderr)
        c.wait_state(job_id, ["cancelled"], timeout=20)
        wait_for(lambda: not trainer_pids("w1"), 10, "the trainer to exit")
        self.assertLess(time.time() - began, 5 + 5, "within --stop-grace (5 s)")
        again = c.cli("cancel", job_id)
        self.assertEqual(again.returncode, 1)

    def test_drained_worker_hands_its_job_back(self):
        c = self.cluster
        w1 = c.start_worker("w1")
        job_id = c.submit(spec("drain", steps=400, checkpoint_every=10, max_restarts=0))
        self.wait_step(job_id, 15)
        c.start_worker("w2")
        w1.signal(signal.SIGTERM)
        self.assertEqual(w1.proc.wait(timeout=60), 0, w1.text()[-2000:])
        job = c.wait_state(job_id, ["succeeded", "failed"], timeout=300)
        from halftime.v1 import job_pb2
        self.assertEqual(job.state, job_pb2.JOB_STATE_SUCCEEDED,
                         "a handed-back job does not count as a restart: "
                         + job.failure_reason)
        self.assertEqual(job.worker, "w2")

    def test_spec_path_outside_the_data_root_is_refused(self):
        c = self.cluster
        c.start_worker("w1")
        job_id = c.submit("""name: escape
model: {builtin: gpt-nano}
data: {kind: text, path: ../../../etc/passwd}
precision: bf16-mixed
steps: 5
savings: {baseline: none}
""")
        job = c.wait_state(job_id, ["failed", "succeeded"])
        self.assertIn("outside the data root", job.failure_reason)

    def test_cpu_worker_runs_bf16_and_fp16_waits_with_a_reason(self):
        c = self.cluster
        c.start_worker("w1")
        from halftime.v1 import job_spec_pb2, job_pb2
        worker = [w for w in c.list_workers() if w.name == "w1"][0]
        native = {job_spec_pb2.Precision.Name(p)
                  for p in worker.capabilities.native_precisions}
        for p in ("PRECISION_BF16_MIXED", "PRECISION_BF16_MASTER",
                  "PRECISION_BF16_PURE", "PRECISION_FP32"):
            self.assertIn(p, native)
        for p in ("PRECISION_FP16_MIXED", "PRECISION_FP16_MASTER", "PRECISION_TF32"):
            self.assertNotIn(p, native)
        fp16 = c.submit(spec("fp16", steps=5, precision="fp16-mixed"))
        bf16 = c.submit(spec("bf16", steps=5, precision="bf16-mixed"))
        c.wait_state(bf16, ["succeeded"])
        job = c.job(fp16)
        self.assertEqual(job.state, job_pb2.JOB_STATE_QUEUED)
        self.assertIn("no worker runs fp16-mixed natively", job.queue_reason)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", required=True)
    parser.add_argument("--source-dir", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    parser.add_argument("--keep", action="store_true")
    ARGS, rest = parser.parse_known_args()
    b = os.path.abspath(ARGS.build_dir)
    cluster.configure(
        {"scheduler": f"{b}/server/halftime-scheduler",
         "worker": f"{b}/worker/halftime-worker",
         "train": f"{b}/worker/halftime-train",
         "cli": f"{b}/client/halftime"},
        os.path.join(ARGS.source_dir, "proto"), "/usr/bin/protoc",
        "/usr/bin/grpc_python_plugin", os.path.join(b, "tests", "e2e", "python"))
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
