#include "engine/checkpoint.h"

#include <torch/serialize.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "engine/hf/safetensors_file.h"
#include "engine/hf/safetensors_header.h"

namespace halftime::engine {
namespace {

constexpr char kCheckpointFormat[] = "halftime-checkpoint-v1";

TrainStatus Invalid(const std::string& msg) {
  return TrainStatus::Error(TrainStatus::kInvalidInput, msg);
}

TrainStatus Failed(const std::string& msg) {
  return TrainStatus::Error(TrainStatus::kTrainingFailed, msg);
}

c10::impl::GenericDict ToDict(const NamedTensors& tensors) {
  c10::impl::GenericDict d(c10::StringType::get(), c10::TensorType::get());
  for (const auto& [name, t] : tensors) {
    d.insert(name, t.detach().to(at::kCPU).contiguous());
  }
  return d;
}

TrainStatus FromDict(const c10::IValue& v, const std::string& what,
                     const std::string& path, NamedTensors* out) {
  if (!v.isGenericDict()) {
    return Invalid("checkpoint " + path + ": '" + what + "' is not a dict");
  }
  for (const auto& entry : v.toGenericDict()) {
    if (!entry.key().isString() || !entry.value().isTensor()) {
      return Invalid("checkpoint " + path + ": '" + what +
                     "' must map names to tensors");
    }
    out->emplace_back(entry.key().toStringRef(), entry.value().toTensor());
  }
  return TrainStatus::Ok();
}

}  // namespace

TrainStatus WriteFolderAtomically(
    const std::string& dir,
    const std::function<TrainStatus(const std::filesystem::path& staging)>&
        fill) {
  namespace fs = std::filesystem;
  const fs::path target(dir);
  const fs::path staging = target.string() + ".tmp";
  std::error_code ec;
  fs::remove_all(staging, ec);
  if (!fs::create_directories(staging, ec) && ec) {
    return Failed("cannot create " + staging.string() + ": " + ec.message());
  }
  TrainStatus st = fill(staging);
  if (!st.ok()) return st;
  fs::remove_all(target, ec);
  fs::rename(staging, target, ec);
  if (ec) {
    return Failed("cannot move " + staging.string() + " to " + target.string() +
                  ": " + ec.message());
  }
  return TrainStatus::Ok();
}

TrainStatus WriteFileAtomically(const std::string& path,
                                const std::string& contents) {
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    return Failed("cannot create " + tmp + ": " + std::strerror(errno));
  }
  const bool ok =
      std::fwrite(contents.data(), 1, contents.size(), f) == contents.size() &&
      std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  const int err = errno;
  if (std::fclose(f) != 0 || !ok) {
    std::remove(tmp.c_str());
    return Failed("cannot write " + tmp + ": " + std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int rename_err = errno;
    std::remove(tmp.c_str());
    return Failed("cannot rename " + tmp + " to " + path + ": " +
                  std::strerror(rename_err));
  }
  return TrainStatus::Ok();
}

TrainStatus WriteSafetensors(
    const std::string& path, const NamedTensors& tensors,
    const std::map<std::string, std::string>& metadata) {
  std::vector<hf::TensorEntry> entries;
  std::vector<at::Tensor> cpu;
  for (const auto& [name, t] : tensors) {
    hf::DType dtype;
    if (!hf::SafetensorsFile::DTypeFor(t.scalar_type(), &dtype)) {
      return Invalid("safetensors: tensor " + name + " has unsupported dtype " +
                     std::string(c10::toString(t.scalar_type())));
    }
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    hf::TensorEntry e;
    e.name = name;
    e.dtype = dtype;
    e.shape = c.sizes().vec();
    entries.push_back(std::move(e));
    cpu.push_back(std::move(c));
  }
  std::string header =
      hf::SafetensorsHeaderJson(&entries, {metadata.begin(), metadata.end()});
  // The data section starts 8-byte aligned, as the reference writer does.
  while (header.size() % 8 != 0) header += ' ';
  const uint64_t data_bytes = entries.empty() ? 0 : entries.back().end;
  std::string file;
  file.reserve(8 + header.size() + data_bytes);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) {
    file.push_back(static_cast<char>((n >> (8 * i)) & 0xFF));
  }
  file += header;
  for (const at::Tensor& c : cpu) {
    file.append(static_cast<const char*>(c.data_ptr()), c.nbytes());
  }
  return WriteFileAtomically(path, file);
}

TrainStatus ReadSafetensors(const std::string& path, NamedTensors* out) {
  std::unique_ptr<hf::SafetensorsFile> file;
  TrainStatus st = hf::SafetensorsFile::Open(path, &file);
  if (!st.ok()) return st;
  for (const hf::TensorEntry& entry : file->header().tensors) {
    out->emplace_back(entry.name, file->Read(entry));
  }
  return TrainStatus::Ok();
}

TrainStatus WriteCheckpoint(const std::string& path,
                            const CheckpointData& data) {
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  d.insert("format", std::string(kCheckpointFormat));
  d.insert("step", data.step);
  d.insert("micro_batches", data.micro_batches);
  d.insert("optimizer_steps", data.optimizer_steps);
  d.insert("precision", data.precision);
  d.insert("fingerprint", static_cast<int64_t>(data.fingerprint));
  c10::impl::GenericDict s(c10::StringType::get(), c10::AnyType::get());
  s.insert("scale", data.scaler.scale);
  s.insert("growth_tracker", data.scaler.growth_tracker);
  s.insert("hysteresis_tracker", data.scaler.hysteresis_tracker);
  s.insert("floor_overflows", data.scaler.floor_overflows);
  s.insert("consecutive_overflows", data.scaler.consecutive_overflows);
  s.insert("total_overflows", data.scaler.total_overflows);
  d.insert("scaler", s);
  d.insert("model", ToDict(data.model));
  d.insert("optimizer", ToDict(data.optimizer));
  if (data.rng_cpu.defined()) d.insert("rng_cpu", data.rng_cpu);
  if (data.rng_cuda.defined()) d.insert("rng_cuda", data.rng_cuda);
  if (!data.base_hash.empty()) d.insert("base_hash", data.base_hash);
  const std::vector<char> bytes = torch::pickle_save(d);
  return WriteFileAtomically(path, std::string(bytes.begin(), bytes.end()));
}

TrainStatus ReadCheckpoint(const std::string& path, CheckpointData* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Invalid("checkpoint " + path + " cannot be opened");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                          std::istreambuf_iterator<char>());
  if (bytes.empty()) return Invalid("checkpoint " + path + " is empty");
  c10::IValue v;
  try {
    v = torch::pickle_load(bytes);
  } catch (const std::exception&) {
    return Invalid("checkpoint " + path +
                   " is not a readable torch.save file (truncated?)");
  }
  if (!v.isGenericDict())
    return Invalid("checkpoint " + path + " is not a dict");
  auto d = v.toGenericDict();
  if (!d.contains("format") || !d.at("format").isString() ||
      d.at("format").toStringRef() != kCheckpointFormat) {
    return Invalid("checkpoint " + path + " is not a " +
                   std::string(kCheckpointFormat) + " file");
  }
  try {
    out->step = d.at("step").toInt();
    out->micro_batches = d.at("micro_batches").toInt();
    out->optimizer_steps = d.at("optimizer_steps").toInt();
    out->precision = d.at("precision").toStringRef();
    out->fingerprint = static_cast<uint64_t>(d.at("fingerprint").toInt());
    auto s = d.at("scaler").toGenericDict();
    out->scaler.scale = s.at("scale").toDouble();
    out->scaler.growth_tracker = s.at("growth_tracker").toInt();
    out->scaler.hysteresis_tracker = s.at("hysteresis_tracker").toInt();
    out->scaler.floor_overflows = s.at("floor_overflows").toInt();
    out->scaler.consecutive_overflows = s.at("consecutive_overflows").toInt();
    out->scaler.total_overflows = s.at("total_overflows").toInt();
    if (d.contains("rng_cpu")) out->rng_cpu = d.at("rng_cpu").toTensor();
    if (d.contains("rng_cuda")) out->rng_cuda = d.at("rng_cuda").toTensor();
    if (d.contains("base_hash")) {
      out->base_hash = d.at("base_hash").toStringRef();
    }
  } catch (const std::exception&) {
    return Invalid("checkpoint " + path + " lacks a field or has a wrong type");
  }
  TrainStatus st = FromDict(d.at("model"), "model", path, &out->model);
  if (!st.ok()) return st;
  return FromDict(d.at("optimizer"), "optimizer", path, &out->optimizer);
}

TrainStatus ReadWeights(const std::string& path, NamedTensors* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Invalid("model.init_from " + path + " cannot be opened");
  char head[9] = {};
  in.read(head, 9);
  // safetensors: 8-byte length, then '{'. Our checkpoints are zip files.
  if (in.gcount() == 9 && head[8] == '{') return ReadSafetensors(path, out);
  CheckpointData data;
  TrainStatus st = ReadCheckpoint(path, &data);
  if (!st.ok()) {
    return Invalid(
        "model.init_from " + path +
        " is neither safetensors nor a halftime checkpoint: " + st.message);
  }
  *out = std::move(data.model);
  return TrainStatus::Ok();
}

}  // namespace halftime::engine
