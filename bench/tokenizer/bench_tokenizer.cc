// Encoding speed of a tokenizer.json or a SentencePiece tokenizer.model on
// one thread, in MB/s of UTF-8 input.
//
//   node tests/tokenizer/make_corpus.mjs /tmp/corpus.json
//   taskset -c 0 bench_tokenizer TOKENIZER /tmp/corpus.json [PASSES]
//
// The first pass starts with an empty pre-token cache; later passes show
// the speed once the cache holds the corpus's common words. (Only BPE
// caches: a unigram, word or char tokenizer.model runs every pass as the
// first.)

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr,
                 "usage: %s TOKENIZER.json|tokenizer.model CORPUS.json "
                 "[PASSES]\n",
                 argv[0]);
    return 2;
  }
  const int passes = argc > 3 ? std::atoi(argv[3]) : 3;
  using Clock = std::chrono::steady_clock;
  const auto seconds = [](Clock::time_point since) {
    return std::chrono::duration<double>(Clock::now() - since).count();
  };
  auto start = Clock::now();
  std::string error;
  auto tokenizer = halftime::tokenizer::Tokenizer::Load(argv[1], &error);
  if (!tokenizer) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 1;
  }
  std::printf("load: %.2f s\n", seconds(start));
  std::ifstream in(argv[2], std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  const auto corpus = nlohmann::json::parse(text.str(), nullptr, false);
  if (!corpus.is_array()) {
    std::fprintf(stderr, "%s: expected a JSON array of strings\n", argv[2]);
    return 1;
  }
  std::vector<std::string> chunks;
  size_t bytes = 0;
  for (const auto& chunk : corpus) {
    if (!chunk.is_string()) continue;
    chunks.push_back(chunk.get<std::string>());
    bytes += chunks.back().size();
  }
  std::vector<int32_t> ids;
  for (int pass = 0; pass < passes; ++pass) {
    size_t tokens = 0;
    start = Clock::now();
    for (const std::string& chunk : chunks) {
      if (!tokenizer->Encode(chunk, false, &ids, &error)) {
        std::fprintf(stderr, "%s\n", error.c_str());
        return 1;
      }
      tokens += ids.size();
    }
    const double s = seconds(start);
    std::printf("pass %d: %zu bytes, %zu tokens, %.3f s, %.2f MB/s\n", pass,
                bytes, tokens, s, bytes / s / 1e6);
  }
  return 0;
}
