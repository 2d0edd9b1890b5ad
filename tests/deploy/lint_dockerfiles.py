"""Static checks of deploy/docker/*.Dockerfile (no container engine needed):
every RUN body parses as sh, COPY sources exist in the build context (the
repository root), the runtime (last) stage is debian:12-slim based, installs
no build tools, runs as uid 10001, has a HEALTHCHECK and an exec-form
ENTRYPOINT, and the helper scripts it copies parse."""
import glob
import json
import os
import re
import subprocess
import sys

BUILD_TOOLS = re.compile(r"\b(build-essential|cmake|ninja-build|g\+\+|gcc|clang|"
                         r"[a-z0-9+.-]+-dev|python3-venv|unzip)\b")


def instructions(text):
    """[(lineno, INSTRUCTION, args)] with continuations joined, comments dropped."""
    out, buf, start = [], "", 0
    for n, line in enumerate(text.splitlines(), 1):
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue  # Docker drops comment lines inside continuations
        if not buf:
            start = n
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((start, word.upper(), rest.strip()))
        buf = ""
    return out


def main(root):
    problems = []
    files = sorted(glob.glob(os.path.join(root, "deploy/docker/*.Dockerfile")))
    if not files:
        problems.append("no Dockerfiles in deploy/docker")
    for path in files:
        name = os.path.relpath(path, root)
        ins = instructions(open(path).read())
        args = {}
        stages = []
        for n, word, rest in ins:
            where = f"{name}:{n}"
            if word == "ARG":
                k, _, v = rest.partition("=")
                args.setdefault(k, v)
            elif word == "FROM":
                stages.append([])
            elif word == "RUN":
                r = subprocess.run(["sh", "-n", "-c", rest], capture_output=True, text=True)
                if r.returncode:
                    problems.append(f"{where}: RUN does not parse: {r.stderr.strip()}")
            elif word in ("COPY", "ADD") and "--from=" not in rest:
                srcs = rest.split()[:-1]
                for s in srcs:
                    if s.startswith("--"):
                        continue
                    if not glob.glob(os.path.join(root, s.rstrip("/")) or root):
                        problems.append(f"{where}: COPY source {s} not in the repository")
            if stages:
                stages[-1].append((n, word, rest))
        if len(stages) < 2:
            problems.append(f"{name}: not multi-stage")
            continue
        last = stages[-1]
        base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), last[0][2].split()[0])
        if base != "debian:12-slim":
            problems.append(f"{name}: runtime stage is {base}, not debian:12-slim")
        words = [w for _, w, _ in last]
        for want in ("USER", "HEALTHCHECK", "ENTRYPOINT", "STOPSIGNAL"):
            if want not in words:
                problems.append(f"{name}: runtime stage has no {want}")
        for n, word, rest in last:
            where = f"{name}:{n}"
            if word == "USER" and rest != "10001:10001":
                problems.append(f"{where}: USER {rest}, want 10001:10001")
            if word == "RUN" and "apt-get install" in rest:
                bad = sorted(set(m.group(0) for m in BUILD_TOOLS.finditer(rest)))
                if bad:
                    problems.append(f"{where}: runtime stage installs build tools {bad}")
                if "--no-install-recommends" not in rest:
                    problems.append(f"{where}: apt-get install without --no-install-recommends")
            if word in ("ENTRYPOINT", "CMD"):
                try:
                    json.loads(rest)
                except ValueError:
                    problems.append(f"{where}: {word} is not exec form (JSON array)")
            if word == "HEALTHCHECK" and "CMD" not in rest:
                problems.append(f"{where}: HEALTHCHECK without CMD")
    for script in glob.glob(os.path.join(root, "deploy/docker/*.sh")):
        shell = "bash" if open(script).readline().strip().endswith("bash") else "sh"
        r = subprocess.run([shell, "-n", script], capture_output=True, text=True)
        if r.returncode:
            problems.append(f"{os.path.relpath(script, root)}: {r.stderr.strip()}")
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"dockerfiles: ok ({len(files)} files)")


if __name__ == "__main__":
    main(sys.argv[1])
