"""Checks the Grafana dashboards: valid JSON with unique panel ids, every
panel on the Prometheus data-source variable, and every PromQL expression
parsed by promtool (as recording rules), using only metric names Halftime
exports (or Prometheus' own `up`)."""
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

KNOWN = {
    "up",
    "halftime_train_loss", "halftime_train_loss_scale",
    "halftime_train_overflow_steps_total", "halftime_train_steps_total",
    "halftime_train_tokens_per_second", "halftime_train_samples_per_second",
    "halftime_train_step_duration_seconds_bucket",
    "halftime_train_peak_memory_bytes", "halftime_train_grad_norm",
    "halftime_jobs", "halftime_jobs_submitted_total",
    "halftime_job_queue_wait_seconds_bucket", "halftime_job_queue_wait_seconds_count",
    "halftime_workers", "halftime_savings_device_seconds_total",
    "halftime_savings_memory_bytes", "halftime_savings_cost_total",
    "halftime_worker_slots", "halftime_worker_device_memory_bytes",
    "halftime_jobs_unplaceable",
    "halftime_savings_emulated_jobs_total",
    "halftime_savings_emulated_memory_bytes",
    "halftime_savings_adapter_memory_bytes",
    "halftime_savings_adapter_vs_full_finetune_estimated_bytes",
    "halftime_train_parameters", "halftime_train_trainable_parameters",
}


def main(promtool, directory):
    exprs = []
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        with open(path) as f:
            board = json.load(f)
        assert board.get("uid") and board.get("title"), path
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{path}: duplicate panel ids"
        for p in board["panels"]:
            assert p["datasource"]["uid"] == "${datasource}", (path, p["title"])
            assert p["targets"], (path, p["title"])
            for t in p["targets"]:
                exprs.append((path, p["title"], t["expr"]))
    assert len(exprs) >= 15, "expected the three dashboards' panels"
    problems = []
    for path, title, expr in exprs:
        for name in re.findall(r"\b(halftime_[a-z_]+|up)\b(?=\s*[{\[(]|\s*\)|\s*$|\s*[/*+-])", expr):
            if name not in KNOWN:
                problems.append(f"{path}: {title}: unknown metric {name}")
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:expr{i}", "expr": e.replace("$job", ".*")}
        for i, (_, _, e) in enumerate(exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        json.dump(rules, f)
    result = subprocess.run([promtool, "check", "rules", f.name],
                            capture_output=True, text=True)
    os.unlink(f.name)
    if result.returncode != 0:
        problems.append(result.stdout + result.stderr)
    if problems:
        print("\n".join(problems))
        return 1
    print(f"{len(exprs)} dashboard expressions parse and use known metrics")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
