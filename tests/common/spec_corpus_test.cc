// Data-driven tests over tests/common/specs: every valid spec (and every
// example) loads; every invalid spec is refused with exactly the error in
// its .expected file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/spec.h"

namespace halftime {
namespace {

namespace fs = std::filesystem;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::vector<fs::path> SpecsIn(const fs::path& dir) {
  std::vector<fs::path> specs;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string ext = entry.path().extension().string();
    if (ext == ".yaml" || ext == ".json") specs.push_back(entry.path());
  }
  std::sort(specs.begin(), specs.end());
  return specs;
}

TEST(SpecCorpusTest, ValidSpecsAndExamplesLoadAndRoundTrip) {
  std::vector<fs::path> specs =
      SpecsIn(fs::path(HALFTIME_SPEC_CORPUS) / "valid");
  for (const fs::path& p : SpecsIn(HALFTIME_EXAMPLES)) specs.push_back(p);
  ASSERT_GE(specs.size(), 8u);
  for (const fs::path& path : specs) {
    SCOPED_TRACE(path.string());
    absl::StatusOr<v1::JobSpec> spec = LoadJobSpecFile(path.string());
    ASSERT_TRUE(spec.ok()) << spec.status();
    // What `halftime validate` prints loads back to the same spec.
    for (SpecFormat format : {SpecFormat::kYaml, SpecFormat::kJson}) {
      absl::StatusOr<v1::JobSpec> again =
          ParseJobSpec(FormatJobSpec(*spec, format), "rendered");
      ASSERT_TRUE(again.ok()) << again.status();
      EXPECT_EQ(again->SerializeAsString(), spec->SerializeAsString());
    }
  }
}

TEST(SpecCorpusTest, InvalidSpecsGiveTheExpectedError) {
  const fs::path dir = fs::path(HALFTIME_SPEC_CORPUS) / "invalid";
  std::vector<fs::path> specs = SpecsIn(dir);
  ASSERT_GE(specs.size(), 100u) << "the corpus holds at least 100 bad specs";
  for (const fs::path& path : specs) {
    SCOPED_TRACE(path.string());
    fs::path expected_path = path;
    expected_path.replace_extension(".expected");
    ASSERT_TRUE(fs::exists(expected_path)) << "missing " << expected_path;
    std::string expected = ReadFile(expected_path);
    while (!expected.empty() && expected.back() == '\n') expected.pop_back();

    absl::StatusOr<v1::JobSpec> spec =
        ParseJobSpec(ReadFile(path), path.filename().string());
    ASSERT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(spec.status().message(), expected);
  }
}

}  // namespace
}  // namespace halftime
