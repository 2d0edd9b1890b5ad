#include "engine/checkpoint.h"

#include <torch/serialize.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "engine/json_writer.h"

namespace halftime::engine {
namespace {

constexpr char kCheckpointFormat[] = "halftime-checkpoint-v1";

TrainStatus Invalid(const std::string& msg) {
  return TrainStatus::Error(TrainStatus::kInvalidInput, msg);
}

TrainStatus Failed(const std::string& msg) {
  return TrainStatus::Error(TrainStatus::kTrainingFailed, msg);
}

struct DtypeName {
  at::ScalarType type;
  const char* name;
};
constexpr DtypeName kDtypes[] = {
    {at::kDouble, "F64"},    {at::kFloat, "F32"}, {at::kHalf, "F16"},
    {at::kBFloat16, "BF16"}, {at::kLong, "I64"},  {at::kInt, "I32"},
    {at::kShort, "I16"},     {at::kChar, "I8"},   {at::kByte, "U8"},
    {at::kBool, "BOOL"},
};

// A JSON value, just enough for safetensors headers.
struct Json {
  enum Kind { kNull, kNumber, kString, kArray, kObject } kind = kNull;
  double number = 0;
  std::string str;
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> members;
  const Json* Get(const std::string& key) const {
    for (const auto& [k, v] : members) {
      if (k == key) return &v;
    }
    return nullptr;
  }
};

class JsonParser {
 public:
  explicit JsonParser(std::string s) : s_(std::move(s)) {}
  bool Parse(Json* out) {
    if (!Value(out, 0)) return false;
    Ws();
    return i_ == s_.size();
  }

 private:
  void Ws() {
    while (i_ < s_.size() && std::strchr(" \t\r\n", s_[i_]) && s_[i_]) ++i_;
  }
  bool String(std::string* out) {
    if (i_ >= s_.size() || s_[i_] != '"') return false;
    ++i_;
    while (i_ < s_.size() && s_[i_] != '"') {
      char c = s_[i_++];
      if (c == '\\') {
        if (i_ >= s_.size()) return false;
        char e = s_[i_++];
        switch (e) {
          case 'n':
            c = '\n';
            break;
          case 't':
            c = '\t';
            break;
          case 'r':
            c = '\r';
            break;
          case 'b':
            c = '\b';
            break;
          case 'f':
            c = '\f';
            break;
          case 'u': {
            if (i_ + 4 > s_.size()) return false;
            const unsigned code = std::stoul(s_.substr(i_, 4), nullptr, 16);
            i_ += 4;
            if (code < 0x80) {
              c = static_cast<char>(code);
            } else if (code < 0x800) {
              out->push_back(static_cast<char>(0xC0 | (code >> 6)));
              c = static_cast<char>(0x80 | (code & 0x3F));
            } else {
              out->push_back(static_cast<char>(0xE0 | (code >> 12)));
              out->push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
              c = static_cast<char>(0x80 | (code & 0x3F));
            }
            break;
          }
          default:
            c = e;
        }
      }
      out->push_back(c);
    }
    if (i_ >= s_.size()) return false;
    ++i_;
    return true;
  }
  bool Value(Json* out, int depth) {
    if (depth > 16) return false;
    Ws();
    if (i_ >= s_.size()) return false;
    const char c = s_[i_];
    if (c == '{') {
      out->kind = Json::kObject;
      ++i_;
      Ws();
      if (i_ < s_.size() && s_[i_] == '}') return ++i_, true;
      while (true) {
        Ws();
        std::string key;
        if (!String(&key)) return false;
        Ws();
        if (i_ >= s_.size() || s_[i_] != ':') return false;
        ++i_;
        Json v;
        if (!Value(&v, depth + 1)) return false;
        out->members.emplace_back(std::move(key), std::move(v));
        Ws();
        if (i_ < s_.size() && s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (i_ < s_.size() && s_[i_] == '}') return ++i_, true;
        return false;
      }
    }
    if (c == '[') {
      out->kind = Json::kArray;
      ++i_;
      Ws();
      if (i_ < s_.size() && s_[i_] == ']') return ++i_, true;
      while (true) {
        Json v;
        if (!Value(&v, depth + 1)) return false;
        out->items.push_back(std::move(v));
        Ws();
        if (i_ < s_.size() && s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (i_ < s_.size() && s_[i_] == ']') return ++i_, true;
        return false;
      }
    }
    if (c == '"') {
      out->kind = Json::kString;
      return String(&out->str);
    }
    if (s_.compare(i_, 4, "null") == 0) {
      i_ += 4;
      return true;
    }
    size_t end = i_;
    while (end < s_.size() && std::strchr("+-0123456789.eE", s_[end]) &&
           s_[end]) {
      ++end;
    }
    if (end == i_) return false;
    out->kind = Json::kNumber;
    out->number = std::strtod(s_.substr(i_, end - i_).c_str(), nullptr);
    i_ = end;
    return true;
  }

  std::string s_;
  size_t i_ = 0;
};

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
  std::string header = "{";
  std::vector<at::Tensor> cpu;
  int64_t offset = 0;
  if (!metadata.empty()) {
    JsonObject meta;
    for (const auto& [k, v] : metadata) meta.Add(k, v);
    header += JsonQuote("__metadata__") + ":" + meta.str();
  }
  for (const auto& [name, t] : tensors) {
    const char* dtype = nullptr;
    for (const auto& d : kDtypes) {
      if (d.type == t.scalar_type()) dtype = d.name;
    }
    if (dtype == nullptr) {
      return Invalid("safetensors: tensor " + name + " has unsupported dtype " +
                     std::string(c10::toString(t.scalar_type())));
    }
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    std::string shape = "[";
    for (int64_t i = 0; i < c.dim(); ++i) {
      if (i) shape += ",";
      shape += std::to_string(c.size(i));
    }
    shape += "]";
    const int64_t nbytes = static_cast<int64_t>(c.nbytes());
    JsonObject entry;
    entry.Add("dtype", dtype)
        .AddRaw("shape", shape)
        .AddRaw("data_offsets", "[" + std::to_string(offset) + "," +
                                    std::to_string(offset + nbytes) + "]");
    if (header.size() > 1) header += ",";
    header += JsonQuote(name) + ":" + entry.str();
    offset += nbytes;
    cpu.push_back(std::move(c));
  }
  header += "}";
  while (header.size() % 8 != 0) header += ' ';
  std::string file;
  file.reserve(8 + header.size() + offset);
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i)
    file.push_back(static_cast<char>((n >> (8 * i)) & 0xFF));
  file += header;
  for (const at::Tensor& c : cpu) {
    file.append(static_cast<const char*>(c.data_ptr()), c.nbytes());
  }
  return WriteFileAtomically(path, file);
}

TrainStatus ReadSafetensors(const std::string& path, NamedTensors* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Invalid("safetensors file " + path + " cannot be opened");
  std::string bytes((std::istreambuf_iterator<char>(in)),
                    std::istreambuf_iterator<char>());
  if (bytes.size() < 8) {
    return Invalid("safetensors file " + path + " is truncated (no header)");
  }
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) {
    n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  }
  if (n > bytes.size() - 8) {
    return Invalid("safetensors file " + path + " is truncated (header of " +
                   std::to_string(n) + " bytes)");
  }
  Json root;
  JsonParser parser(bytes.substr(8, n));
  if (!parser.Parse(&root) || root.kind != Json::kObject) {
    return Invalid("safetensors file " + path + " has a malformed JSON header");
  }
  const size_t data_start = 8 + n;
  const size_t data_size = bytes.size() - data_start;
  for (const auto& [name, v] : root.members) {
    if (name == "__metadata__") continue;
    const Json* dtype = v.Get("dtype");
    const Json* shape = v.Get("shape");
    const Json* offs = v.Get("data_offsets");
    if (!dtype || !shape || !offs || dtype->kind != Json::kString ||
        shape->kind != Json::kArray || offs->kind != Json::kArray ||
        offs->items.size() != 2) {
      return Invalid("safetensors file " + path + ": entry " + name +
                     " lacks dtype/shape/data_offsets");
    }
    at::ScalarType type = at::kFloat;
    bool known = false;
    for (const auto& d : kDtypes) {
      if (dtype->str == d.name) type = d.type, known = true;
    }
    if (!known) {
      return Invalid("safetensors file " + path + ": entry " + name +
                     " has unsupported dtype " + dtype->str);
    }
    std::vector<int64_t> sizes;
    for (const Json& d : shape->items)
      sizes.push_back(static_cast<int64_t>(d.number));
    const auto begin = static_cast<size_t>(offs->items[0].number);
    const auto end = static_cast<size_t>(offs->items[1].number);
    at::Tensor t = at::empty(sizes, at::TensorOptions().dtype(type));
    if (end < begin || end > data_size || end - begin != t.nbytes()) {
      return Invalid("safetensors file " + path + ": entry " + name +
                     " has data_offsets outside the file or not matching its "
                     "shape (truncated?)");
    }
    std::memcpy(t.data_ptr(), bytes.data() + data_start + begin, t.nbytes());
    out->emplace_back(name, t);
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
