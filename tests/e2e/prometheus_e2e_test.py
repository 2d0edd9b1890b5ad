"""End-to-end test with a real Prometheus (Debian's `prometheus` binary)
scraping a real scheduler and worker while a job trains, then asking
Prometheus' HTTP API whether the job's series, the savings counters, every
Grafana panel in deploy/grafana/ and every rule in deploy/prometheus/ work
against what Halftime really exports.

Run by CTest (label e2e); by hand:
  python3 tests/e2e/prometheus_e2e_test.py --build-dir build [-k name] [--keep]
"""
import glob
import json
import os
import re
import socket
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

import yaml

import cluster
from cluster import Cluster, Process, wait_for

ARGS = None
PRECISION = "bf16-mixed"

# Metric names a dashboard or rule may use although this build does not
# export them yet. Keep it to names whose exporting change is in flight:
#   halftime_jobs_unplaceable{precision}: scheduler gauge of QUEUED jobs no
#     current worker can run, with its Fleet panel, added in parallel with
#     this test; a build that predates it lacks the name. Remove the entry
#     once the scheduler exports it.
NOT_YET_EXPORTED = {"halftime_jobs_unplaceable"}

# PromQL words that look like metric names but are not.
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "offset", "bool", "inf", "nan"}


def spec(steps, name="prometheus-e2e", precision=PRECISION):
    # Long enough that a 1 s scrape sees it running and that bf16-mixed saves
    # more device time than the fp32 probe costs (about 1.5x faster per step
    # on one CPU thread with native bf16; where bf16 is emulated it saves
    # memory only, and the test checks the emulated series instead); small
    # enough to keep the test short.
    return cluster.nano_spec(name, steps, checkpoint_every=0, precision=precision,
                             max_restarts=0, savings="{baseline: probe, probe_steps: 5}",
                             seq_len=64, batch_size=16)


def metric_names(expr):
    """The metric names a PromQL expression selects (not functions, label
    names, keywords or durations)."""
    names = set(re.findall(r"""__name__\s*=\s*["']([A-Za-z_:][\w:]*)["']""", expr))
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^}]*\}", "{}", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "[]", s)  # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s,
               flags=re.IGNORECASE)  # grouping and matching label lists
    for m in re.finditer(r"[A-Za-z_:][\w:]*", s):
        word = m.group(0)
        before = s[m.start() - 1] if m.start() > 0 else " "
        if before.isalnum() or before in "._":  # 5m, 1e3, 0x1f
            continue
        if re.match(r"\s*\(", s[m.end():]) or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def selectors(expr):
    """The `name{matchers}` selectors of a PromQL expression that have
    matchers (a bare name is covered by metric_names)."""
    found = []
    for m in re.finditer(r'([A-Za-z_:][\w:]*)?\s*\{((?:[^{}"\']|"(?:[^"\\]|\\.)*"|'
                         r"'(?:[^'\\]|\\.)*')*)\}", expr):
        name = m.group(1) if (m.group(1) or "").lower() not in KEYWORDS else ""
        if m.group(2).strip():
            found.append(f"{name or ''}{{{m.group(2)}}}")
    return found


def panels(board):
    for p in board.get("panels", []):
        yield p
        yield from panels(p)  # rows hold their panels when collapsed


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(address):
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        return r.read().decode()


class Prometheus:
    """A Prometheus server scraping one scheduler and one worker every second,
    configured from deploy/prometheus/prometheus.yml with its alert rules."""

    def __init__(self, directory):
        self.directory = directory
        self.process = None

    def start(self, scheduler, worker):
        directory = self.directory
        deploy = os.path.join(ARGS.source_dir, "deploy", "prometheus")
        with open(os.path.join(deploy, "prometheus.yml")) as f:
            config = yaml.safe_load(f)
        config["global"] = {**config.get("global", {}), "scrape_interval": "1s",
                            "scrape_timeout": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [os.path.join(deploy, r) for r in config.get("rule_files", [])]
        targets = {"halftime-scheduler": scheduler, "halftime-worker": worker}
        jobs = [sc["job_name"] for sc in config["scrape_configs"]]
        assert sorted(jobs) == sorted(targets), f"prometheus.yml scrapes {jobs}"
        for sc in config["scrape_configs"]:
            sc.pop("scrape_interval", None)
            sc.pop("scrape_timeout", None)
            sc["static_configs"] = [{"targets": [targets[sc["job_name"]]]}]
        self.config_path = os.path.join(directory, "prometheus.yml")
        with open(self.config_path, "w") as f:
            yaml.safe_dump(config, f)
        for attempt in range(3):  # the free port may be taken before we bind it
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            self.process = Process(
                ["prometheus", f"--config.file={self.config_path}",
                 f"--storage.tsdb.path={os.path.join(directory, f'tsdb-{attempt}')}",
                 f"--web.listen-address=127.0.0.1:{port}"],
                os.path.join(directory, f"prometheus-{attempt}.log"))
            if wait_for(self.ready, 60, "prometheus to be ready", interval=0.2) == "ready":
                return
            self.process.kill_group()
        raise AssertionError(f"prometheus did not start: {self.process.text()[-2000:]}")

    def ready(self):
        if self.process.proc.poll() is not None:
            return "exited"
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return "ready" if r.status == 200 else None
        except OSError:
            return None

    def api(self, path, **params):
        """GET /api/v1/PATH; the decoded body, errors included."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:  # 400/422/503 carry a JSON error
            body = e.read().decode(errors="replace")
            try:
                return json.loads(body)
            except ValueError:
                return {"status": "error", "error": f"HTTP {e.code}: {body[:500]}"}

    def query(self, expr, **params):
        return self.api("query", query=expr, **params)

    def vector(self, expr):
        body = self.query(expr)
        assert body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]

    def close(self):
        if self.process:
            self.process.kill_group()


class PrometheusE2ETest(unittest.TestCase):
    def setUp(self):
        self.prometheus = None
        self.cluster = Cluster(self._testMethodName,
                               scheduler_args=["--default-device-price", "3.6"])

    def tearDown(self):
        if self.prometheus:
            self.prometheus.close()
        cluster.finish(self, [self.cluster], ARGS.keep)

    def test_dashboards_and_rules_against_a_real_prometheus(self):
        c = self.cluster
        worker = c.start_worker("w1")
        self.prometheus = prom = Prometheus(c.dir)  # tearDown stops it
        prom.start(c.metrics_address, worker.metrics_address)

        def targets_up():
            active = prom.api("targets")["data"]["activeTargets"]
            return (sorted(t["labels"]["job"] for t in active if t["health"] == "up") ==
                    ["halftime-scheduler", "halftime-worker"])
        wait_for(targets_up, 30, "both scrape targets to be up", interval=0.5)
        began = time.time()

        # A job no CPU worker can run (fp16 is not native on CPU) stays
        # queued for the whole run: the placement-reason panel and
        # halftime_jobs_unplaceable have something to show.
        unplaceable_id = c.submit(spec(steps=5, name="prometheus-e2e-fp16",
                                       precision="fp16-mixed"))
        # 1. While the job runs: its series, with labels job and precision.
        job_id = c.submit(spec(steps=300))
        labels = f'job="{job_id}",precision="{PRECISION}"'
        for name in ("halftime_train_loss_scale", "halftime_train_tokens_per_second"):
            series = wait_for(lambda: prom.vector(f"{name}{{{labels}}}"), 150,
                              f"{name}{{{labels}}} in Prometheus", interval=0.5)
            self.assertEqual(len(series), 1, series)
        from halftime.v1 import job_pb2
        self.assertEqual(job_pb2.JobState.Name(c.job(job_id).state), "JOB_STATE_RUNNING")

        # 4. promtool check metrics on both endpoints, job series included.
        worker_text = scrape(worker.metrics_address)
        self.assertIn(f'halftime_train_loss_scale{{{labels}}}', worker_text)
        for what, text in (("worker", worker_text), ("scheduler", scrape(c.metrics_address))):
            check = subprocess.run(["promtool", "check", "metrics"], input=text,
                                   capture_output=True, text=True)
            self.assertEqual(check.returncode, 0,
                             f"promtool check metrics on the {what}'s /metrics:\n"
                             + check.stdout + check.stderr)

        # 2. After the job ends: savings for its precision.
        job = c.wait_state(job_id, ["succeeded", "failed", "cancelled"], timeout=240)
        self.assertEqual(job_pb2.JobState.Name(job.state), "JOB_STATE_SUCCEEDED",
                         job.failure_reason)
        savings = {
            "halftime_savings_device_seconds_total": f'{{precision="{PRECISION}"}}',
            "halftime_savings_memory_bytes": f'{{precision="{PRECISION}"}}',
            # No precision label by design (docs/design.md); accept one if added.
            "halftime_savings_cost_total": f'{{precision=~"{PRECISION}|"}}',
        }
        if job.emulated:
            # A CPU without native bf16 emulates it: memory saved, not time,
            # and such jobs are counted apart from the savings above.
            savings = {
                "halftime_savings_emulated_jobs_total": f'{{precision="{PRECISION}"}}',
                "halftime_savings_emulated_memory_bytes": f'{{precision="{PRECISION}"}}',
            }

        def saved():
            return all(any(float(s["value"][1]) > 0 for s in prom.vector(f"sum({n}{m})"))
                       for n, m in savings.items())
        try:
            wait_for(saved, 30, "non-zero savings in Prometheus", interval=0.5)
        except AssertionError as e:
            now = {n: prom.vector(f"{n}{m}") for n, m in savings.items()}
            ledger = c.cli("savings", job_id, "-o", "json").stdout
            raise AssertionError(f"{e}: {json.dumps(now)}\nhalftime savings: {ledger}")
        stuck = prom.vector('halftime_jobs_unplaceable{precision="fp16-mixed"}')
        self.assertEqual([float(v["value"][1]) for v in stuck], [1.0],
                         f"{unplaceable_id} should count as unplaceable")
        time.sleep(2)  # a couple more scrapes and rule evaluations
        ended = time.time()

        # 3. Every dashboard panel and every rule, against what is exported.
        names = set(prom.api("label/__name__/values")["data"])
        problems = []
        variables = {
            "job": job_id, "precision": PRECISION,
            "__interval": "5s", "__interval_ms": "5000",
            "__rate_interval": "10s",
            "__range": f"{int(ended - began) + 1}s",
            "__range_s": str(int(ended - began) + 1),
            "__range_ms": str(int(ended - began + 1) * 1000),
        }

        def substitute(expr, where):
            def value(m):
                name = m.group(1) or m.group(2) or m.group(3)
                if name not in variables:
                    problems.append(f"{where}: {expr}: unknown template variable "
                                    f"${name}; give it a value in this test")
                    return ".*"
                return variables[name]
            return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)(?::\w+)?\]\]|\$(\w+)", value, expr)

        def check(expr, where):
            """Evaluates expr; True when it may also be expected to show data."""
            body = prom.query(expr)
            if body.get("status") != "success":
                problems.append(f"{where}: {expr}: {body.get('errorType')}: "
                                f"{body.get('error')}")
                return False
            unknown = metric_names(expr) - names
            for name in sorted(unknown - NOT_YET_EXPORTED):
                problems.append(f"{where}: {expr}: metric {name} is exported by "
                                f"neither the scheduler nor the worker")
            ok = not unknown
            # Label matchers must match what is exported (e.g. state="lost").
            for selector in selectors(expr):
                if metric_names(selector) & unknown:
                    continue
                series = prom.api("series", **{"match[]": selector}, start=began, end=ended)
                if series.get("status") != "success" or not series["data"]:
                    problems.append(f"{where}: {expr}: {selector} selects no series "
                                    f"during the run ({series.get('error', 'none')})")
                    ok = False
            return ok

        boards = sorted(glob.glob(os.path.join(ARGS.source_dir, "deploy", "grafana",
                                               "*.json")))
        self.assertTrue(boards)
        checked = 0
        for path in boards:
            with open(path) as f:
                board = json.load(f)
            title = f"{os.path.basename(path)} ({board.get('title')})"
            for var in board.get("templating", {}).get("list", []):
                if var.get("type") != "query":
                    continue
                query = var.get("query")
                query = query.get("query", "") if isinstance(query, dict) else query or ""
                where = f"{title}, variable ${var['name']}"
                m = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)\s*", query)
                if not m:
                    problems.append(f"{where}: {query}: only label_values(metric, "
                                    f"label) is understood here")
                    continue
                selector, label = substitute(m.group(1), where), m.group(2)
                checked += 1
                if check(selector, where):
                    values = prom.api(f"label/{label}/values", **{"match[]": selector},
                                      start=began, end=ended)
                    if not values.get("data"):
                        problems.append(f"{where}: {query}: no values during the run")
            for panel in panels(board):
                for target in panel.get("targets", []):
                    if not target.get("expr"):
                        continue
                    where = f"{title}, panel {panel.get('title')!r}"
                    expr = substitute(target["expr"], where)
                    checked += 1
                    if not check(expr, where):
                        continue
                    # What Grafana draws: a range query over the run must
                    # return data (catches label matchers nothing carries).
                    body = prom.api("query_range", query=expr, start=began, end=ended,
                                    step=1)
                    if body.get("status") != "success" or not any(
                            s.get("values") for s in body["data"]["result"]):
                        problems.append(f"{where}: {expr}: no data during the run "
                                        f"({body.get('error', 'empty result')})")

        rule_files = sorted(f for f in glob.glob(os.path.join(
            ARGS.source_dir, "deploy", "prometheus", "*.yaml")) if not f.endswith("_test.yaml"))
        self.assertTrue(rule_files)
        expected_rules = set()
        for path in rule_files:
            with open(path) as f:
                groups = yaml.safe_load(f)["groups"]
            for group in groups:
                for rule in group["rules"]:
                    name = rule.get("alert") or rule.get("record")
                    expected_rules.add(name)
                    checked += 1
                    check(rule["expr"], f"{os.path.basename(path)}, "
                          f"{'alert' if 'alert' in rule else 'record'} {name}")
        # Prometheus loaded those files and evaluates every rule without error.
        loaded = {}
        for group in prom.api("rules")["data"]["groups"]:
            for rule in group["rules"]:
                loaded[rule["name"]] = rule
        for name in sorted(expected_rules - set(loaded)):
            problems.append(f"rule {name}: not loaded by Prometheus")
        for name, rule in sorted(loaded.items()):
            if rule.get("health") not in ("ok", "unknown") or rule.get("lastError"):
                problems.append(f"rule {name}: {rule.get('query')}: "
                                f"{rule.get('health')}: {rule.get('lastError')}")

        if problems:
            self.fail(f"{len(problems)} problems in the {checked} dashboard and rule "
                      f"expressions, against a real Prometheus:\n" + "\n".join(problems))
        print(f"\n{checked} dashboard and rule expressions checked in "
              f"{time.time() - began:.0f}s", file=sys.stderr)


class MetricNamesTest(unittest.TestCase):
    """The metric-name extraction the end-to-end test relies on."""

    def test_names_not_functions_labels_keywords_or_durations(self):
        self.assertEqual(metric_names(
            'histogram_quantile(0.95, sum by (job, le) (rate(a_bucket{job=~"x|y"}[5m])))'
            ' / on (job) group_left(precision) b offset 1h and c_total > bool 1e3'
            ' unless absent(up{job="halftime-worker"} == 1) or {__name__="d"}'),
            {"a_bucket", "b", "c_total", "up", "d"})
        self.assertEqual(metric_names("sum(x) without(instance) * topk(10, y:rate5m)"),
                         {"x", "y:rate5m"})
        self.assertEqual(metric_names("max_over_time(z[1h:5m]) - time() + vector(1)"), {"z"})

    def test_selectors_with_matchers(self):
        self.assertEqual(selectors('sum(rate(a{job=~"x}|y",le!=""}[5m])) / b + c{}'
                                   ' and {__name__="d"}'),
                         ['a{job=~"x}|y",le!=""}', '{__name__="d"}'])


if __name__ == "__main__":
    ARGS, rest = cluster.main_args("tests/e2e/python-prometheus")
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
