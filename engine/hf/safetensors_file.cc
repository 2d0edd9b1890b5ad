#include "engine/hf/safetensors_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace halftime::engine::hf {
namespace {

TrainStatus Invalid(const std::string& msg) {
  return TrainStatus::Error(TrainStatus::kInvalidInput, msg);
}

}  // namespace

at::ScalarType SafetensorsFile::ScalarTypeOf(DType dtype) {
  switch (dtype) {
    case DType::kF64:
      return at::kDouble;
    case DType::kF32:
      return at::kFloat;
    case DType::kF16:
      return at::kHalf;
    case DType::kBF16:
      return at::kBFloat16;
    case DType::kI64:
      return at::kLong;
    case DType::kI32:
      return at::kInt;
    case DType::kI16:
      return at::kShort;
    case DType::kI8:
      return at::kChar;
    case DType::kU8:
      return at::kByte;
    case DType::kBool:
      return at::kBool;
  }
  return at::kFloat;
}

bool SafetensorsFile::DTypeFor(at::ScalarType type, DType* out) {
  for (DType d :
       {DType::kF64, DType::kF32, DType::kF16, DType::kBF16, DType::kI64,
        DType::kI32, DType::kI16, DType::kI8, DType::kU8, DType::kBool}) {
    if (ScalarTypeOf(d) == type) {
      *out = d;
      return true;
    }
  }
  return false;
}

TrainStatus SafetensorsFile::Open(const std::string& path,
                                  std::unique_ptr<SafetensorsFile>* out) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f->fd_ < 0) {
    return Invalid("safetensors file " + path +
                   " cannot be opened: " + std::strerror(errno));
  }
  struct stat st;
  if (::fstat(f->fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    return Invalid("safetensors file " + path + " is not a regular file");
  }
  f->size_ = static_cast<size_t>(st.st_size);
  if (f->size_ > 0) {
    f->base_ = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, f->fd_, 0);
    if (f->base_ == MAP_FAILED) {
      f->base_ = nullptr;
      return Invalid("safetensors file " + path +
                     " cannot be mapped: " + std::strerror(errno));
    }
  }
  const std::string_view bytes(static_cast<const char*>(f->base_), f->size_);
  uint64_t length = 0;
  std::string error;
  if (!ReadHeaderLength(bytes, f->size_, &length, &error) ||
      !ParseSafetensorsHeader(bytes.substr(8, length), f->size_, &f->header_,
                              &error)) {
    return Invalid("safetensors file " + path + ": " + error);
  }
  for (size_t i = 0; i < f->header_.tensors.size(); ++i) {
    f->index_[f->header_.tensors[i].name] = i;
  }
  *out = std::move(f);
  return TrainStatus::Ok();
}

SafetensorsFile::~SafetensorsFile() {
  if (base_ != nullptr) ::munmap(base_, size_);
  if (fd_ >= 0) ::close(fd_);
}

const TensorEntry* SafetensorsFile::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

at::Tensor SafetensorsFile::Read(const TensorEntry& entry,
                                 c10::optional<at::ScalarType> dtype) {
  const at::ScalarType file_type = ScalarTypeOf(entry.dtype);
  // Copied rather than wrapped: tensor data in a safetensors file need not
  // be aligned for its element type.
  at::Tensor t = at::empty(entry.shape, at::TensorOptions().dtype(file_type));
  const char* src =
      static_cast<const char*>(base_) + header_.data_start + entry.begin;
  const size_t n = entry.end - entry.begin;
  if (n > 0) std::memcpy(t.data_ptr(), src, n);
  // The pages are not needed again (each tensor is read once), and a
  // model's worth of them would otherwise count in the process's RSS
  // until unmapped.
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t first = reinterpret_cast<uintptr_t>(src) & ~(page - 1);
  const uintptr_t last = reinterpret_cast<uintptr_t>(src) + n;
  if (n > 0) {
    ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
  }
  if (dtype.has_value() && *dtype != file_type) return t.to(*dtype);
  return t;
}

}  // namespace halftime::engine::hf
