// Token data beyond bytes: uint32 token files, and instruction examples
// (tokenized jsonl) laid into rows one per row or packed, with the loss
// mask, positions and attention kept inside each example.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "engine/data.h"
#include "engine/model.h"
#include "engine/train.h"
#include "tests/engine/test_util.h"

namespace halftime::engine {
namespace {

using ::testing::HasSubstr;
using testing::ScratchDir;

at::Tensor Ids(std::vector<int64_t> ids) { return at::tensor(ids, at::kLong); }

std::string LittleEndian(const std::vector<uint32_t>& ids, int width) {
  std::string bytes;
  for (uint32_t v : ids) {
    for (int b = 0; b < width; ++b) {
      bytes.push_back(static_cast<char>((v >> (8 * b)) & 0xFF));
    }
  }
  return bytes;
}

TEST(TokenDataTest, Uint32FilesHoldIdsPast65535) {
  ScratchDir dir;
  std::vector<uint32_t> ids;
  for (uint32_t i = 0; i < 400; ++i) ids.push_back(100000 + (i * 7919) % 28000);
  testing::WriteBytes(dir.File("t.bin"), LittleEndian(ids, 4));
  DataOptions o;
  o.kind = DataKind::kTokens;
  o.path = dir.File("t.bin");
  o.token_dtype = TokenDtype::kUint32;
  o.seq_len = 16;
  o.shuffle = false;
  o.eval_fraction = 0.1;
  std::unique_ptr<Dataset> d;
  TrainStatus st = Dataset::Open(o, 1, 2, &d);
  ASSERT_TRUE(st.ok()) << st.message;
  EXPECT_EQ(d->max_token_id(), *std::max_element(ids.begin(), ids.end()));
  EXPECT_GT(d->max_token_id(), 65535);
  const Batch b = d->TrainBatch(0);
  for (int t = 0; t < 16; ++t) {
    EXPECT_EQ(b.inputs[0][t].item<int64_t>(), ids[t]);
    EXPECT_EQ(b.targets[0][t].item<int64_t>(), ids[t + 1]);
  }

  // The same bytes read as uint16 are other ids; a length that is not a
  // whole number of ids is refused naming the dtype.
  testing::WriteBytes(dir.File("odd.bin"), LittleEndian(ids, 4) + "xy");
  o.path = dir.File("odd.bin");
  st = Dataset::Open(o, 1, 2, &d);
  EXPECT_EQ(st.code, TrainStatus::kInvalidInput);
  EXPECT_THAT(st.message, HasSubstr("uint32"));
  EXPECT_THAT(st.message, HasSubstr("odd.bin"));
}

// Three examples: [prompt | completion] with the completion trained.
std::shared_ptr<TokenizedData> Examples() {
  auto t = std::make_shared<TokenizedData>();
  auto add = [&](std::vector<int32_t> prompt, std::vector<int32_t> answer) {
    t->starts.push_back(static_cast<int64_t>(t->ids.size()));
    for (int32_t id : prompt) {
      t->ids.push_back(id);
      t->trained.push_back(0);
    }
    for (int32_t id : answer) {
      t->ids.push_back(id);
      t->trained.push_back(1);
    }
  };
  add({1, 2, 3}, {4, 5});
  add({6, 7}, {8, 9, 10});
  add({11, 12, 13, 14}, {15});
  add({16, 17}, {18, 19});  // held out
  t->vocab_size = 32;
  return t;
}

DataOptions ExampleOptions(bool packing) {
  DataOptions o;
  o.kind = DataKind::kJsonl;
  o.tokenized = Examples();
  o.seq_len = 12;
  o.eval_fraction = 0.25;
  o.packing = packing;
  o.shuffle = false;
  return o;
}

TEST(TokenDataTest, OneExamplePerRowIsPaddedAndTrainsOnlyCompletions) {
  std::unique_ptr<Dataset> d;
  TrainStatus st = Dataset::Open(ExampleOptions(false), 1, 3, &d);
  ASSERT_TRUE(st.ok()) << st.message;
  const Batch b = d->TrainBatch(0);
  EXPECT_FALSE(b.positions.defined());
  EXPECT_EQ(b.tokens, 5 + 5 + 5);
  const int64_t I = -100;
  EXPECT_TRUE(
      at::equal(b.inputs[0], Ids({1, 2, 3, 4, 5, 0, 0, 0, 0, 0, 0, 0})));
  // Position t predicts id t + 1 where that id is a completion id.
  EXPECT_TRUE(
      at::equal(b.targets[0], Ids({I, I, 4, 5, I, I, I, I, I, I, I, I})));
  EXPECT_TRUE(
      at::equal(b.targets[1], Ids({I, 8, 9, 10, I, I, I, I, I, I, I, I})));
  EXPECT_TRUE(
      at::equal(b.targets[2], Ids({I, I, I, 15, I, I, I, I, I, I, I, I})));
  const Batch e = d->EvalBatch(0);
  EXPECT_TRUE(
      at::equal(e.targets[0], Ids({I, 18, 19, I, I, I, I, I, I, I, I, I})));
}

TEST(TokenDataTest, PackedRowsRestartPositionsAndAttentionPerExample) {
  std::unique_ptr<Dataset> d;
  TrainStatus st = Dataset::Open(ExampleOptions(true), 1, 1, &d);
  ASSERT_TRUE(st.ok()) << st.message;
  // 5 + 5 ids fit one row of 12; the third example (5) starts the next.
  const Batch b = d->TrainBatch(0);
  ASSERT_TRUE(b.positions.defined());
  EXPECT_EQ(b.tokens, 10);
  EXPECT_TRUE(
      at::equal(b.inputs[0], Ids({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 0})));
  EXPECT_TRUE(
      at::equal(b.positions[0], Ids({0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 0})));
  EXPECT_TRUE(
      at::equal(b.segments[0], Ids({0, 0, 0, 0, 0, 1, 1, 1, 1, 1, -1, -1})));
  const int64_t I = -100;
  // The first example's last id does not predict the second's first.
  EXPECT_TRUE(
      at::equal(b.targets[0], Ids({I, I, 4, 5, I, I, 8, 9, 10, I, I, I})));
  EXPECT_EQ(d->TrainBatch(1).tokens, 5);

  // A model sees each packed example as if it were alone.
  at::manual_seed(0);
  GptConfig c;
  c.n_layer = 2;
  c.n_embd = 32;
  c.n_head = 4;
  c.block_size = 16;
  c.vocab_size = 32;
  std::unique_ptr<TrainModel> model = MakeGpt(c);
  at::NoGradGuard no_grad;
  const at::Tensor packed = model->Output(b);
  for (const auto& [start, len] : {std::pair<int64_t, int64_t>{0, 5}, {5, 5}}) {
    const at::Tensor alone_ids = b.inputs.narrow(1, start, len);
    const at::Tensor alone = model->Output(Batch(alone_ids, alone_ids));
    EXPECT_TRUE(at::allclose(packed.narrow(1, start, len), alone, 1e-5, 1e-6))
        << "example at " << start;
  }
}

TEST(TokenDataTest, InstructionJobTrainsAndCountsOnlyRealTokens) {
  TrainOptions o;
  o.model.builtin = "gpt-nano";
  o.model.gpt = {2, 32, 4, 16, 0};
  o.data = ExampleOptions(true);
  o.batch_size = 2;
  o.steps = 8;
  o.threads = 1;
  o.optimizer.lr = 3e-3;
  o.eval.every_steps = 0;
  std::vector<StepReport> steps;
  TrainCallbacks cb;
  cb.on_step = [&](const StepReport& r) { steps.push_back(r); };
  TrainStatus st = Train(o, cb, nullptr);
  ASSERT_TRUE(st.ok()) << st.message;
  ASSERT_EQ(steps.size(), 8u);
  EXPECT_LT(steps.back().loss, steps.front().loss);
  // Rows of 10 and 5 real tokens: 15 per step of 2 x 12 slots.
  for (const StepReport& r : steps) {
    EXPECT_NEAR(r.tokens_per_second * r.step_seconds, 15.0, 1e-6);
  }
}

TEST(TokenDataTest, ExamplesWithNothingToTrainAreRefusedOrDropped) {
  DataOptions o = ExampleOptions(false);
  o.seq_len = 1;  // every example's first target is a prompt id
  std::unique_ptr<Dataset> d;
  TrainStatus st = Dataset::Open(o, 1, 1, &d);
  EXPECT_EQ(st.code, TrainStatus::kInvalidInput);
  EXPECT_THAT(st.message, HasSubstr("no example with a trained token"));
  o.seq_len = 3;  // the third example's completion lies past 3 tokens
  st = Dataset::Open(o, 1, 1, &d);
  ASSERT_TRUE(st.ok()) << st.message;
  EXPECT_EQ(d->dropped_examples(), 1);
}

}  // namespace
}  // namespace halftime::engine
