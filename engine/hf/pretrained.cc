#include "engine/hf/pretrained.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/hf/safetensors_index.h"

namespace halftime::engine::hf {
namespace {

namespace fs = std::filesystem;

TrainStatus Invalid(const std::string& msg) {
  return TrainStatus::Error(TrainStatus::kInvalidInput, msg);
}

// Reads a small text file (config.json, the index) whole.
TrainStatus ReadText(const fs::path& path, std::string* out) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) return Invalid(path.string() + " cannot be read: " + ec.message());
  if (size > (64u << 20)) {
    return Invalid(path.string() + " is " + std::to_string(size) +
                   " bytes, past the 64 MiB a JSON file here may have");
  }
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  if (!in) return Invalid(path.string() + " cannot be read");
  *out = s.str();
  return TrainStatus::Ok();
}

std::string ShapeString(at::IntArrayRef shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

}  // namespace

TrainStatus PretrainedFolder::Open(const std::string& dir,
                                   std::unique_ptr<PretrainedFolder>* out) {
  std::unique_ptr<PretrainedFolder> f(new PretrainedFolder());
  f->dir_ = dir;
  const fs::path root(dir);
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    return Invalid("model.pretrained " + dir + " is not a directory");
  }
  std::string text, error;
  const fs::path config_path = root / "config.json";
  if (!fs::exists(config_path, ec)) {
    return Invalid("model.pretrained " + dir + " has no config.json");
  }
  TrainStatus st = ReadText(config_path, &text);
  if (!st.ok()) return st;
  if (!ParseModelConfig(text, config_path.string(), &f->config_, &error)) {
    return Invalid(error);
  }
  // The shards and the tensors each one is said to hold.
  std::map<std::string, std::vector<std::string>> shards;
  const fs::path index_path = root / "model.safetensors.index.json";
  if (fs::exists(index_path, ec)) {
    st = ReadText(index_path, &text);
    if (!st.ok()) return st;
    if (!ParseSafetensorsIndex(text, index_path.string(), &shards, &error)) {
      return Invalid(error);
    }
  } else if (fs::exists(root / "model.safetensors", ec)) {
    shards["model.safetensors"];
  } else {
    return Invalid("model.pretrained " + dir +
                   " has neither model.safetensors nor "
                   "model.safetensors.index.json");
  }
  for (const auto& [name, listed] : shards) {
    std::unique_ptr<SafetensorsFile> file;
    st = SafetensorsFile::Open((root / name).string(), &file);
    if (!st.ok()) return st;
    for (const std::string& tensor : listed) {
      if (file->Find(tensor) == nullptr) {
        return Invalid(index_path.string() + " puts tensor " + tensor + " in " +
                       name + ", which does not hold it");
      }
    }
    for (const TensorEntry& e : file->header().tensors) {
      if (!f->where_.emplace(e.name, f->files_.size()).second) {
        return Invalid("model.pretrained " + dir + ": tensor " + e.name +
                       " is in both " + f->files_[f->where_[e.name]]->path() +
                       " and " + file->path());
      }
    }
    f->files_.push_back(std::move(file));
  }
  *out = std::move(f);
  return TrainStatus::Ok();
}

TrainStatus PretrainedFolder::Take(const std::string& name,
                                   at::IntArrayRef shape, at::ScalarType dtype,
                                   at::Tensor* out) {
  auto it = where_.find(name);
  if (it == where_.end()) {
    return Invalid("model.pretrained " + dir_ + ": missing tensor " + name +
                   " (" + config_.architecture + " wants shape " +
                   ShapeString(shape) + ")");
  }
  SafetensorsFile& file = *files_[it->second];
  const TensorEntry& e = *file.Find(name);
  if (!at::IntArrayRef(e.shape).equals(shape)) {
    return Invalid(file.path() + ": tensor " + name + " has shape " +
                   ShapeString(e.shape) + ", config.json implies " +
                   ShapeString(shape));
  }
  if (e.dtype != DType::kF32 && e.dtype != DType::kF16 &&
      e.dtype != DType::kBF16) {
    return Invalid(file.path() + ": tensor " + name + " is " +
                   DTypeName(e.dtype) + "; weights must be F32, BF16 or F16");
  }
  taken_.insert(name);
  *out = file.Read(e, dtype);
  return TrainStatus::Ok();
}

TrainStatus PretrainedFolder::CheckAllTaken() const {
  std::string extra;
  int n = 0;
  for (const auto& [name, file] : where_) {
    if (taken_.count(name)) continue;
    if (++n <= 3) extra += (extra.empty() ? "" : ", ") + name;
  }
  if (n == 0) return TrainStatus::Ok();
  return Invalid("model.pretrained " + dir_ + ": " + std::to_string(n) +
                 " tensor(s) that " + config_.architecture +
                 " with this config.json has no place for: " + extra +
                 (n > 3 ? ", ..." : ""));
}

DType PretrainedFolder::StoredDType() const {
  std::map<DType, uint64_t> bytes;
  for (const auto& f : files_) {
    for (const TensorEntry& e : f->header().tensors) {
      bytes[e.dtype] += e.end - e.begin;
    }
  }
  DType best = DType::kF32;
  uint64_t most = 0;
  for (const auto& [d, b] : bytes) {
    if (b > most) best = d, most = b;
  }
  return best;
}

}  // namespace halftime::engine::hf
