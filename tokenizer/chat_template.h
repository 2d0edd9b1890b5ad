// Chat templates for instruction data: a conversation (system, user and
// assistant messages) rendered as the text a model's official Jinja chat
// template writes, cut into pieces that say which text the loss trains on.
// No Jinja engine: each supported template is written out in C++ and the
// tests compare it with the template text run through a Jinja interpreter.
//
// The templates, and the version of each that is followed:
//
//  kLlama3   Meta Llama 3 Instruct (Meta-Llama-3-8B-Instruct's
//            tokenizer_config.json, the form with `{% if
//            add_generation_prompt %}` around the closing header; the 3.0
//            form, without Llama 3.1's "Cutting Knowledge Date" system
//            header):
//              {% set loop_messages = messages %}{% for message in
//              loop_messages %}{% set content = '<|start_header_id|>' +
//              message['role'] + '<|end_header_id|>\n\n'+ message['content']
//              | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set
//              content = bos_token + content %}{% endif %}{{ content }}{%
//              endfor %}{% if add_generation_prompt %}{{
//              '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif
//              %}
//            with bos_token "<|begin_of_text|>". `trim` is Python's
//            str.strip(): Unicode whitespace as Python's str.isspace() has
//            it, from both ends of the content only.
//
//  kChatml   Plain ChatML, as in the transformers chat-templating docs:
//              {% for message in messages %}{{'<|im_start|>' +
//              message['role'] + '\n' + message['content'] + '<|im_end|>' +
//              '\n'}}{% endfor %}{% if add_generation_prompt %}{{
//              '<|im_start|>assistant\n' }}{% endif %}
//            No BOS and no default system message: Qwen2/Qwen2.5's own
//            templates add "You are Qwen, created by Alibaba Cloud. You are
//            a helpful assistant." when the conversation has no system
//            message, and Qwen3's adds <think> blocks; neither is done here.
//            With a system message first, the output equals Qwen2.5's
//            template (without tools).
//
//  kMistral  Mistral 7B Instruct v0.1/v0.2 (and Mixtral 8x7B Instruct v0.1)
//            as first published in their tokenizer_config.json:
//              {{ bos_token }}{% for message in messages %}{% if
//              (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{
//              raise_exception('Conversation roles must alternate
//              user/assistant/user/assistant/...') }}{% endif %}{% if
//              message['role'] == 'user' %}{{ '[INST] ' + message['content'] +
//              ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{
//              message['content'] + eos_token}}{% else %}{{
//              raise_exception('Only user and assistant roles are
//              supported!') }}{% endif %}{% endfor %}
//            with bos_token "<s>" and eos_token "</s>". That template
//            refuses a system message; here an optional first system message
//            is accepted and written as Mistral's later template and
//            mistral_common do: prepended to the first user message,
//            followed by "\n\n" (system + "\n\n" + user). The later
//            template's other changes (" [INST] ", a space before the
//            answer) are not taken. The template has no generation prompt:
//            a conversation ending in a user message already ends with
//            " [/INST]".
//
// Roles: "system", "user" and "assistant" for every template (the Llama 3
// and ChatML templates would write any role; others are refused here as
// unknown, so that a typo does not become training data).
//
// What is trained (TextSegment::trained): the content of every assistant
// message, as the template writes it (trimmed for Llama 3), and the
// end-of-turn token that closes it: "<|eot_id|>" (Llama 3), "<|im_end|>"
// (ChatML; the "\n" the template writes after it is not trained) and "</s>"
// (Mistral). Headers, BOS, system and user text are not trained.

#ifndef HALFTIME_TOKENIZER_CHAT_TEMPLATE_H_
#define HALFTIME_TOKENIZER_CHAT_TEMPLATE_H_

#include <string>
#include <string_view>
#include <vector>

namespace halftime::tokenizer {

enum class ChatTemplate { kLlama3, kChatml, kMistral };

// Sets *out from a template's name: "llama3", "chatml" or "mistral". False
// (and *out untouched) for any other name.
bool ParseChatTemplate(std::string_view name, ChatTemplate* out);
// The name ParseChatTemplate reads back.
const char* ChatTemplateName(ChatTemplate t);

// The token that closes an assistant turn in template `t` ("<|eot_id|>",
// "<|im_end|>", "</s>"): where generation of an answer stops.
const char* EndOfTurnToken(ChatTemplate t);

// One message of a conversation. `content` is UTF-8 (not checked here: the
// tokenizer refuses invalid UTF-8 when the text is encoded).
struct ChatMessage {
  std::string role;
  std::string content;
};

// A piece of rendered text; `trained` marks text whose tokens the loss
// counts (assistant content and the end-of-turn token that closes it).
struct TextSegment {
  std::string text;
  bool trained = false;
};

// Renders `messages` as template `t` writes them (add_generation_prompt as
// given), including the BOS token's text where the template writes it, into
// *out (replaced): the pieces in order, adjacent pieces with the same
// `trained` flag joined, none empty. Their concatenation is the template's
// output.
//
// False with *error (naming the message index, as "messages[2]", and the
// cause) for an empty conversation, an unknown role, a role order the
// template refuses (Mistral: user/assistant alternating after an optional
// first system message) and, unless `add_generation_prompt`, a conversation
// that does not end with an assistant message (nothing to train on).
//
// Thread safety: a pure function; safe from any thread.
bool RenderChat(ChatTemplate t, const std::vector<ChatMessage>& messages,
                bool add_generation_prompt, std::vector<TextSegment>* out,
                std::string* error);

}  // namespace halftime::tokenizer

#endif  // HALFTIME_TOKENIZER_CHAT_TEMPLATE_H_
