// Turns a job's event stream into what `halftime watch` prints. It holds no
// I/O: feed it events, write the strings it returns. That keeps the display
// testable apart from the gRPC loop (client/watch.h).
//
// Terminal mode keeps one progress line at the bottom, redrawn in place
// ("\r" + erase-line "\x1b[K"): bar, step/total, ETA, loss, loss scale,
// overflow count, tokens/s, precision. Event lines (state changes,
// checkpoints, fallbacks, notices, savings) are printed above it. Plain
// mode (not a terminal) prints one line per event and a report line every
// few steps or seconds, with no control characters at all.
//
// Thread-safety: not thread-safe; one watcher owns it.
#ifndef HALFTIME_CLIENT_WATCH_RENDERER_H_
#define HALFTIME_CLIENT_WATCH_RENDERER_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "halftime/v1/job.pb.h"

namespace halftime {

class WatchRenderer {
 public:
  struct Options {
    // Redraw a progress line in place (stdout is a terminal).
    bool terminal = false;
    // Terminal width; the progress line stays one column narrower.
    int columns = 80;
    // Plain mode: print a report every this many steps (0: a twentieth of
    // the job)...
    int64_t report_every_steps = 0;
    // ...or when this long passed since the last printed report.
    absl::Duration report_interval = absl::Seconds(10);
    // Terminal mode: the fastest the progress line is redrawn.
    absl::Duration min_redraw_interval = absl::Milliseconds(100);
  };

  WatchRenderer(std::string job_id, Options options);

  // Takes the next event (`now` is the wall clock) and returns the text to
  // write, possibly empty. Events at or below last_sequence() are
  // duplicates from a resumed stream and render nothing.
  std::string OnEvent(const v1::JobEvent& event, absl::Time now);

  // A line of the watcher's own (e.g. "reconnecting"), above the bar.
  std::string OnNotice(absl::string_view text, absl::Time now);

  // The end: the final progress line, the outcome ("job J succeeded: ...",
  // "job J failed: REASON") and savings not shown yet. `final_job` is the
  // job as GetJob returned it after the stream ended; null when that call
  // failed (the events seen decide then).
  std::string OnFinished(const v1::Job* final_job);

  // Ctrl-C: leaves the progress line and says the job keeps running.
  std::string OnInterrupted();

  // Ends the progress line (it stays on screen) so that other output, such
  // as an error message, starts on a line of its own. Redrawing resumes
  // with the next report.
  std::string ReleaseLine();

  // The progress line as drawn in terminal mode, without control
  // characters; empty before the first report.
  std::string ProgressLine() const;

  // Highest event sequence seen; a resumed stream starts after it.
  int64_t last_sequence() const { return last_sequence_; }
  // The job's state per the events seen.
  v1::JobState state() const { return state_; }
  // Why the job waits, from its latest QUEUE_REASON event ("" when none).
  const std::string& queue_reason() const { return queue_reason_; }

 private:
  // Prints `line` above the progress line (plain mode: just the line).
  std::string Above(const std::string& line);
  // The event's line, or "" for events shown only through the bar.
  std::string EventText(const v1::JobEvent& event);
  std::string ReportLine() const;
  std::string Redraw();
  std::string Stamp(absl::Time time) const;

  const std::string job_id_;
  const Options options_;
  int64_t last_sequence_ = 0;
  v1::JobState state_ = v1::JOB_STATE_UNSPECIFIED;
  std::string queue_reason_;
  int32_t attempt_ = 0;
  std::string worker_;
  std::string end_message_;
  bool has_report_ = false;
  v1::TrainingReport report_;
  std::optional<double> eval_loss_;
  std::optional<double> eval_accuracy_;
  double step_seconds_average_ = 0;
  int64_t checkpoint_step_ = 0;
  bool savings_shown_ = false;
  bool bar_drawn_ = false;
  absl::Time last_redraw_ = absl::InfinitePast();
  int64_t last_printed_step_ = -1;
  absl::Time last_printed_time_ = absl::InfinitePast();
};

}  // namespace halftime

#endif  // HALFTIME_CLIENT_WATCH_RENDERER_H_
