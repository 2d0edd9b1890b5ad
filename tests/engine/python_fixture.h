// A test fixture for the engine tests that compare against PyTorch: skips
// when /usr/bin/python3 or its torch is missing, runs one intra-op thread,
// and writes the shared fixtures (python/make_fixtures.py) into dir_.
#ifndef HALFTIME_TESTS_ENGINE_PYTHON_FIXTURE_H_
#define HALFTIME_TESTS_ENGINE_PYTHON_FIXTURE_H_

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "tests/engine/test_util.h"

namespace halftime::engine::testing {

class PythonFixtureTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!PythonTorchAvailable()) {
      GTEST_SKIP() << "/usr/bin/python3 with torch is not available";
    }
    at::set_num_threads(1);
    ASSERT_EQ(RunPython("make_fixtures.py", dir_.path()), 0);
  }

  ScratchDir dir_;
};

}  // namespace halftime::engine::testing

#endif  // HALFTIME_TESTS_ENGINE_PYTHON_FIXTURE_H_
