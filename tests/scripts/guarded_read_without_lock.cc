// Must NOT compile under the Clang build's flags (scripts/test.sh checks):
// proof that -Wthread-safety is on and reads ABSL_GUARDED_BY.
#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

class Counter {
 public:
  int Read() const { return value_; }  // no lock held: an error

 private:
  mutable absl::Mutex mu_;
  int value_ ABSL_GUARDED_BY(mu_) = 0;
};

int main() { return Counter().Read(); }
