// Walks the precision rules table (rules/precision.h) and checks that every
// layer agrees with it: the proto's names, spec defaults and validation,
// placement's native check and auto order, and (with libtorch) the engine's
// capabilities, auto resolution and loss-scaling default.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/enum_names.h"
#include "common/spec.h"
#include "rules/models.h"
#include "rules/precision.h"
#include "server/placement.h"
#ifdef HALFTIME_RULES_TEST_ENGINE
#include "engine/device.h"
#include "engine/loss_scaler.h"
#include "engine/model.h"
#include "train/spec_options.h"
#endif

namespace halftime {
namespace {

using precision::DeviceTraits;
using precision::Mode;
using ::testing::HasSubstr;

// Devices that differ in what they run: every branch of Needs.
struct NamedDevice {
  const char* what;
  DeviceTraits traits;
};

std::vector<NamedDevice> Devices() {
  return {{"cpu without bf16", {false, 0, false}},
          {"cpu with avx512_bf16", {false, 0, true}},
          {"cuda sm70", {true, 7, false}},
          {"cuda sm80", {true, 8, false}},
          {"cuda sm90", {true, 9, false}}};
}

v1::WorkerCapabilities CapsOf(const DeviceTraits& traits) {
  v1::WorkerCapabilities caps;
  caps.set_device_kind(traits.cuda ? v1::DEVICE_KIND_CUDA
                                   : v1::DEVICE_KIND_CPU);
  if (traits.cuda)
    caps.set_compute_capability(absl::StrCat(traits.cuda_major, ".0"));
  for (Mode m : precision::NativeModes(traits)) {
    caps.add_native_precisions(ToProto(m));
  }
  for (Mode m : precision::EmulatedModes(traits)) {
    caps.add_emulated_precisions(ToProto(m));
  }
  return caps;
}

v1::JobSpec SpecIn(const std::string& precision) {
  absl::StatusOr<v1::JobSpec> spec = ParseJobSpec(
      absl::StrCat("name: rules\nmodel: {builtin: gpt-nano}\n"
                   "data: {kind: synthetic}\nsteps: 1\nprecision: ",
                   precision, "\n"));
  EXPECT_TRUE(spec.ok()) << precision << ": " << spec.status();
  return spec.ok() ? *spec : v1::JobSpec();
}

TEST(PrecisionRules, EveryModeHasItsProtoValueAndBack) {
  for (const precision::Rules& r : precision::AllModes()) {
    SCOPED_TRACE(r.name);
    const v1::Precision proto = ToProto(r.mode);
    ASSERT_NE(proto, v1::PRECISION_UNSPECIFIED)
        << "proto/halftime/v1/job_spec.proto lacks PRECISION_ for " << r.name;
    EXPECT_EQ(PrecisionName(proto), r.name);
    EXPECT_EQ(ToMode(proto), r.mode);
    EXPECT_EQ(precision::ModeName(r.mode), std::string(r.name));
    Mode parsed = Mode::kAuto;
    ASSERT_TRUE(precision::ParseMode(r.name, &parsed));
    EXPECT_EQ(parsed, r.mode);
    EXPECT_EQ(RulesOf(proto), &r);
  }
  // And every proto value is a mode or auto.
  for (const std::string& name : EnumShortNames(v1::Precision_descriptor())) {
    Mode m;
    EXPECT_TRUE(precision::ParseMode(name, &m))
        << "the rules table has no row for proto precision " << name;
  }
  EXPECT_EQ(ToProto(Mode::kAuto), v1::PRECISION_AUTO);
  EXPECT_EQ(RulesOf(v1::PRECISION_AUTO), nullptr);
  EXPECT_EQ(std::string(precision::ModeName(Mode::kAuto)), "auto");
}

TEST(PrecisionRules, AutoOrderEndsInFp32AndNamesOnlyModes) {
  ASSERT_FALSE(precision::AutoOrder().empty());
  EXPECT_EQ(precision::AutoOrder().back(), Mode::kFp32);
  for (Mode m : precision::AutoOrder())
    EXPECT_NE(precision::RulesOf(m), nullptr);
  // What the docs promise (docs/design.md, precision modes).
  EXPECT_EQ(precision::ResolveAuto([](Mode m) {
              return precision::RunsNatively(m, {false, 0, false});
            }),
            Mode::kFp32);
  EXPECT_EQ(precision::ResolveAuto([](Mode m) {
              return precision::RunsNatively(m, {false, 0, true});
            }),
            Mode::kBf16Mixed);
  EXPECT_EQ(precision::ResolveAuto([](Mode m) {
              return precision::RunsNatively(m, {true, 7, false});
            }),
            Mode::kFp16Mixed);
}

TEST(PrecisionRules, SpecDefaultsAndValidationFollowTheTable) {
  for (const precision::Rules& r : precision::AllModes()) {
    SCOPED_TRACE(r.name);
    const v1::JobSpec spec = SpecIn(r.name);
    EXPECT_EQ(spec.loss_scaling().mode(), r.default_dynamic_scaling
                                              ? v1::LOSS_SCALING_MODE_DYNAMIC
                                              : v1::LOSS_SCALING_MODE_NONE);
    EXPECT_EQ(spec.loss_scaling().init_scale(),
              precision::loss_scaling::kInitScale);
    EXPECT_EQ(spec.loss_scaling().growth_interval(),
              precision::loss_scaling::kGrowthInterval);
    EXPECT_EQ(ToMode(spec.loss_scaling().fallback_precision()),
              precision::loss_scaling::kFallbackPrecision);

    // Loss scaling asked for explicitly.
    v1::JobSpec scaled = spec;
    scaled.mutable_loss_scaling()->set_mode(v1::LOSS_SCALING_MODE_DYNAMIC);
    const absl::Status scaled_status = ValidateJobSpec(scaled);
    if (*r.no_loss_scaling_reason != '\0') {
      EXPECT_THAT(std::string(scaled_status.message()),
                  HasSubstr(absl::StrCat("loss_scaling.mode: ", r.name, " ",
                                         r.no_loss_scaling_reason)));
    } else {
      EXPECT_TRUE(scaled_status.ok()) << scaled_status;
    }

    // As the fallback of an fp16 job.
    v1::JobSpec fallback = SpecIn("fp16-mixed");
    fallback.mutable_loss_scaling()->set_fallback_precision(ToProto(r.mode));
    const absl::Status fallback_status = ValidateJobSpec(fallback);
    EXPECT_EQ(fallback_status.ok(), r.fallback_target) << fallback_status;

    // On a CPU-only spec.
    v1::JobSpec on_cpu = spec;
    on_cpu.mutable_resources()->set_device(v1::DEVICE_KIND_CPU);
    const absl::Status cpu_status = ValidateJobSpec(on_cpu);
    EXPECT_EQ(!cpu_status.ok(), precision::NeedsCuda(r.mode)) << cpu_status;
  }
}

TEST(PrecisionRules, PlacementRunsWhatTheTableSaysNatively) {
  for (const NamedDevice& device : Devices()) {
    SCOPED_TRACE(device.what);
    const v1::WorkerCapabilities caps = CapsOf(device.traits);
    for (const precision::Rules& r : precision::AllModes()) {
      SCOPED_TRACE(r.name);
      const server::DeviceMatch match =
          server::MatchDevice(SpecIn(r.name), caps);
      EXPECT_EQ(match.ok, precision::RunsNatively(r.mode, device.traits))
          << match.reason;
      if (match.ok) {
        EXPECT_EQ(match.precision, ToProto(r.mode));
      }
    }
    const server::DeviceMatch automatic =
        server::MatchDevice(SpecIn("auto"), caps);
    ASSERT_TRUE(automatic.ok);
    EXPECT_EQ(ToMode(automatic.precision),
              precision::ResolveAuto([&device](Mode m) {
                return precision::RunsNatively(m, device.traits);
              }));
  }
  // A CPU worker that claims a CUDA-only mode is not believed.
  v1::WorkerCapabilities liar = CapsOf({false, 0, false});
  liar.add_native_precisions(v1::PRECISION_FP16_MIXED);
  EXPECT_FALSE(server::MatchDevice(SpecIn("fp16-mixed"), liar).ok);
  EXPECT_EQ(server::MatchDevice(SpecIn("auto"), liar).precision,
            v1::PRECISION_FP32);
}

// The devices column of docs/design.md's precision table, per Needs.
std::string DocumentedDevices(precision::Needs needs) {
  switch (needs) {
    case precision::Needs::kAnyDevice:
      return "any";
    case precision::Needs::kCuda:
      return "CUDA";
    case precision::Needs::kCudaAmpere:
      return "CUDA sm80+";
    case precision::Needs::kNativeBf16:
      return "CUDA sm80+, CPU with native bf16";
  }
  return "";
}

TEST(PrecisionRules, TheDesignPageAgrees) {
  std::ifstream in(HALFTIME_DESIGN_MD);
  ASSERT_TRUE(in) << HALFTIME_DESIGN_MD;
  std::map<std::string, std::vector<std::string>> rows;
  bool in_section = false;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("## ", 0) == 0) {
      in_section = line.find("Precision modes") != std::string::npos;
    }
    if (!in_section || line.rfind("| `", 0) != 0) continue;
    std::vector<std::string> cells = absl::StrSplit(line, '|');
    for (std::string& c : cells) c = std::string(absl::StripAsciiWhitespace(c));
    // cells[0] is empty (before the first '|'); cells[1] is "`name`".
    ASSERT_GE(cells.size(), 6u) << line;
    std::string name = cells[1].substr(1, cells[1].find('`', 1) - 1);
    rows[name] = cells;
  }
  for (const precision::Rules& r : precision::AllModes()) {
    SCOPED_TRACE(r.name);
    auto row = rows.find(r.name);
    ASSERT_NE(row, rows.end()) << "docs/design.md has no row for " << r.name;
    const std::string& scaling = row->second[4];
    EXPECT_EQ(scaling.find("dynamic") != std::string::npos,
              r.default_dynamic_scaling)
        << scaling;
    EXPECT_EQ(row->second[5], DocumentedDevices(r.needs));
    rows.erase(row);
  }
  ASSERT_EQ(rows.count("auto"), 1u);
  rows.erase("auto");
  for (const auto& [name, cells] : rows) {
    ADD_FAILURE() << "docs/design.md documents " << name
                  << ", which the rules table lacks";
  }
}

TEST(ModelRules, SpecValidationAcceptsEveryBuiltinAndOnlyThose) {
  for (const models::Builtin& b : models::Builtins()) {
    SCOPED_TRACE(b.name);
    absl::StatusOr<v1::JobSpec> spec = ParseJobSpec(absl::StrCat(
        "name: m\nmodel: {builtin: ", b.name,
        b.language_model ? "" : ", loss: mse",
        "}\ndata: {kind: synthetic}\nsteps: 1\nprecision: fp32\n"));
    EXPECT_TRUE(spec.ok()) << spec.status();
  }
  absl::StatusOr<v1::JobSpec> unknown = ParseJobSpec(
      "name: m\nmodel: {builtin: gpt-huge}\ndata: {kind: synthetic}\nsteps: 1\n"
      "precision: fp32\n");
  ASSERT_FALSE(unknown.ok());
  EXPECT_THAT(std::string(unknown.status().message()),
              HasSubstr(models::BuiltinNames()));
}

#ifdef HALFTIME_RULES_TEST_ENGINE
TEST(PrecisionRules, TheEngineAgrees) {
  for (const precision::Rules& r : precision::AllModes()) {
    SCOPED_TRACE(r.name);
    const engine::TrainOptions options = TrainOptionsFromSpec(SpecIn(r.name));
    EXPECT_EQ(options.precision, r.mode);
    EXPECT_EQ(engine::ResolveLossScalingMode(engine::LossScalingMode::kDefault,
                                             r.mode),
              r.default_dynamic_scaling ? engine::LossScalingMode::kDynamic
                                        : engine::LossScalingMode::kNone);
    EXPECT_EQ(options.loss_scaling.init_scale,
              precision::loss_scaling::kInitScale);
  }
  // Engine and placement resolve auto alike and refuse the same modes, on
  // every kind of device.
  for (const NamedDevice& device : Devices()) {
    SCOPED_TRACE(device.what);
    engine::DeviceCapabilities caps;
    caps.kind = device.traits.cuda ? "cuda" : "cpu";
    caps.native_precisions = precision::NativeModes(device.traits);
    caps.emulated_precisions = precision::EmulatedModes(device.traits);
    engine::Precision resolved = engine::Precision::kAuto;
    bool emulated = false;
    ASSERT_TRUE(engine::ResolvePrecision(engine::Precision::kAuto, caps,
                                         /*allow_emulation=*/true, &resolved,
                                         &emulated)
                    .ok());
    v1::JobSpec auto_spec = SpecIn("auto");
    auto_spec.mutable_resources()->set_emulation(v1::EMULATION_ALLOW);
    EXPECT_EQ(ToProto(resolved),
              server::MatchDevice(auto_spec, CapsOf(device.traits)).precision);
    for (const precision::Rules& r : precision::AllModes()) {
      for (bool allow : {false, true}) {
        engine::Precision out;
        v1::JobSpec spec = SpecIn(r.name);
        spec.mutable_resources()->set_emulation(allow ? v1::EMULATION_ALLOW
                                                      : v1::EMULATION_DENY);
        const server::DeviceMatch match =
            server::MatchDevice(spec, CapsOf(device.traits));
        const bool runs =
            precision::RunsNatively(r.mode, device.traits) ||
            (allow && precision::RunsEmulated(r.mode, device.traits));
        EXPECT_EQ(
            engine::ResolvePrecision(r.mode, caps, allow, &out, &emulated).ok(),
            runs)
            << r.name << " allow " << allow;
        EXPECT_EQ(match.ok, runs) << r.name << " allow " << allow;
        if (runs) {
          EXPECT_EQ(emulated, match.emulated) << r.name;
        }
      }
    }
  }
  // This machine's probe reports exactly the table's modes for its traits.
  const engine::DeviceCapabilities here =
      engine::ProbeDevice(1, /*want_cuda=*/false, /*measure=*/false);
  DeviceTraits traits;
  traits.cpu_bf16 = !here.bf16_emulated;
  EXPECT_EQ(here.native_precisions, precision::NativeModes(traits));
  EXPECT_EQ(here.emulated_precisions, precision::EmulatedModes(traits));
}

TEST(ModelRules, TheEngineHasAPresetForEveryLanguageModel) {
  for (const models::Builtin& b : models::Builtins()) {
    engine::GptConfig config;
    EXPECT_EQ(engine::GptPreset(b.name, {}, 256, &config), b.language_model)
        << b.name;
  }
}
#endif

}  // namespace
}  // namespace halftime
