#!/usr/bin/env bash
# Offline checks of the Helm chart, the kustomize overlays and the images'
# command lines (CTest runs each subcommand as one test; see CMakeLists.txt).
#
#   deploy_test.sh lint                    helm lint --strict, defaults + ci/*.yaml
#   deploy_test.sh render OUT              helm template (defaults, ci/*.yaml) and
#                                          kubectl kustomize (cpu, gpu, secure) into OUT
#   deploy_test.sh schemas OUT             every rendered object against the API schemas
#   deploy_test.sh ports OUT               ports, probes, paths, references agree
#   deploy_test.sh flags OUT NAME=BIN...   every --flag is in the binary's --help
#   deploy_test.sh dashboards              chart and kustomize dashboards == deploy/grafana/*.json
#
# Tools: .tools/bin/helm and .tools/node_modules (scripts/setup-deploy-tools.sh),
# kubectl and node on PATH. A missing tool skips the test (exit 77) with a message.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/tests/deploy"
chart="$root/helm/halftime"
modules="$root/.tools/node_modules"
helm="${HALFTIME_HELM:-$root/.tools/bin/helm}"
[ -x "$helm" ] || helm=$(command -v helm || true)

skip() { echo "SKIP: $*; run scripts/setup-deploy-tools.sh"; exit 77; }
need_helm() { [ -n "$helm" ] && [ -x "$helm" ] || skip "helm not found (.tools/bin/helm)"; }
need_kubectl() { command -v kubectl >/dev/null || skip "kubectl not found"; }
need_node() {
  command -v node >/dev/null || skip "node not found"
  [ -d "$modules/kubernetes-models" ] && [ -d "$modules/yaml" ] &&
    [ -d "$modules/@kubernetes-models/prometheus-operator" ] ||
    skip "kubernetes-models/yaml not installed in .tools/node_modules"
}
rendered() {
  local out=$1
  ls "$out"/*.yaml >/dev/null 2>&1 || { echo "nothing rendered in $out (deploy.Render failed?)"; exit 1; }
  ls "$out"/*.yaml
}
check() { node "$here/check_manifests.mjs" "$@"; }

cmd=${1:-}; shift || true
case "$cmd" in
  lint)
    need_helm
    "$helm" lint --strict "$chart"
    for values in "$chart"/ci/*.yaml; do
      "$helm" lint --strict "$chart" -f "$values"
    done
    ;;
  render)
    need_helm; need_kubectl
    out=$1
    rm -rf "$out" && mkdir -p "$out"
    "$helm" template halftime "$chart" -n halftime > "$out/helm-default.yaml"
    for values in "$chart"/ci/*.yaml; do
      "$helm" template halftime "$chart" -n halftime -f "$values" \
        > "$out/helm-ci-$(basename "$values")"
    done
    # As a user runs them (kubectl apply -k): no load-restrictor flag.
    for overlay in deploy/k8s/overlays/cpu deploy/k8s/overlays/gpu tests/deploy/kustomize/secure; do
      kubectl kustomize "$root/$overlay" \
        > "$out/kustomize-$(basename "$overlay").yaml"
    done
    for f in "$root"/deploy/k8s/secrets/*.yaml; do
      cp "$f" "$out/secret-$(basename "$f")"
    done
    # NOTES.txt renders for every values file and tells how to submit a job.
    notes=$(mktemp -d)
    trap 'rm -rf "$notes"' EXIT
    cp -r "$chart" "$notes/halftime"
    { echo '{{- define "halftime.notes.test" }}'; cat "$chart/templates/NOTES.txt"
      echo '{{- end }}'; echo 'notes: {{ include "halftime.notes.test" . | toJson }}'; } \
      > "$notes/halftime/templates/notes-test.yaml"
    for values in "" "$chart"/ci/*.yaml; do
      text=$("$helm" template halftime "$notes/halftime" -n halftime ${values:+-f "$values"} \
        --show-only templates/notes-test.yaml)
      for want in "port-forward" "submit" "HALFTIME_SERVER"; do
        grep -q -- "$want" <<<"$text" || { echo "NOTES.txt (${values:-defaults}) lacks '$want'"; exit 1; }
      done
    done
    ls -l "$out"
    ;;
  schemas)
    need_node
    # shellcheck disable=SC2046
    check schemas --modules "$modules" $(rendered "$1")
    ;;
  ports)
    need_node
    # shellcheck disable=SC2046
    check ports --modules "$modules" --repo "$root" $(rendered "$1")
    ;;
  flags)
    need_node
    out=$1; shift
    bins=()
    for b in "$@"; do bins+=(--bin "$b"); done
    # shellcheck disable=SC2046
    check flags --modules "$modules" --dockerfiles "$root/deploy/docker" "${bins[@]}" $(rendered "$out")
    ;;
  dashboards)
    # deploy/grafana/ is the source; Helm and kustomize each read a copy
    # inside their own root.
    status=0
    src=$(cd "$root/deploy/grafana" && ls *.json)
    for dir in helm/halftime/dashboards deploy/k8s/base/dashboards; do
      copy=$(cd "$root/$dir" && ls *.json)
      if [ "$src" != "$copy" ]; then
        echo "$dir/ holds [$copy], deploy/grafana/ holds [$src]"
        status=1
      fi
      for f in $src; do
        if ! cmp "$root/deploy/grafana/$f" "$root/$dir/$f"; then
          echo "$dir/$f differs from deploy/grafana/$f: cp deploy/grafana/$f $dir/"
          status=1
        fi
      done
    done
    [ $status -eq 0 ] && echo "dashboards: $(echo $src | wc -w) files, 2 copies, identical"
    exit $status
    ;;
  *)
    echo "usage: $0 lint|render OUT|schemas OUT|ports OUT|flags OUT NAME=BIN...|dashboards" >&2
    exit 2
    ;;
esac
