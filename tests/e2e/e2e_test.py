"""End-to-end tests with real processes on loopback: halftime-scheduler,
halftime-worker (which runs halftime-train children) and the halftime CLI.

Run by CTest (label e2e); by hand:
  python3 tests/e2e/e2e_test.py --build-dir build [-k name] [--keep]
"""
import json
import os
import subprocess
import signal
import sys
import time
import unittest

import cluster
from cluster import Cluster, wait_for, trainer_pids

ARGS = None


def scrape(address):
    import urllib.request
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        return r.read().decode()


spec = cluster.nano_spec


class E2ETest(unittest.TestCase):
    def setUp(self):
        self.cluster = Cluster(self._testMethodName)

    def tearDown(self):
        cluster.finish(self, [self.cluster], ARGS.keep)

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
        # Any moment will do: the trainer waits for each checkpoint to be
        # stored before it trains on, so even a kill during an upload
        # repeats at most the interval.
        self.wait_step(job_id, 25)
        first.kill_group()  # kill -9 of the worker (its trainer dies with it)
        wait_for(lambda: not trainer_pids(c, "w1"), 30,
                 "w1's trainer to stop once its worker is gone")
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

    def test_worker_reattaches_its_job_after_a_scheduler_restart(self):
        c = self.cluster
        c.start_worker("w1")
        job_id = c.submit(spec("reattach", steps=300, checkpoint_every=50))
        self.wait_step(job_id, 20)
        before = trainer_pids(c, "w1")
        self.assertEqual(len(before), 1)
        c.restart_scheduler(signal.SIGKILL)
        # The worker reconnects to the new process and re-attaches its
        # running job under the same attempt: same trainer, no restart.
        wait_for(lambda: any(w.name == "w1" for w in c.list_workers()), 60,
                 "w1 to register with the restarted scheduler")
        step_at_restart = c.job(job_id).latest_report.step
        self.wait_step(job_id, step_at_restart + 10)
        self.assertEqual(trainer_pids(c, "w1"), before)
        job = c.wait_state(job_id, ["succeeded", "failed", "cancelled"], timeout=300)
        from halftime.v1 import job_pb2
        self.assertEqual(job.state, job_pb2.JOB_STATE_SUCCEEDED, job.failure_reason)
        self.assertEqual(job.attempt, 1)
        events = c.events(job_id)
        self.assertEqual(self.states(events), ["JOB_STATE_QUEUED", "JOB_STATE_ASSIGNED",
                                               "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"])
        self.assertTrue(any("re-attached on w1" in e.message for e in events))
        steps = [r.step for r in self.reports(events)]
        self.assertEqual(steps, sorted(steps), "reports out of order")
        self.assertEqual(steps[-1], 300)

    def test_trainer_killed_by_signal_is_retried_then_fails(self):
        c = self.cluster
        c.start_worker("w1")
        job_id = c.submit(spec("crashy", steps=100000, max_restarts=1))
        for attempt in (1, 2):
            wait_for(lambda: c.job(job_id).attempt == attempt and
                     c.job(job_id).latest_report.step >= 2 and
                     c.job(job_id).latest_report.attempt == attempt,
                     180, f"attempt {attempt} running")
            for pid in trainer_pids(c, "w1"):
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
        self.assertTrue(trainer_pids(c, "w1"))
        began = time.time()
        result = c.cli("cancel", job_id)
        self.assertEqual(result.returncode, 0, result.stderr)
        c.wait_state(job_id, ["cancelled"], timeout=20)
        wait_for(lambda: not trainer_pids(c, "w1"), 10, "the trainer to exit")
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

    def test_metrics_endpoints_pass_promtool_and_job_series_come_and_go(self):
        c = self.cluster
        w1 = c.start_worker("w1")
        job_id = c.submit(spec("metrics", steps=100000))
        self.wait_step(job_id, 3)
        labels = f'job="{job_id}",precision="bf16-mixed"'
        worker_text = scrape(w1.metrics_address)
        for name in ("halftime_train_loss", "halftime_train_loss_scale",
                     "halftime_train_overflow_steps_total", "halftime_train_steps_total",
                     "halftime_train_tokens_per_second",
                     "halftime_train_samples_per_second",
                     "halftime_train_step_duration_seconds_count",
                     "halftime_train_peak_memory_bytes", "halftime_train_grad_norm"):
            self.assertIn(f"{name}{{{labels}}}", worker_text)
        self.assertIn('halftime_worker_slots{state="busy"} 1', worker_text)
        scheduler_text = scrape(c.metrics_address)
        self.assertIn('halftime_jobs{state="running"} 1', scheduler_text)
        self.assertIn("halftime_jobs_submitted_total 1", scheduler_text)
        for text in (worker_text, scheduler_text):
            check = subprocess.run(["promtool", "check", "metrics"], input=text,
                                   capture_output=True, text=True)
            self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        self.assertEqual(c.cli("cancel", job_id).returncode, 0)
        c.wait_state(job_id, ["cancelled"], timeout=30)
        wait_for(lambda: job_id not in scrape(w1.metrics_address), 10,
                 "the job's series to be removed")

    def test_spec_path_outside_the_data_root_is_refused(self):
        import grpc
        c = self.cluster
        c.start_worker("w1")
        escape = """name: escape
model: {builtin: gpt-nano}
data: {kind: text, path: %s}
precision: fp32
steps: 5
savings: {baseline: none}
"""
        # A path that climbs out is refused by the scheduler at submit...
        with self.assertRaises(grpc.RpcError) as refused:
            c.submit(escape % "../../../etc/passwd")
        self.assertEqual(refused.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("data.path: must stay inside the worker's data root",
                      refused.exception.details())
        # ...and one that leaves through a symlink by the worker.
        os.symlink("/etc", os.path.join(c.data_root, "escape"))
        job_id = c.submit(escape % "escape/passwd")
        job = c.wait_state(job_id, ["failed", "succeeded"])
        self.assertIn("outside the data root", job.failure_reason)

    def test_hugging_face_folder_fine_tunes_and_a_bad_one_fails_clearly(self):
        c = self.cluster
        c.start_worker("w1")
        make = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "../engine/python/hf_reference.py")
        for name in ("llama", "bad"):
            subprocess.run([sys.executable, make, "make",
                            os.path.join(c.data_root, "models", name),
                            "--arch", "llama", "--dtype", "bfloat16"],
                           check=True)
        config = os.path.join(c.data_root, "models/bad/config.json")
        with open(config) as f:
            text = f.read()
        with open(config, "w") as f:
            f.write(text.replace("LlamaForCausalLM", "FalconForCausalLM"))
        pretrained = """name: %s
model: {pretrained: models/%s}
data: {kind: synthetic, vocab_size: 64, seq_len: 32}
precision: bf16-mixed
resources: {emulation: allow}
batch_size: 4
steps: 6
checkpoint: {every_steps: 3}
savings: {baseline: none}
"""
        good = c.submit(pretrained % ("hf-llama", "llama"))
        bad = c.submit(pretrained % ("hf-bad", "bad"))
        from halftime.v1 import job_pb2
        job = c.wait_state(good, ["succeeded", "failed"])
        self.assertEqual(job.failure_reason, "")
        self.assertEqual(job.state, job_pb2.JOB_STATE_SUCCEEDED)
        steps = [r.step for r in self.reports(c.events(good))]
        self.assertEqual(steps, list(range(1, 7)))
        job = c.wait_state(bad, ["succeeded", "failed"])
        self.assertEqual(job.state, job_pb2.JOB_STATE_FAILED)
        self.assertIn("config.json", job.failure_reason)
        self.assertIn("FalconForCausalLM", job.failure_reason)

    def test_cpu_worker_runs_bf16_and_fp16_waits_with_a_reason(self):
        c = self.cluster
        c.start_worker("w1")
        from halftime.v1 import job_spec_pb2, job_pb2
        worker = [w for w in c.list_workers() if w.name == "w1"][0]
        names = lambda ps: {job_spec_pb2.Precision.Name(p) for p in ps}
        native = names(worker.capabilities.native_precisions)
        emulated = names(worker.capabilities.emulated_precisions)
        bf16_modes = {"PRECISION_BF16_MIXED", "PRECISION_BF16_MASTER",
                      "PRECISION_BF16_PURE"}
        self.assertIn("PRECISION_FP32", native)
        # This machine's CPU decides which; either way all three run.
        self.assertTrue(bf16_modes <= native or bf16_modes <= emulated,
                        (native, emulated))
        self.assertFalse(native & emulated)
        for p in ("PRECISION_FP16_MIXED", "PRECISION_FP16_MASTER", "PRECISION_TF32"):
            self.assertNotIn(p, native | emulated)
        fp16 = c.submit(spec("fp16", steps=5, precision="fp16-mixed"))
        bf16 = c.submit(spec("bf16", steps=5, precision="bf16-mixed"))
        self.assertEqual(c.wait_state(bf16, ["succeeded"]).emulated,
                         bf16_modes <= emulated)
        job = c.job(fp16)
        self.assertEqual(job.state, job_pb2.JOB_STATE_QUEUED)
        self.assertIn("no worker runs fp16-mixed natively", job.queue_reason)
        self.assertTrue(job.unplaceable)

    def test_bf16_on_an_emulating_fleet_waits_with_the_remedy_unless_allowed(self):
        """HALFTIME_CPU_ISA=avx2 caps the worker's CPU to one without native
        bf16 on any machine: an fp32-only fleet that emulates bf16."""
        c = self.cluster
        c.start_worker("w1", env={"HALFTIME_CPU_ISA": "avx2"})
        from halftime.v1 import job_spec_pb2
        caps = [w for w in c.list_workers() if w.name == "w1"][0].capabilities
        self.assertNotIn(job_spec_pb2.PRECISION_BF16_MIXED, caps.native_precisions)
        self.assertIn(job_spec_pb2.PRECISION_BF16_MIXED, caps.emulated_precisions)
        rates = {r.dtype: r for r in caps.rates}
        self.assertFalse(rates["bf16"].native)
        # The emulated GEMM runs near fp32's rate, far above the ~4 GFLOP/s
        # of libtorch's naive bf16 loops.
        self.assertGreater(rates["bf16"].flops_per_second,
                           rates["fp32"].flops_per_second / 4)
        workers_table = c.cli("workers", check=True).stdout
        self.assertIn("EMULATED", workers_table)
        self.assertIn("bf16-mixed", workers_table)
        self.assertIn("emul", workers_table)  # the bf16 rate (may be cut)

        spec_path = os.path.join(c.data_root, "deny.yaml")
        with open(spec_path, "w") as f:
            f.write(spec("deny", steps=5, emulation="deny"))
        start = time.time()
        watch = subprocess.Popen(
            [cluster.BIN["cli"], "--server", c.address, "submit", spec_path,
             "--watch"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        try:
            shown = []
            for line in watch.stdout:
                shown.append(line)
                if "resources.emulation: allow" in line:
                    break
            elapsed = time.time() - start
            self.assertIn("waiting: no worker runs bf16-mixed natively", "".join(shown))
            self.assertLess(elapsed, 2.0, "".join(shown))
        finally:
            watch.kill()
            watch.wait()
        # A watch with a queue timeout ends with the reason and exit 1.
        from halftime.v1 import scheduler_pb2
        job_id = [j for j in c.stub.ListJobs(scheduler_pb2.ListJobsRequest(),
                                             timeout=10).jobs
                  if j.spec.name == "deny"][0].id
        timed = c.cli("watch", job_id, "--queue-timeout", "1s")
        self.assertEqual(timed.returncode, 1, timed.stdout + timed.stderr)
        self.assertIn("still queued after 1s", timed.stderr)
        self.assertIn("resources.emulation: allow", timed.stderr)
        job = c.job(job_id)
        self.assertTrue(job.unplaceable)
        # `get` wraps the reason whole (never cuts it at the terminal width).
        shown = " ".join(c.cli("get", job_id).stdout.split())
        self.assertIn("set resources.emulation: allow to run there", shown)

        allowed = c.submit(spec("allow", steps=12, emulation="allow",
                                savings="{baseline: probe, probe_steps: 3}"))
        job = c.wait_state(allowed, ["succeeded", "failed"])
        self.assertEqual(job.failure_reason, "")
        self.assertTrue(job.emulated)
        self.assertTrue(job.savings.emulated)
        self.assertIn("bf16-mixed (emulated)", c.cli("savings", check=True).stdout)


class CliTest(unittest.TestCase):
    """Every verb of the halftime CLI against a real scheduler and worker."""

    def setUp(self):
        self.cluster = Cluster(self._testMethodName)

    def tearDown(self):
        self.cluster.close()
        self.cluster.cleanup(keep=ARGS.keep)

    def json(self, *args):
        result = self.cluster.cli(*args, "-o", "json", check=True)
        return json.loads(result.stdout)

    def render_and_check(self, html_path):
        import png
        import shutil
        browser = shutil.which("chromium-headless-shell") or shutil.which("chromium")
        self.assertIsNotNone(browser, "headless Chromium is missing: run scripts/setup.sh")
        shot = html_path + ".png"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                        f"--user-data-dir={self.cluster.dir}/chromium",
                        f"--screenshot={shot}", "--window-size=1000,1400",
                        "file://" + os.path.abspath(html_path)],
                       capture_output=True, timeout=120, check=True)
        width, height, rows = png.read_png(shot)
        self.assertEqual((width, height), (1000, 1400))
        white = png.colour_count(rows, (255, 255, 255), tolerance=2)
        self.assertLess(white, width * height * 0.97, "the page rendered blank")
        # The two runs' curves and bars in their palette colours.
        self.assertGreater(png.colour_count(rows, (0x00, 0x72, 0xb2)), 300)
        self.assertGreater(png.colour_count(rows, (0xd5, 0x5e, 0x00)), 300)

    def test_every_verb_against_a_real_cluster(self):
        c = self.cluster
        c.start_worker("w1")
        spec_path = os.path.join(c.data_root, "job.yaml")
        with open(spec_path, "w") as f:
            f.write(spec("cli", steps=12, savings="{baseline: probe, probe_steps: 3}"))
        submitted = self.json("submit", spec_path)
        job_id = submitted["job"]["id"]
        self.assertEqual(submitted["job"]["spec"]["precision"], "bf16-mixed")

        watch = c.cli("watch", job_id)
        self.assertEqual(watch.returncode, 0, watch.stderr)
        self.assertIn(f"job {job_id} succeeded", watch.stdout + watch.stderr)

        job = self.json("get", job_id)
        self.assertEqual(job["state"], "succeeded")
        self.assertEqual(job["latest_report"]["step"], 12)
        self.assertEqual(job["worker"], "w1")
        table = c.cli("get", job_id, check=True).stdout
        self.assertIn("succeeded", table)

        listed = self.json("list")
        self.assertIn(job_id, [j["id"] for j in listed["jobs"]])
        self.assertIn(job_id, c.cli("list", "--state", "succeeded", check=True).stdout)
        self.assertNotIn(job_id, c.cli("list", "--state", "running", check=True).stdout)
        workers = self.json("workers")
        self.assertEqual([w["name"] for w in workers["workers"]], ["w1"])
        caps = workers["workers"][0]["capabilities"]
        # Native where the CPU has bf16, emulated where it has not.
        self.assertIn("bf16-mixed", caps.get("native_precisions", []) +
                      caps.get("emulated_precisions", []))

        savings = self.json("savings", job_id)
        self.assertEqual(len(savings["jobs"]), 1)
        measured = savings["jobs"][0]
        self.assertGreater(measured["baseline_step_seconds"], 0)
        self.assertGreater(measured["step_seconds"], 0)
        self.assertGreater(measured["speedup"], 0)
        self.assertGreater(measured["probe_seconds"], 0)
        self.assertEqual(measured["baseline"], "probe")
        self.assertEqual(len(measured["fingerprint"]), 16)
        self.assertIn("speedup", c.cli("savings", job_id, check=True).stdout)
        self.assertIn("bf16-mixed", c.cli("savings", check=True).stdout)

        # The same model, batch and device with `baseline: cached` reuses the
        # stored probe: no second fp32 run, the same fp32 figures.
        cached_path = os.path.join(c.data_root, "cached.yaml")
        with open(cached_path, "w") as f:
            f.write(spec("cached", steps=12, savings="{baseline: cached}"))
        cached_id = self.json("submit", cached_path)["job"]["id"]
        self.assertEqual(c.cli("watch", cached_id).returncode, 0)
        reused = self.json("savings", cached_id)["jobs"][0]
        self.assertEqual(reused["baseline"], "cached")
        self.assertEqual(reused["fingerprint"], measured["fingerprint"])
        self.assertEqual(reused["baseline_step_seconds"], measured["baseline_step_seconds"])
        self.assertEqual(reused["probe_seconds"], 0)
        self.assertGreater(reused["step_seconds"], 0)
        self.assertIn("cached", c.cli("savings", cached_id, check=True).stdout)
        job_dirs = os.path.join(c.dir, "w1", "jobs")
        self.assertTrue(os.path.exists(os.path.join(
            job_dirs, job_id, "attempt-1", "probe-stderr.log")))
        self.assertTrue(os.path.isdir(os.path.join(job_dirs, cached_id, "attempt-1")))
        self.assertFalse(os.path.exists(os.path.join(
            job_dirs, cached_id, "attempt-1", "probe-stderr.log")))

        # The picture without Grafana: an HTML report, rendered by headless
        # Chromium into a PNG that shows both runs' loss curves.
        report = os.path.join(c.dir, "report.html")
        wrote = c.cli("savings", job_id, cached_id, "--html", report, check=True)
        self.assertIn("(2 jobs, 2 with measured savings)", wrote.stdout)
        with open(report) as f:
            html = f.read()
        self.assertEqual(html.count('<polyline class="loss"'), 2)
        self.assertIn(f'data-job="{cached_id}"', html)
        self.render_and_check(report)
        self.assertEqual(c.cli("logs", job_id).returncode, 0)
        self.assertEqual(c.cli("get", job_id, "-o", "yaml", check=True).stdout.count(job_id) >= 1, True)

        # Errors: each a sentence, with the documented exit code.
        finished = c.cli("cancel", job_id)
        self.assertEqual(finished.returncode, 1)
        self.assertIn("already succeeded", finished.stderr)
        unknown = c.cli("get", "j-999999")
        self.assertEqual(unknown.returncode, 2)
        self.assertIn("job j-999999 not found", unknown.stderr)
        bad_spec = os.path.join(c.data_root, "bad.yaml")
        with open(bad_spec, "w") as f:
            f.write(spec("bad", steps=0))
        invalid = c.cli("submit", bad_spec)
        self.assertEqual(invalid.returncode, 2)
        self.assertIn("steps: must be between 1 and 100000000", invalid.stderr)
        unreachable = subprocess.run([cluster.BIN["cli"], "--server", "127.0.0.1:1", "list"],
                                     capture_output=True, text=True, timeout=60)
        self.assertEqual(unreachable.returncode, 1)
        self.assertIn("cannot reach scheduler at 127.0.0.1:1", unreachable.stderr)

    def test_tokens_are_required_when_configured(self):
        self.cluster.close()
        tokens = os.path.join(self.cluster.dir, "tokens")
        with open(tokens, "w") as f:
            f.write("user u-secret\nworker w-secret\n")
        for name, token in (("user", "u-secret"), ("wrong", "nope"), ("worker", "w-secret")):
            with open(os.path.join(self.cluster.dir, name), "w") as f:
                f.write(token + "\n")
        self.cluster.scheduler_args = ["--token-file", tokens]
        self.cluster.start_scheduler()
        c = self.cluster
        ok = c.cli("--token-file", os.path.join(c.dir, "user"), "list")
        self.assertEqual(ok.returncode, 0, ok.stderr)
        for args in ([], ["--token-file", os.path.join(c.dir, "wrong")]):
            denied = c.cli(*args, "list")
            self.assertEqual(denied.returncode, 1)
            self.assertIn("authentication failed", denied.stderr)
        self.assertNotIn("u-secret", c.scheduler.text(), "tokens are never logged")


if __name__ == "__main__":
    ARGS, rest = cluster.main_args("tests/e2e/python")
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
