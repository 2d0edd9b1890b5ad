// Writes the tokenizer test corpus: a JSON array of text chunks, about
// 1.2 MB in all, the same on every run (a seeded generator). The text mixes
// English-like prose, code, numbers, whitespace runs (tabs, newlines,
// several spaces, no-break and ideographic spaces), CJK, emoji, accented
// letters in NFC and NFD, contractions ("'s", "'LL") and special tokens
// written into the text.
//
//   node make_corpus.mjs OUT.json [BYTES]
import { writeFileSync } from 'node:fs';

let state = 0x9e3779b9;
// mulberry32: small, fast and the same everywhere.
function random() {
  state = (state + 0x6d2b79f5) | 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (list) => list[Math.floor(random() * list.length)];
const chance = (p) => random() < p;

const words = (
  'the of and to in is was he for it with as his on be at by had are but ' +
  'from or have an they which one you were all we her she there would ' +
  'their will when who him been has more if no out do so can what up said ' +
  'about other into than its time only could new them man some these then ' +
  'two first may any like now my such make over our even most me state ' +
  'after also made many did must before back see through way where get ' +
  'much go well your know should down work year because come people just ' +
  'tokenizer encoding merges vocabulary gradient training scheduler worker ' +
  'checkpoint throughput latency kilobyte transformer embedding attention ' +
  'internationalization antidisestablishmentarianism pneumonoultramicro ' +
  'supercalifragilistic Halftime PyTorch GPU CPU HTTP JSON URL API iPhone ' +
  'McDonald O\'Brien re-enter co-operate e-mail well-known state-of-the-art')
  .split(' ');
const contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL",
  "'Re", "'VE", "'M", "'D", "n't", "N'T", "'T"];
const punctuation = ['.', ',', ';', ':', '!', '?', '...', ' -', ' —', '"',
  '(', ')', '[', ']', '/', '\\', '&', '%', '$', '#', '@', '*', '~', '`',
  '«', '»', '“', '”', '‘', '’', '¿', '¡', '•', '…'];
const whitespace = ['  ', '   ', '\t', '\t\t', '\n', '\n\n', '\n\n\n', ' \n',
  '\n ', '\r\n', ' \t ', '    ', '        ', '\u00a0', '\u3000', '\u2009',
  ' \u00a0 ', '\n\t\t', '  \n  \n'];
const cjk = ['中文的分词测试', '今天天气很好，我们去公园散步吧。', '日本語のテキスト',
  'ひらがなとカタカナ', '한국어 문장입니다', '東京都渋谷区', '机器学习模型训练',
  '你好，世界！', '漢字かな交じり文', '上海浦东新区'];
const emoji = ['😀', '🎉', '👍🏽', '👨‍👩‍👧', '🇫🇷', '❤️', '🚀', '🤖', '✨', '🔥🔥',
  '🧑🏿‍💻', '☕', '🍣🍜', '⭐️'];
// Accented words, each in NFC and in NFD.
const accentedNfc = ['café', 'naïve', 'résumé', 'Ångström', 'Straße', 'Tiếng Việt',
  'façade', 'São Paulo', 'Zürich', 'El Niño', 'crème brûlée', 'Ελληνικά',
  'Привет мир', 'Dvořák', 'Łódź', 'हिन्दी', 'العربية', 'עִבְרִית', 'ﬁne', 'Ⅻ'];
const accented = accentedNfc.concat(accentedNfc.map((w) => w.normalize('NFD')));
const specials = ['<|endoftext|>', '<|im_start|>', '<|im_end|>',
  '<|begin_of_text|>', '<|end_of_text|>', '<|eot_id|>',
  '<|start_header_id|>', '<|end_header_id|>', '<think>', '</think>',
  '<tool_call>', '<|endofprompt|>', '<|fim_prefix|>', '<|mask|>', '[[sw]]',
  '<|endoftext', '|>', '<|im_start|', '<|', '<|reserved_special_token_5|>'];
const code = [
  'def encode(self, text: str) -> list[int]:\n    return [self.vocab[t] for t in text.split()]\n',
  'for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n',
  'if x != None and len(xs) >= 10:\n        print(f"{x!r} {len(xs):>5d}")\n',
  'const total = items.reduce((acc, it) => acc + it.price * 1.2, 0);\n',
  '#include <vector>\nstd::vector<int32_t> ids;  // 0x7fff\n',
  'SELECT id, name FROM users WHERE age > 30 ORDER BY name DESC;\n',
  '{"key": [1, 2.5, -3e10, true, null], "nested": {"a": "b\\n"}}\n',
  '$ ls -la /usr/local/bin | grep -E "^-rwx" && echo done\n',
  '    \t  mixed_indent = {\n\t    "tab": True,\n    }\n',
  'https://example.com/path?q=hello+world&lang=en#frag\n',
  'x<<=2; y>>=3; z=a&&b||!c; w = p->q.r[0];\n',
  '<html><body><p class="x">Hello &amp; bye</p></body></html>\n',
];

function number() {
  switch (Math.floor(random() * 7)) {
    case 0: return String(Math.floor(random() * 10));
    case 1: return String(Math.floor(random() * 100000));
    case 2: return String(Math.floor(random() * 1e12));
    case 3: return (random() * 1000).toFixed(Math.floor(random() * 5));
    case 4: return Math.floor(random() * 1e7).toLocaleString('en-US');
    case 5: return '١٢٣٤' + String(Math.floor(random() * 100));
    default: return '20' + String(10 + Math.floor(random() * 90)) + '-0' +
        String(1 + Math.floor(random() * 9));
  }
}

function word() {
  let w = pick(words);
  const r = random();
  if (r < 0.08) w = w[0].toUpperCase() + w.slice(1);
  else if (r < 0.11) w = w.toUpperCase();
  if (chance(0.06)) w += pick(contractions);
  return w;
}

function sentence() {
  const parts = [];
  const length = 4 + Math.floor(random() * 18);
  for (let i = 0; i < length; ++i) {
    const r = random();
    let piece;
    if (r < 0.72) piece = word();
    else if (r < 0.78) piece = number();
    else if (r < 0.82) piece = pick(accented);
    else if (r < 0.85) piece = pick(cjk);
    else if (r < 0.87) piece = pick(emoji);
    else if (r < 0.89) piece = pick(specials);
    else piece = pick(punctuation);
    parts.push(piece);
    if (i + 1 < length) {
      parts.push(chance(0.1) ? pick(whitespace) : chance(0.05) ? '' : ' ');
    }
  }
  let s = parts.join('');
  s = s[0].toUpperCase() + s.slice(1);
  return s + pick(['.', '.', '.', '!', '?', ':', '', '...']);
}

function chunk() {
  const r = random();
  if (r < 0.1) return pick(code) + (chance(0.5) ? pick(code) : '');
  if (r < 0.13) return pick(cjk) + pick(cjk) + pick(emoji) + pick(cjk);
  if (r < 0.15) return pick(whitespace) + pick(whitespace) + word() + pick(whitespace);
  const sentences = [];
  const count = 1 + Math.floor(random() * 8);
  for (let i = 0; i < count; ++i) {
    sentences.push(sentence());
    if (i + 1 < count) sentences.push(chance(0.2) ? pick(whitespace) : ' ');
  }
  if (chance(0.2)) sentences.push(pick(['\n', '\n\n', '  ', ' ', '\t']));
  return sentences.join('');
}

export function makeCorpus(bytes = 1200000) {
  const chunks = [];
  let total = 0;
  while (total < bytes) {
    const c = chunk();
    chunks.push(c);
    total += Buffer.byteLength(c, 'utf8');
  }
  return chunks;
}

if (process.argv[2]) {
  const bytes = process.argv[3] ? Number(process.argv[3]) : undefined;
  writeFileSync(process.argv[2], JSON.stringify(makeCorpus(bytes)));
}
