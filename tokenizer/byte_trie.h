// A byte trie for the tokenizer's prefix searches: the added tokens of a
// tokenizer.json, and a SentencePiece model's user-defined symbols and
// pieces (where libsentencepiece uses Darts double arrays, which it too
// only ever walks byte by byte). Built with Insert, then Finish lays each
// node's children out flat: a 256-entry table for a node with many (the
// root, "▁", "<"), sorted labels to scan for the rest.
//
// Thread safety: immutable after Finish; lookups are safe from any thread.

#ifndef HALFTIME_TOKENIZER_BYTE_TRIE_H_
#define HALFTIME_TOKENIZER_BYTE_TRIE_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace halftime::tokenizer {

class ByteTrie {
 public:
  ByteTrie() { values_.push_back(-1); }
  bool empty() const { return values_.size() == 1; }

  // Stores `value` (not negative) at `key` unless a value is there already:
  // the first insert of a key wins. Before Finish only.
  void Insert(std::string_view key, int32_t value) {
    int32_t node = 0;
    for (char c : key) {
      auto [it, added] =
          building_.emplace(Key(node, static_cast<uint8_t>(c)),
                            static_cast<int32_t>(values_.size()));
      if (added) values_.push_back(-1);
      node = it->second;
    }
    if (values_[node] < 0) values_[node] = value;
  }

  void Finish() {
    std::vector<std::vector<std::pair<uint8_t, int32_t>>> children(
        values_.size());
    for (const auto& [key, child] : building_) {
      children[key >> 8].emplace_back(static_cast<uint8_t>(key & 0xFF), child);
    }
    building_ = {};
    first_.assign(values_.size(), 0);
    count_.assign(values_.size(), 0);
    dense_.assign(values_.size(), -1);
    for (size_t node = 0; node < children.size(); ++node) {
      auto& list = children[node];
      std::sort(list.begin(), list.end());
      if (list.size() > kMaxScanned) {
        dense_[node] = static_cast<int32_t>(tables_.size() / 256);
        tables_.resize(tables_.size() + 256, -1);
        for (auto [label, child] : list) {
          tables_[static_cast<size_t>(dense_[node]) * 256 + label] = child;
        }
        continue;
      }
      first_[node] = static_cast<uint32_t>(labels_.size());
      count_[node] = static_cast<uint8_t>(list.size());
      for (auto [label, child] : list) {
        labels_.push_back(label);
        targets_.push_back(child);
      }
    }
  }

  // The child of `node` (0 is the root) by `byte`; -1 when there is none.
  // After Finish only.
  int32_t Child(int32_t node, uint8_t byte) const {
    if (dense_[node] >= 0) {
      return tables_[static_cast<size_t>(dense_[node]) * 256 + byte];
    }
    const uint32_t first = first_[node];
    for (uint32_t i = first, end = first + count_[node]; i < end; ++i) {
      if (labels_[i] >= byte) return labels_[i] == byte ? targets_[i] : -1;
    }
    return -1;
  }

  // The value stored at `node`; -1 when no key ends there.
  int32_t value(int32_t node) const { return values_[node]; }

  // The value of the longest key that is a prefix of `text`, with its
  // length in *length; -1 when no key is.
  int32_t LongestPrefix(std::string_view text, size_t* length) const {
    int32_t found = -1;
    int32_t node = 0;
    for (size_t i = 0; i < text.size(); ++i) {
      node = Child(node, static_cast<uint8_t>(text[i]));
      if (node < 0) break;
      if (values_[node] >= 0) {
        found = values_[node];
        *length = i + 1;
      }
    }
    return found;
  }

 private:
  // Nodes with more children than this get a table.
  static constexpr size_t kMaxScanned = 8;
  static uint64_t Key(int32_t node, uint8_t byte) {
    return (static_cast<uint64_t>(node) << 8) | byte;
  }

  std::unordered_map<uint64_t, int32_t> building_;
  std::vector<int32_t> values_;
  std::vector<uint32_t> first_;
  std::vector<uint8_t> count_;
  std::vector<int32_t> dense_;
  std::vector<uint8_t> labels_;
  std::vector<int32_t> targets_;
  std::vector<int32_t> tables_;
};

}  // namespace halftime::tokenizer

#endif  // HALFTIME_TOKENIZER_BYTE_TRIE_H_
