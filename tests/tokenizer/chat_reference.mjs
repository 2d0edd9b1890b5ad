// Renders conversations with the official chat templates' Jinja text (the
// Jinja interpreter of transformers.js, in @lenml/tokenizers) and encodes
// each rendering with Hugging Face's tokenizers library (the
// @anush008/tokenizers bindings of the Rust crate), for
// chat_template_test.cc to compare RenderChat and EncodeSegments with.
//
//   node chat_reference.mjs NODE_MODULES CASES.json OUT.json
//
// CASES.json: [{"template": "llama3"|"chatml"|"mistral", "messages": [...],
// "add_generation_prompt": bool}, ...]. OUT.json: one entry per case, either
// {"text": rendered, "llama3": [ids], "qwen3": [ids]} (ids without the
// post-processor's special tokens) or {"error": the template's exception}.
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const [modules, casesPath, outPath] = process.argv.slice(2);
const require = createRequire(join(modules, 'noop.js'));
const { TokenizerLoader } = require('@lenml/tokenizers');
const { Tokenizer } = require('@anush008/tokenizers');

// The template texts, as published (see tokenizer/chat_template.h).
const TEMPLATES = {
  // Meta-Llama-3-8B-Instruct, with the generation prompt behind
  // add_generation_prompt.
  llama3: "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
  // ChatML, as in the transformers chat-templating documentation.
  chatml: "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
  // Mistral 7B Instruct v0.1/v0.2, as first published.
  mistral: "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}",
};
const SPECIAL = {
  llama3: { bos_token: '<|begin_of_text|>', eos_token: '<|eot_id|>' },
  chatml: { bos_token: '', eos_token: '<|im_end|>' },
  mistral: { bos_token: '<s>', eos_token: '</s>' },
};

const lenml = (name) => join(modules, '@lenml', `tokenizer-${name}`, 'models');
const readJson = (path) => JSON.parse(readFileSync(path, 'utf8'));
// Any tokenizer of the library renders any template given to it.
const renderer = TokenizerLoader.fromPreTrained({
  tokenizerJSON: readJson(join(lenml('llama3'), 'tokenizer.json')),
  tokenizerConfig: readJson(join(lenml('llama3'), 'tokenizer_config.json')),
});
const hf = {
  llama3: Tokenizer.fromFile(join(lenml('llama3'), 'tokenizer.json')),
  qwen3: Tokenizer.fromFile(join(lenml('qwen3'), 'tokenizer.json')),
};

const out = [];
for (const c of readJson(casesPath)) {
  let messages = c.messages;
  // The first-published Mistral template refuses a system message;
  // chat_template.h prepends it to the first user message, followed by
  // "\n\n", as Mistral's later template and mistral_common do.
  if (c.template === 'mistral' && messages.length > 1 &&
      messages[0].role === 'system' && messages[1].role === 'user') {
    messages = [{ role: 'user',
      content: messages[0].content + '\n\n' + messages[1].content },
    ...messages.slice(2)];
  }
  let text;
  try {
    text = renderer.apply_chat_template(messages, {
      tokenize: false,
      chat_template: TEMPLATES[c.template],
      add_generation_prompt: c.add_generation_prompt,
      ...SPECIAL[c.template],
    });
  } catch (e) {
    out.push({ error: String(e.message) });
    continue;
  }
  const entry = { text };
  for (const [name, tokenizer] of Object.entries(hf)) {
    const encoding = await tokenizer.encode(text, null,
        { addSpecialTokens: false });
    entry[name] = Array.from(encoding.getIds());
  }
  out.push(entry);
}
writeFileSync(outPath, JSON.stringify(out));
