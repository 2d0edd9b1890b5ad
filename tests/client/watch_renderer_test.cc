// WatchRenderer without gRPC: feed events, check the strings.
#include "client/watch_renderer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "client/render.h"
#include "tests/client/fake_scheduler.h"

namespace halftime {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;
using testing::MakeRunEvents;
using ::testing::Not;
using ::testing::StartsWith;

const absl::Time kStart = absl::FromUnixSeconds(1700000000);

WatchRenderer::Options Terminal(int columns = 120) {
  WatchRenderer::Options options;
  options.terminal = true;
  options.columns = columns;
  options.min_redraw_interval = absl::ZeroDuration();
  return options;
}

// Feeds `events` one second apart; returns everything written.
std::string Feed(WatchRenderer& renderer,
                 const std::vector<v1::JobEvent>& events) {
  std::string out;
  absl::Time now = kStart;
  for (const v1::JobEvent& event : events) {
    out += renderer.OnEvent(event, now);
    now += absl::Seconds(1);
  }
  return out;
}

// Every escape sequence is "\x1b[K" (erase line), and nothing else.
bool OnlyEraseLineEscapes(const std::string& text) {
  for (std::size_t at = text.find('\x1b'); at != std::string::npos;
       at = text.find('\x1b', at + 1)) {
    if (text.compare(at, 3, "\x1b[K") != 0) return false;
  }
  return true;
}

TEST(WatchRendererTest, TerminalRedrawsOneProgressLine) {
  WatchRenderer renderer("j-1", Terminal());
  const auto events = MakeRunEvents("j-1", 10, v1::JOB_STATE_SUCCEEDED);
  // Up to the fifth report (events 1-3 are state changes).
  std::string out = Feed(renderer, {events.begin(), events.begin() + 8});
  const std::size_t last_redraw = out.rfind("\r\x1b[K");
  ASSERT_NE(last_redraw, std::string::npos);
  const std::string line = out.substr(last_redraw + 4);
  EXPECT_THAT(line, StartsWith("["));
  EXPECT_THAT(line, HasSubstr("5/10"));
  EXPECT_THAT(line, HasSubstr(" 50%"));
  EXPECT_THAT(line, HasSubstr("ETA 1.2s"));
  EXPECT_THAT(line, HasSubstr("loss 3.5000"));
  EXPECT_THAT(line, HasSubstr("scale 32768"));
  EXPECT_THAT(line, HasSubstr("ovf 1"));
  EXPECT_THAT(line, HasSubstr("12.3k tok/s"));
  EXPECT_THAT(line, HasSubstr("fp16-mixed"));
  EXPECT_THAT(line, Not(HasSubstr("\n")));
  EXPECT_EQ(line, renderer.ProgressLine());
  EXPECT_TRUE(OnlyEraseLineEscapes(out));
}

TEST(WatchRendererTest, TerminalPrintsEventsAboveTheBar) {
  WatchRenderer renderer("j-1", Terminal());
  const auto events = MakeRunEvents("j-1", 10, v1::JOB_STATE_SUCCEEDED);
  Feed(renderer, {events.begin(), events.begin() + 8});  // Through step 5.
  ASSERT_EQ(events[8].kind(), v1::JOB_EVENT_KIND_CHECKPOINT);
  const std::string out = renderer.OnEvent(events[8], kStart);
  // Clear the bar, print the event on its own line, redraw the bar.
  EXPECT_THAT(out, StartsWith("\r\x1b[K"));
  EXPECT_THAT(out, HasSubstr("checkpoint stored at step 5\n"));
  EXPECT_THAT(out, EndsWith(renderer.ProgressLine()));
}

TEST(WatchRendererTest, TerminalFinishKeepsTheBarAndPrintsTheOutcome) {
  WatchRenderer renderer("j-1", Terminal());
  Feed(renderer, MakeRunEvents("j-1", 10, v1::JOB_STATE_SUCCEEDED));
  const std::string out = renderer.OnFinished(nullptr);
  EXPECT_THAT(out, StartsWith("\r\x1b[K["));
  EXPECT_THAT(out, HasSubstr("10/10"));
  EXPECT_THAT(out, EndsWith("job j-1 succeeded: 10/10 steps, final loss "
                            "3.0000, eval loss 3.5000\n"));
}

TEST(WatchRendererTest, ProgressLineFitsNarrowTerminals) {
  for (int columns : {30, 40, 60, 80, 120, 200}) {
    WatchRenderer renderer("j-1", Terminal(columns));
    Feed(renderer, MakeRunEvents("j-1", 10, v1::JOB_STATE_SUCCEEDED));
    const std::string line = renderer.ProgressLine();
    EXPECT_LE(DisplayWidth(line), std::max(20, columns - 1)) << line;
    EXPECT_THAT(line, HasSubstr("10/10")) << columns;
    EXPECT_THAT(line, HasSubstr("loss 3.0000")) << columns;
  }
}

TEST(WatchRendererTest, TerminalThrottlesRedraws) {
  WatchRenderer::Options options = Terminal();
  options.min_redraw_interval = absl::Seconds(5);
  WatchRenderer renderer("j-1", options);
  const std::string out =
      Feed(renderer, MakeRunEvents("j-1", 10, v1::JOB_STATE_SUCCEEDED));
  // Steps 1, 6 (5 s later) and the last one.
  EXPECT_THAT(out, HasSubstr("1/10"));
  EXPECT_THAT(out, Not(HasSubstr("2/10")));
  EXPECT_THAT(out, HasSubstr("10/10"));
}

TEST(WatchRendererTest, PlainModeHasNoControlCharacters) {
  WatchRenderer::Options options;
  options.report_every_steps = 4;
  WatchRenderer renderer("j-1", options);
  std::string out =
      Feed(renderer, MakeRunEvents("j-1", 10, v1::JOB_STATE_FAILED));
  out += renderer.OnNotice("lost the connection; reconnecting", kStart);
  out += renderer.OnFinished(nullptr);
  for (char c : out) {
    EXPECT_TRUE(c == '\n' || static_cast<unsigned char>(c) >= 0x20)
        << static_cast<int>(c);
  }
  // Reports at steps 1, 5, 9 and 10 (the last).
  EXPECT_THAT(out, HasSubstr("step 1/10 "));
  EXPECT_THAT(out, Not(HasSubstr("step 2/10")));
  EXPECT_THAT(out, HasSubstr("step 5/10 "));
  EXPECT_THAT(out, HasSubstr("step 9/10 "));
  EXPECT_THAT(out, HasSubstr("step 10/10 "));
  EXPECT_THAT(out, HasSubstr("job j-1 failed: loss scale stuck at min_scale "
                             "for 10 steps (at step 10/10)\n"));
}

TEST(WatchRendererTest, PlainModePrintsAReportEveryFewSeconds) {
  WatchRenderer::Options options;
  options.report_every_steps = 1000;
  options.report_interval = absl::Seconds(3);
  WatchRenderer renderer("j-1", options);
  const std::string out =
      Feed(renderer, MakeRunEvents("j-1", 10, v1::JOB_STATE_SUCCEEDED));
  EXPECT_THAT(out, HasSubstr("step 1/10 "));
  EXPECT_THAT(out, Not(HasSubstr("step 2/10 ")));
  EXPECT_THAT(out, HasSubstr("step 4/10 "));  // Three seconds after step 1.
}

TEST(WatchRendererTest, DescribesResumesFallbacksAndNotices) {
  WatchRenderer renderer("j-1", WatchRenderer::Options{});
  auto events = MakeRunEvents("j-1", 10, v1::JOB_STATE_SUCCEEDED);
  events.resize(10);  // Through the checkpoint at step 5 and step 6.
  int64_t sequence = 10;
  auto add = [&](v1::JobEventKind kind, v1::JobState state, int attempt,
                 const std::string& worker, const std::string& message) {
    v1::JobEvent& event = events.emplace_back();
    event.set_sequence(++sequence);
    event.set_kind(kind);
    event.set_state(state);
    event.set_attempt(attempt);
    event.set_worker(worker);
    event.set_message(message);
  };
  add(v1::JOB_EVENT_KIND_STATE_CHANGED, v1::JOB_STATE_QUEUED, 2, "",
      "worker cpu-worker-1 lost");
  add(v1::JOB_EVENT_KIND_STATE_CHANGED, v1::JOB_STATE_RUNNING, 2, "gpu-2", "");
  add(v1::JOB_EVENT_KIND_FALLBACK, v1::JOB_STATE_RUNNING, 2, "",
      "fp16-mixed overflowed at min_scale; continuing in bf16-mixed");
  add(v1::JOB_EVENT_KIND_NOTICE, v1::JOB_STATE_RUNNING, 2, "",
      "overflow storm: 12 of the last 50 steps\x1b[31m overflowed\n");
  add(v1::JOB_EVENT_KIND_STATE_CHANGED, v1::JOB_STATE_QUEUED, 3, "",
      "worker gpu-2 lost");
  add(v1::JOB_EVENT_KIND_QUEUE_REASON, v1::JOB_STATE_QUEUED, 3, "",
      "no worker runs bf16-mixed natively; a worker emulates it");
  const std::string out = Feed(renderer, events);
  EXPECT_THAT(out, HasSubstr("waiting: no worker runs bf16-mixed natively; a "
                             "worker emulates it\n"));
  EXPECT_EQ(renderer.queue_reason(),
            "no worker runs bf16-mixed natively; a worker emulates it");
  EXPECT_THAT(out, HasSubstr("requeued for attempt 2: worker cpu-worker-1 "
                             "lost"));
  EXPECT_THAT(out, HasSubstr("resumed on worker gpu-2 at attempt 2 from "
                             "step 5"));
  EXPECT_THAT(out, HasSubstr("precision fallback: fp16-mixed overflowed"));
  EXPECT_THAT(out, HasSubstr("overflow storm: 12 of the last 50 steps [31m "
                             "overflowed \n"));
  EXPECT_THAT(out, Not(HasSubstr("\x1b")));
}

TEST(WatchRendererTest, IgnoresEventsAlreadySeen) {
  WatchRenderer renderer("j-1", WatchRenderer::Options{});
  const auto events = MakeRunEvents("j-1", 10, v1::JOB_STATE_SUCCEEDED);
  const std::string first = Feed(renderer, events);
  EXPECT_EQ(renderer.last_sequence(), static_cast<int64_t>(events.size()));
  EXPECT_EQ(Feed(renderer, events), "");
  EXPECT_EQ(renderer.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_THAT(first, HasSubstr("assigned to worker cpu-worker-1"));
}

TEST(WatchRendererTest, FinalJobSuppliesReasonAndTime) {
  WatchRenderer renderer("j-1", WatchRenderer::Options{});
  Feed(renderer, MakeRunEvents("j-1", 4, v1::JOB_STATE_FAILED));
  v1::Job job;
  job.set_state(v1::JOB_STATE_FAILED);
  job.set_failure_reason("trainer exited with signal 9 (out of memory?)");
  EXPECT_EQ(renderer.OnFinished(&job),
            "job j-1 failed: trainer exited with signal 9 (out of memory?) "
            "(at step 4/4)\n");
}

TEST(WatchRendererTest, InterruptLeavesTheBar) {
  WatchRenderer renderer("j-7", Terminal());
  const auto events = MakeRunEvents("j-7", 10, v1::JOB_STATE_SUCCEEDED);
  Feed(renderer, {events.begin(), events.begin() + 6});
  const std::string out = renderer.OnInterrupted();
  EXPECT_THAT(out, StartsWith("\r\x1b[K["));
  EXPECT_THAT(out, EndsWith("\nstopped watching; the job keeps running: "
                            "halftime watch j-7\n"));
}

}  // namespace
}  // namespace halftime
