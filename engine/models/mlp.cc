// The built-in MLP: three Linear layers with GELU, for tensor data.

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include "engine/models/common.h"
#include "engine/models/families.h"
#include "engine/models/kernels.h"

namespace halftime::engine {
namespace {

struct MlpNet : torch::nn::Module {
  MlpNet(int64_t in, int64_t hidden, int64_t out)
      : fc1(register_module("fc1", torch::nn::Linear(in, hidden))),
        fc2(register_module("fc2", torch::nn::Linear(hidden, hidden))),
        fc3(register_module("fc3", torch::nn::Linear(hidden, out))) {}
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor h =
        Gelu(Linear(x.reshape({x.size(0), -1}), fc1->weight, fc1->bias));
    h = Gelu(Linear(h, fc2->weight, fc2->bias));
    return Linear(h, fc3->weight, fc3->bias);
  }
  torch::nn::Linear fc1, fc2, fc3;
};

class MlpModel : public TrainModel {
 public:
  MlpModel(int64_t in, int64_t hidden, int64_t out, LossKind loss)
      : net_(std::make_shared<MlpNet>(in, hidden, out)), loss_(loss) {}
  at::Tensor Output(const Batch& batch) override {
    at::Tensor x = batch.inputs.to(net_->fc1->weight.scalar_type());
    return net_->forward(x);
  }
  LossKind loss_kind() const override { return loss_; }
  std::vector<std::pair<std::string, at::Tensor>> NamedParameters() override {
    return ModuleParams(*net_);
  }
  void To(at::Device device, at::ScalarType dtype) override {
    net_->to(device, dtype);
  }
  double TrainFlopsPerToken(int64_t) const override {
    return 6.0 * static_cast<double>(CountParams(ModuleParams(*net_)));
  }

 private:
  std::shared_ptr<MlpNet> net_;
  LossKind loss_;
};

}  // namespace

std::unique_ptr<TrainModel> MakeMlp(int64_t in, int64_t hidden, int64_t out,
                                    LossKind loss) {
  return std::make_unique<MlpModel>(in, hidden, out, loss);
}

}  // namespace halftime::engine
