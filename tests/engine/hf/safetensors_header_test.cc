// Safetensors headers without libtorch: a well-formed one, the writer's
// output read back, and headers that lie in each way the parser must catch.

#include "engine/hf/safetensors_header.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

namespace halftime::engine::hf {
namespace {

using ::testing::HasSubstr;

// A file: the 8-byte length, `header`, then `data_bytes` zero bytes.
std::string File(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + header + std::string(data_bytes, '\0');
}

bool Parse(const std::string& file, SafetensorsHeader* h, std::string* error) {
  uint64_t length = 0;
  if (!ReadHeaderLength(file, file.size(), &length, error)) return false;
  return ParseSafetensorsHeader(std::string_view(file).substr(8, length),
                                file.size(), h, error);
}

std::string HeaderError(const std::string& header, size_t data_bytes) {
  SafetensorsHeader h;
  std::string error;
  EXPECT_FALSE(Parse(File(header, data_bytes), &h, &error));
  EXPECT_FALSE(error.empty());
  return error;
}

TEST(SafetensorsHeaderTest, AcceptsAWellFormedHeaderInFileOrder) {
  // Names out of alphabetical order: the file's order is kept.
  const std::string file = File(
      "{\"__metadata__\": {\"format\": \"pt\"}, "
      "\"z\": {\"dtype\": \"BF16\", \"shape\": [2, 3], \"data_offsets\": [0, "
      "12]}, \"b\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": "
      "[12, 16]}, \"e\": {\"dtype\": \"I64\", \"shape\": [0], "
      "\"data_offsets\": [16, 16]}}",
      16);
  SafetensorsHeader h;
  std::string error;
  ASSERT_TRUE(Parse(file, &h, &error)) << error;
  ASSERT_EQ(h.tensors.size(), 3u);
  EXPECT_EQ(h.tensors[0].name, "z");
  EXPECT_EQ(h.tensors[0].dtype, DType::kBF16);
  EXPECT_EQ(h.tensors[0].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(h.tensors[1].name, "b");
  EXPECT_EQ(h.tensors[1].numel(), 1);
  EXPECT_EQ(h.tensors[2].numel(), 0);
  EXPECT_EQ(h.tensors[2].begin, 16u);
  EXPECT_EQ(h.data_start, file.size() - 16);
  ASSERT_EQ(h.metadata.size(), 1u);
  EXPECT_EQ(h.metadata[0],
            std::make_pair(std::string("format"), std::string("pt")));
}

TEST(SafetensorsHeaderTest, WriterOutputReadsBack) {
  std::vector<TensorEntry> tensors(3);
  tensors[0].name = "wte.weight";
  tensors[0].dtype = DType::kF32;
  tensors[0].shape = {4, 2};
  tensors[1].name = "a \"quoted\"\n name";
  tensors[1].dtype = DType::kF16;
  tensors[1].shape = {3};
  tensors[2].name = "scalar";
  tensors[2].dtype = DType::kI64;
  const std::string json =
      SafetensorsHeaderJson(&tensors, {{"format", "halftime"}, {"k", "\t"}});
  EXPECT_EQ(tensors[1].begin, 32u);
  EXPECT_EQ(tensors[2].end, 32u + 6u + 8u);
  SafetensorsHeader h;
  std::string error;
  ASSERT_TRUE(Parse(File(json, tensors[2].end), &h, &error)) << error;
  ASSERT_EQ(h.tensors.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(h.tensors[i].name, tensors[i].name);
    EXPECT_EQ(h.tensors[i].dtype, tensors[i].dtype);
    EXPECT_EQ(h.tensors[i].shape, tensors[i].shape);
    EXPECT_EQ(h.tensors[i].begin, tensors[i].begin);
    EXPECT_EQ(h.tensors[i].end, tensors[i].end);
  }
  ASSERT_EQ(h.metadata.size(), 2u);
  EXPECT_EQ(h.metadata[1].second, "\t");
}

TEST(SafetensorsHeaderTest, RefusesHeadersThatLie) {
  const std::string a = "\"a\": {\"dtype\": \"F32\", \"shape\": [2], ";
  EXPECT_THAT(HeaderError("{" + a + "\"data_offsets\": [0, 8]}}", 4),
              HasSubstr("truncated: tensor a"));
  EXPECT_THAT(HeaderError("{" + a + "\"data_offsets\": [0, 12]}}", 12),
              HasSubstr("tensor a spans 12"));
  EXPECT_THAT(HeaderError("{" + a +
                              "\"data_offsets\": [0, 8]}, \"b\": "
                              "{\"dtype\": \"F32\", \"shape\": [1], "
                              "\"data_offsets\": [4, 8]}}",
                          8),
              HasSubstr("overlaps"));
  EXPECT_THAT(HeaderError("{" + a + "\"data_offsets\": [0, 8]}, " + a +
                              "\"data_offsets\": [8, 16]}}",
                          16),
              HasSubstr("names a twice"));
  EXPECT_THAT(HeaderError("{\"a\": {\"dtype\": \"F8_E4M3\", \"shape\": [1], "
                          "\"data_offsets\": [0, 1]}}",
                          1),
              HasSubstr("unsupported dtype F8_E4M3"));
  EXPECT_THAT(HeaderError("{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], "
                          "\"data_offsets\": [0, 4]}}",
                          4),
              HasSubstr("tensor a has a shape entry"));
  EXPECT_THAT(HeaderError("{\"a\": {\"dtype\": \"F32\", \"shape\": [1.5], "
                          "\"data_offsets\": [0, 4]}}",
                          4),
              HasSubstr("tensor a has a shape entry"));
  EXPECT_THAT(
      HeaderError("{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, "
                  "4294967296, 4294967296], \"data_offsets\": [0, 4]}}",
                  4),
      HasSubstr("too large"));
  EXPECT_THAT(HeaderError("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], "
                          "\"data_offsets\": [4, 0]}}",
                          4),
              HasSubstr("0 <= begin <= end"));
  EXPECT_THAT(HeaderError("{\"__metadata__\": {\"n\": 1}}", 0),
              HasSubstr("__metadata__ entry n is not a string"));
  EXPECT_THAT(HeaderError("{\"a\": ", 0), HasSubstr("malformed JSON header"));
  EXPECT_THAT(HeaderError("[1, 2]", 0), HasSubstr("not a JSON object"));
  EXPECT_THAT(HeaderError("{\"a\xff\": 1}", 0),
              HasSubstr("malformed JSON header"));
  // A length prefix past the file, and past the size limit.
  std::string file = File("{}", 0);
  file[0] = 100;
  uint64_t length = 0;
  std::string error;
  EXPECT_FALSE(ReadHeaderLength(file, file.size(), &length, &error));
  EXPECT_THAT(error, HasSubstr("truncated"));
  file[7] = 1;
  EXPECT_FALSE(ReadHeaderLength(file, file.size(), &length, &error));
  EXPECT_THAT(error, HasSubstr("100 MiB"));
  EXPECT_FALSE(ReadHeaderLength("1234", 4, &length, &error));
  EXPECT_THAT(error, HasSubstr("8-byte"));
}

TEST(SafetensorsHeaderTest, DeepNestingIsAnErrorNotACrash) {
  const std::string deep = "{\"a\": " + std::string(100000, '[') + "}";
  EXPECT_THAT(HeaderError(deep, 0), HasSubstr("malformed JSON header"));
}

}  // namespace
}  // namespace halftime::engine::hf
