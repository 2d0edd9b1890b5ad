// Checks rendered Kubernetes manifests (helm template / kubectl kustomize
// output, one or more multi-document YAML files).
//
//   node check_manifests.mjs schemas --modules DIR FILE...
//       every object validates against the Kubernetes API schema of its kind
//       (kubernetes-models, @kubernetes-models/prometheus-operator); a kind
//       with no schema is an error.
//   node check_manifests.mjs ports --repo DIR FILE...
//       ports, probes, flags' addresses, writable paths, security context and
//       references between objects (Services, monitors, NetworkPolicies,
//       dashboards) agree with each other.
//   node check_manifests.mjs flags --bin NAME=PATH... [--dockerfiles DIR] FILE...
//       every --flag a container (or a Dockerfile's ENTRYPOINT/CMD) passes to
//       the binary NAME appears in `PATH --help`.
//
// --modules DIR is the node_modules folder holding `yaml` and the models
// (.tools/node_modules); ESM imports do not honour NODE_PATH.
// Exit status: 0 all good, 1 problems (one line each on stderr), 2 bad usage.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const problems = [];
const problem = (where, text) => problems.push(`${where}: ${text}`);

function usage(text) {
  console.error(`check_manifests: ${text}`);
  process.exit(2);
}

const argv = process.argv.slice(2);
const mode = argv.shift();
const opts = { bins: {}, files: [] };
while (argv.length) {
  const a = argv.shift();
  if (a === "--modules") opts.modules = argv.shift();
  else if (a === "--repo") opts.repo = argv.shift();
  else if (a === "--dockerfiles") opts.dockerfiles = argv.shift();
  else if (a === "--bin") {
    const [name, ...rest] = argv.shift().split("=");
    opts.bins[name] = rest.join("=");
  } else if (a.startsWith("--")) usage(`unknown option ${a}`);
  else opts.files.push(a);
}
if (!["schemas", "ports", "flags"].includes(mode)) {
  usage("mode must be schemas, ports or flags");
}
if (!opts.modules) usage("--modules DIR is required");
if (opts.files.length === 0) usage("no manifest files");

const modules = path.resolve(opts.modules);
const importFrom = (rel) => import(pathToFileURL(path.join(modules, rel)).href);
const YAML = await importFrom("yaml/dist/index.js");

// ---------------------------------------------------------------- loading
// Each render: { file, objects: [{obj, where}] }.
const renders = [];
for (const file of opts.files) {
  const text = fs.readFileSync(file, "utf8");
  const docs = YAML.parseAllDocuments(text);
  const objects = [];
  docs.forEach((doc, i) => {
    for (const e of doc.errors) problem(`${file}#${i}`, `YAML: ${e.message.split("\n")[0]}`);
    const obj = doc.toJS({ maxAliasCount: 100 });
    if (obj == null) return;
    const kind = obj.kind ?? "?";
    const name = obj.metadata?.name ?? "?";
    objects.push({ obj, where: `${path.basename(file)}: ${kind}/${name}` });
  });
  if (objects.length === 0) problem(file, "no objects rendered");
  renders.push({ file, objects });
}

// ---------------------------------------------------------------- schemas
async function schemaClass(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/")
    ? apiVersion.split("/")
    : ["", apiVersion];
  const candidates =
    group === "monitoring.coreos.com"
      ? [`@kubernetes-models/prometheus-operator/${group}/${version}/${kind}.js`]
      : [`kubernetes-models/${group ? group + "/" : ""}${version}/${kind}.js`];
  for (const rel of candidates) {
    if (!fs.existsSync(path.join(modules, rel))) continue;
    const mod = await importFrom(rel);
    if (typeof mod[kind] === "function") return mod[kind];
  }
  return null;
}

async function checkSchemas() {
  let count = 0;
  for (const { objects } of renders) {
    const seen = new Set();
    for (const { obj, where } of objects) {
      count++;
      if (typeof obj !== "object" || Array.isArray(obj)) {
        problem(where, "not a mapping");
        continue;
      }
      if (!obj.apiVersion || !obj.kind) {
        problem(where, "apiVersion and kind are required");
        continue;
      }
      if (!obj.metadata?.name) problem(where, "metadata.name is required");
      const key = `${obj.apiVersion}/${obj.kind}/${obj.metadata?.namespace ?? ""}/${obj.metadata?.name}`;
      if (seen.has(key)) problem(where, "rendered twice");
      seen.add(key);
      const Model = await schemaClass(obj.apiVersion, obj.kind);
      if (!Model) {
        problem(where, `no schema for ${obj.apiVersion} ${obj.kind} (unknown kind)`);
        continue;
      }
      try {
        new Model(obj).validate();
      } catch (e) {
        const lines = String(e.message ?? e).split(/\n|, (?=data)/);
        for (const l of lines) problem(where, l.trim());
      }
    }
  }
  return count;
}

// ---------------------------------------------------------------- helpers
const WORKLOADS = new Set(["Deployment", "StatefulSet", "DaemonSet"]);

function podSpecOf(obj) {
  if (WORKLOADS.has(obj.kind)) return obj.spec?.template?.spec;
  if (obj.kind === "Pod") return obj.spec;
  return undefined;
}
function podLabelsOf(obj) {
  return obj.kind === "Pod" ? obj.metadata?.labels ?? {} : obj.spec?.template?.metadata?.labels ?? {};
}
function matches(selector, labels) {
  if (!selector) return false;
  const ml = selector.matchLabels ?? selector;
  return Object.entries(ml).every(([k, v]) => labels?.[k] === v);
}
function binaryOf(container) {
  const cmd = container.command ?? [];
  return cmd.length ? path.basename(cmd[0]) : undefined;
}
// Args as [{name, value}]: "--flag=value" or "--flag value".
function parseFlags(args) {
  const out = [];
  for (let i = 0; i < args.length; i++) {
    const a = String(args[i]);
    if (!a.startsWith("--")) continue;
    const eq = a.indexOf("=");
    if (eq > 0) out.push({ name: a.slice(0, eq), value: a.slice(eq + 1) });
    else if (i + 1 < args.length && !String(args[i + 1]).startsWith("--")) {
      out.push({ name: a, value: String(args[++i]) });
    } else out.push({ name: a, value: undefined });
  }
  return out;
}
const flagValue = (flags, name) => flags.find((f) => f.name === name)?.value;
function portOf(address) {
  const m = /:(\d+)$/.exec(address ?? "");
  return m ? Number(m[1]) : undefined;
}
function hostOf(address) {
  return (address ?? "").replace(/:(\d+)$/, "");
}
function containerPort(container, name) {
  return (container.ports ?? []).find((p) => p.name === name)?.containerPort;
}
// The volume mount holding PATH (longest mountPath prefix).
function mountFor(container, p) {
  let best;
  for (const m of container.volumeMounts ?? []) {
    const mp = m.mountPath.replace(/\/$/, "");
    if (p === mp || p.startsWith(mp + "/")) {
      if (!best || mp.length > best.mountPath.length) best = m;
    }
  }
  return best;
}
function probePort(probe, container) {
  const h = probe.grpc ?? probe.tcpSocket ?? probe.httpGet;
  if (!h) return undefined;
  return typeof h.port === "string" ? containerPort(container, h.port) : h.port;
}

// ---------------------------------------------------------------- ports
function checkPorts() {
  for (const { file, objects } of renders) {
    const byKind = (k) => objects.filter(({ obj }) => obj.kind === k);
    const pods = objects.filter(({ obj }) => podSpecOf(obj));
    const services = byKind("Service");
    let schedulers = 0;
    let workers = 0;

    for (const { obj, where } of pods) {
      const spec = podSpecOf(obj);
      const volumes = Object.fromEntries((spec.volumes ?? []).map((v) => [v.name, v]));
      const claimNames = new Set((obj.spec?.volumeClaimTemplates ?? []).map((c) => c.metadata?.name));
      const psc = spec.securityContext ?? {};
      for (const c of [...(spec.initContainers ?? []), ...(spec.containers ?? [])]) {
        const at = `${where} container ${c.name}`;
        // Security context: what the restricted Pod Security Standard asks.
        const sc = c.securityContext ?? {};
        if (!(sc.runAsNonRoot ?? psc.runAsNonRoot)) problem(at, "runAsNonRoot is not true");
        if (sc.readOnlyRootFilesystem !== true) problem(at, "readOnlyRootFilesystem is not true");
        if (sc.allowPrivilegeEscalation !== false) problem(at, "allowPrivilegeEscalation is not false");
        if (!(sc.capabilities?.drop ?? []).includes("ALL")) problem(at, "capabilities.drop lacks ALL");
        if ((sc.seccompProfile ?? psc.seccompProfile)?.type !== "RuntimeDefault") {
          problem(at, "seccompProfile is not RuntimeDefault");
        }
        for (const r of ["cpu", "memory"]) {
          if (!c.resources?.requests?.[r]) problem(at, `no ${r} request`);
          if (!c.resources?.limits?.[r]) problem(at, `no ${r} limit`);
        }
        for (const m of c.volumeMounts ?? []) {
          if (!volumes[m.name] && !claimNames.has(m.name)) {
            problem(at, `volumeMount ${m.name} has no volume`);
          }
        }
        const bin = binaryOf(c);
        if (!bin) {
          problem(at, "no command: name the binary explicitly (the flags test relies on it)");
          continue;
        }
        const flags = parseFlags([...(c.command ?? []).slice(1), ...(c.args ?? [])]);
        const writable = (flag, wantClaim) => {
          const p = flagValue(flags, flag);
          if (p === undefined) return;
          const m = mountFor(c, p);
          if (!m) return problem(at, `${flag}=${p} is not on a volume (the root filesystem is read-only)`);
          if (m.readOnly) return problem(at, `${flag}=${p} is on read-only mount ${m.name}`);
          if (wantClaim && !claimNames.has(m.name) && !volumes[m.name]?.persistentVolumeClaim) {
            problem(at, `${flag}=${p} is on ${m.name}, not a PersistentVolumeClaim`);
          }
        };
        const readable = (flag) => {
          const p = flagValue(flags, flag);
          if (p !== undefined && !mountFor(c, p)) problem(at, `${flag}=${p} is not on a mounted volume`);
        };
        const probes = ["startupProbe", "readinessProbe", "livenessProbe"];
        for (const pr of probes) if (!c[pr]) problem(at, `no ${pr}`);

        if (bin === "halftime-scheduler") {
          schedulers++;
          const listen = flagValue(flags, "--listen");
          const metrics = flagValue(flags, "--metrics");
          const grpc = containerPort(c, "grpc");
          if (!listen) problem(at, "no --listen (the default 127.0.0.1 is unreachable from other pods)");
          else if (["127.0.0.1", "localhost"].includes(hostOf(listen))) problem(at, `--listen=${listen} is loopback`);
          if (grpc === undefined) problem(at, "no container port named grpc");
          else if (portOf(listen) !== grpc) problem(at, `--listen=${listen} but port grpc is ${grpc}`);
          if (!metrics) problem(at, "no --metrics");
          else if (["127.0.0.1", "localhost"].includes(hostOf(metrics))) problem(at, `--metrics=${metrics} is loopback`);
          if (portOf(metrics) !== containerPort(c, "metrics")) {
            problem(at, `--metrics=${metrics} but port metrics is ${containerPort(c, "metrics")}`);
          }
          const tls = flagValue(flags, "--tls-cert") !== undefined;
          for (const pr of probes) {
            const probe = c[pr];
            if (!probe) continue;
            // The health service is served on the gRPC port. The kubelet's
            // gRPC probe speaks plaintext only, so with TLS a TCP check of
            // that port is the most it can do.
            if (probe.grpc) {
              if (tls) problem(at, `${pr}: gRPC probe cannot reach a TLS port`);
              if (probe.grpc.service) problem(at, `${pr}: the scheduler serves the overall ("") health status only`);
            } else if (!(tls && probe.tcpSocket)) {
              problem(at, `${pr}: must be a grpc probe (tcpSocket only with TLS)`);
            }
            if (probePort(probe, c) !== grpc) problem(at, `${pr}: port is not the gRPC port ${grpc}`);
          }
          if (!flagValue(flags, "--data-dir")) problem(at, "no --data-dir");
          writable("--data-dir", true);
          readable("--token-file");
          for (const f of ["--tls-cert", "--tls-key", "--tls-ca"]) readable(f);
          if (obj.kind !== "StatefulSet") problem(where, "the scheduler should be a StatefulSet");
          if ((obj.spec?.replicas ?? 1) !== 1) problem(where, "the scheduler must have exactly 1 replica");
        } else if (bin === "halftime-worker") {
          workers++;
          const metrics = flagValue(flags, "--metrics");
          if (!metrics) problem(at, "no --metrics (the default 127.0.0.1 is unreachable from Prometheus)");
          else if (["127.0.0.1", "localhost"].includes(hostOf(metrics))) problem(at, `--metrics=${metrics} is loopback`);
          const mport = containerPort(c, "metrics");
          if (portOf(metrics) !== mport) problem(at, `--metrics=${metrics} but port metrics is ${mport}`);
          for (const pr of probes) {
            const probe = c[pr];
            if (!probe) continue;
            if (probe.httpGet?.path !== "/metrics") problem(at, `${pr}: must be httpGet /metrics`);
            if (probePort(probe, c) !== mport) problem(at, `${pr}: port is not the metrics port ${mport}`);
          }
          const sched = flagValue(flags, "--scheduler");
          if (!sched) problem(at, "no --scheduler");
          else {
            const host = hostOf(sched).split(".")[0];
            const svc = services.find(({ obj: s }) => s.metadata?.name === host);
            if (!svc) problem(at, `--scheduler=${sched}: no Service ${host} in this render`);
            else {
              const p = (svc.obj.spec?.ports ?? []).find((sp) => sp.name === "grpc");
              if (!p) problem(at, `--scheduler=${sched}: Service ${host} has no port grpc`);
              else if (p.port !== portOf(sched)) problem(at, `--scheduler=${sched}: Service ${host} port grpc is ${p.port}`);
            }
          }
          if (!flagValue(flags, "--name")) problem(at, "no --name (use the pod or node name)");
          writable("--work-dir", false);
          writable("--out-root", false);
          readable("--data-root");
          readable("--token-file");
          for (const f of ["--tls-cert", "--tls-key", "--tls-ca"]) readable(f);
          const grace = Number(flagValue(flags, "--stop-grace") ?? 30);
          const period = spec.terminationGracePeriodSeconds ?? 30;
          if (period < grace + 30) {
            problem(at, `terminationGracePeriodSeconds ${period} leaves under 30 s after --stop-grace=${grace} to upload checkpoints`);
          }
        }
      }
    }
    if (schedulers === 0 && workers === 0) continue; // e.g. secret templates
    if (schedulers !== 1) problem(file, `${schedulers} scheduler containers, want 1`);

    // Services: selectors select pods; target ports exist on those pods.
    const podsSelected = (selector) => pods.filter(({ obj }) => matches(selector, podLabelsOf(obj)));
    for (const { obj: s, where } of services) {
      const sel = podsSelected(s.spec?.selector);
      if (sel.length === 0) {
        problem(where, "selects no pods");
        continue;
      }
      for (const p of s.spec?.ports ?? []) {
        const tp = p.targetPort ?? p.port;
        const ok = sel.every(({ obj }) => podSpecOf(obj).containers.some((c) =>
          (c.ports ?? []).some((cp) => (typeof tp === "string" ? cp.name === tp : cp.containerPort === tp))));
        if (!ok) problem(where, `port ${p.name}: targetPort ${tp} is not a port of the selected pods`);
      }
    }
    // ServiceMonitors: a selected Service has the endpoint port.
    for (const { obj: m, where } of byKind("ServiceMonitor")) {
      const sel = services.filter(({ obj: s }) => matches(m.spec?.selector, s.metadata?.labels));
      if (sel.length === 0) problem(where, "selects no Service");
      for (const e of m.spec?.endpoints ?? []) {
        if (!sel.some(({ obj: s }) => (s.spec?.ports ?? []).some((p) => p.name === e.port))) {
          problem(where, `endpoint port ${e.port} is on no selected Service`);
        }
      }
      if (!JSON.stringify(m.spec?.endpoints ?? []).includes('"replacement":"halftime-scheduler"')) {
        problem(where, "job label must be halftime-scheduler (deploy/prometheus/alerts.yaml)");
      }
    }
    for (const { obj: m, where } of byKind("PodMonitor")) {
      const sel = pods.filter(({ obj }) => matches(m.spec?.selector, podLabelsOf(obj)));
      if (sel.length === 0) problem(where, "selects no pods");
      for (const e of m.spec?.podMetricsEndpoints ?? []) {
        if (!sel.some(({ obj }) => podSpecOf(obj).containers.some((c) => containerPort(c, e.port)))) {
          problem(where, `endpoint port ${e.port} is on no selected pod`);
        }
        if (e.honorLabels !== true) problem(where, "honorLabels must be true (workers label series with the training job)");
      }
      if (!JSON.stringify(m.spec?.podMetricsEndpoints ?? []).includes('"replacement":"halftime-worker"')) {
        problem(where, "job label must be halftime-worker (deploy/prometheus/alerts.yaml)");
      }
    }
    // NetworkPolicies: select pods; named ports exist on them.
    for (const { obj: np, where } of byKind("NetworkPolicy")) {
      const sel = pods.filter(({ obj }) => matches(np.spec?.podSelector, podLabelsOf(obj)));
      if (sel.length === 0) problem(where, "selects no pods");
      for (const rule of np.spec?.ingress ?? []) {
        for (const p of rule.ports ?? []) {
          if (typeof p.port !== "string") continue;
          if (!sel.every(({ obj }) => podSpecOf(obj).containers.some((c) => containerPort(c, p.port) !== undefined))) {
            problem(where, `port ${p.port} is not a port of the selected pods`);
          }
        }
      }
    }
    // PodDisruptionBudgets select pods.
    for (const { obj: pdb, where } of byKind("PodDisruptionBudget")) {
      if (!pods.some(({ obj }) => matches(pdb.spec?.selector, podLabelsOf(obj)))) problem(where, "selects no pods");
    }
    // Dashboards: byte-identical to deploy/grafana/*.json.
    if (opts.repo) {
      for (const { obj: cm, where } of byKind("ConfigMap")) {
        if (cm.metadata?.labels?.grafana_dashboard !== "1") continue;
        for (const [key, value] of Object.entries(cm.data ?? {})) {
          const file = path.join(opts.repo, "deploy/grafana", key);
          if (!fs.existsSync(file)) problem(where, `${key}: no deploy/grafana/${key}`);
          else if (fs.readFileSync(file, "utf8") !== value) problem(where, `${key} differs from deploy/grafana/${key}`);
        }
      }
    }
  }
}

// ---------------------------------------------------------------- flags
function helpFlags(bin) {
  let out;
  try {
    out = execFileSync(bin, ["--help"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 20000 });
  } catch (e) {
    out = `${e.stdout ?? ""}${e.stderr ?? ""}`;
    if (!out) usage(`${bin} --help: ${e.message}`);
  }
  return new Set(out.match(/--[A-Za-z0-9][A-Za-z0-9-]*/g) ?? []);
}

function dockerfileUses(dir) {
  // [{where, bin, args}] from ENTRYPOINT/CMD exec-form arrays.
  const out = [];
  for (const f of fs.readdirSync(dir).filter((n) => n.endsWith(".Dockerfile")).sort()) {
    const text = fs.readFileSync(path.join(dir, f), "utf8").replace(/\\\n/g, " ");
    // Only the last stage runs.
    const last = text.split(/^FROM\s/m).pop();
    const arr = (ins) => {
      const m = new RegExp(`^${ins}\\s+(\\[.*\\])\\s*$`, "m").exec(last);
      return m ? JSON.parse(m[1]) : undefined;
    };
    const entry = arr("ENTRYPOINT");
    const cmd = arr("CMD") ?? [];
    if (!entry) {
      problem(f, "no exec-form ENTRYPOINT");
      continue;
    }
    out.push({ where: f, bin: path.basename(entry[0]), args: [...entry.slice(1), ...cmd] });
  }
  return out;
}

function checkFlags() {
  const known = Object.fromEntries(Object.entries(opts.bins).map(([n, p]) => [n, helpFlags(p)]));
  const uses = [];
  for (const { objects } of renders) {
    for (const { obj, where } of objects) {
      const spec = podSpecOf(obj);
      if (!spec) continue;
      for (const c of [...(spec.initContainers ?? []), ...(spec.containers ?? [])]) {
        uses.push({ where: `${where} container ${c.name}`, bin: binaryOf(c), args: [...(c.command ?? []).slice(1), ...(c.args ?? [])] });
      }
    }
  }
  if (opts.dockerfiles) uses.push(...dockerfileUses(opts.dockerfiles));
  let checked = 0;
  for (const { where, bin, args } of uses) {
    if (!known[bin]) continue;
    checked++;
    for (const { name } of parseFlags(args)) {
      if (!known[bin].has(name)) problem(where, `${bin} has no flag ${name} (not in its --help)`);
    }
  }
  return checked;
}

// ---------------------------------------------------------------- main
let summary;
if (mode === "schemas") summary = `${await checkSchemas()} objects`;
else if (mode === "ports") {
  checkPorts();
  summary = `${renders.length} renders`;
} else summary = `${checkFlags()} command lines against ${Object.keys(opts.bins).join(", ")}`;

for (const p of problems) console.error(p);
if (problems.length) {
  console.error(`check_manifests ${mode}: ${problems.length} problem(s)`);
  process.exit(1);
}
console.log(`check_manifests ${mode}: ok (${summary}, ${opts.files.length} files)`);
