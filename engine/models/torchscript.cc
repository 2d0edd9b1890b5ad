// A TorchScript module (torch.jit.save) fine-tuned as it is: its
// parameters are trained and its output is fed to the configured loss.

#include <torch/script.h>

#include <stdexcept>

#include "engine/models/common.h"
#include "engine/models/families.h"

namespace halftime::engine {
namespace {

class TorchScriptModel : public TrainModel {
 public:
  TorchScriptModel(torch::jit::Module module, LossKind loss)
      : module_(std::move(module)), loss_(loss) {
    module_.train();
    for (const auto& p : module_.named_parameters(/*recurse=*/true)) {
      p.value.requires_grad_(true);
    }
  }
  LossKind loss_kind() const override { return loss_; }
  at::Tensor Output(const Batch& batch) override {
    at::Tensor x = batch.inputs;
    if (x.is_floating_point()) {
      for (const auto& p : module_.parameters()) {
        x = x.to(p.scalar_type());
        break;
      }
    }
    c10::IValue out = module_.forward({x});
    if (!out.isTensor()) {
      throw std::runtime_error(
          "TorchScript model must return one tensor from forward(), got " +
          std::string(out.tagKind()));
    }
    return out.toTensor();
  }
  std::vector<std::pair<std::string, at::Tensor>> NamedParameters() override {
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (const auto& p : module_.named_parameters(/*recurse=*/true)) {
      out.emplace_back(p.name, p.value);
    }
    return out;
  }
  void To(at::Device device, at::ScalarType dtype) override {
    module_.to(device, dtype);
  }
  double TrainFlopsPerToken(int64_t) const override {
    int64_t n = 0;
    for (const auto& p : module_.parameters()) n += p.numel();
    return 6.0 * static_cast<double>(n);
  }
  std::string SaveTorchScript(const std::string& path) override {
    module_.save(path);
    return "";
  }
  bool is_torchscript() const override { return true; }

 private:
  mutable torch::jit::Module module_;
  LossKind loss_;
};

}  // namespace

TrainStatus LoadTorchScript(const std::string& path, LossKind loss,
                            std::unique_ptr<TrainModel>* out) {
  torch::jit::Module m;
  try {
    m = torch::jit::load(path, at::kCPU);
  } catch (const std::exception& e) {
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    return InvalidModel("model.torchscript " + path +
                        " cannot be loaded as a TorchScript module: " + what);
  }
  if (m.parameters().size() == 0) {
    return InvalidModel("model.torchscript " + path +
                        " has no parameters to train");
  }
  *out = std::make_unique<TorchScriptModel>(std::move(m), loss);
  return TrainStatus::Ok();
}

}  // namespace halftime::engine
