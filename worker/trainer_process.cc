#include "worker/trainer_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/utf8.h"

namespace halftime {
namespace {

// The only environment a trainer sees: enough for libtorch and OpenBLAS,
// nothing of the worker's (tokens, credentials, proxies). LD_LIBRARY_PATH
// passes on because it is how an operator chooses the trainers' BLAS; the
// probe then measures and reports whatever that choice gives.
std::vector<std::string> ScrubbedEnvironment(
    const std::vector<std::string>& extra, const std::string& home) {
  std::vector<std::string> env = {"PATH=/usr/local/bin:/usr/bin:/bin",
                                  "LANG=C.UTF-8", absl::StrCat("HOME=", home)};
  for (const char* keep : {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                           "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES", "TZ"}) {
    if (const char* value = std::getenv(keep)) {
      env.push_back(absl::StrCat(keep, "=", value));
    }
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

}  // namespace

std::string ExitInfo::Describe() const {
  if (signal != 0) {
    const char* name = sigabbrev_np(signal);
    std::string text = absl::StrCat("killed by signal ", signal, " (SIG",
                                    name ? name : "?", ")");
    if (stalled) {
      absl::StrAppend(&text, " by the stall watchdog");
    } else if (signal == SIGKILL) {
      absl::StrAppend(&text, "; out of memory?");
    }
    return text;
  }
  return absl::StrCat("exit code ", exit_code);
}

TrainerProcess::TrainerProcess(const Options& options, Callbacks callbacks)
    : options_(options), callbacks_(std::move(callbacks)) {}

absl::StatusOr<std::unique_ptr<TrainerProcess>> TrainerProcess::Start(
    const Options& options, Callbacks callbacks) {
  if (access(options.binary.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("trainer binary ", options.binary,
                     " is not executable: ", std::strerror(errno)));
  }
  std::unique_ptr<TrainerProcess> process(
      new TrainerProcess(options, std::move(callbacks)));
  int events[2], errors[2], acks[2] = {-1, -1};
  if (pipe2(events, O_CLOEXEC) != 0 || pipe2(errors, O_CLOEXEC) != 0 ||
      (options.acknowledgements &&
       socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, acks) != 0)) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  process->acks_fd_ = acks[1];
  process->stderr_log_fd_ =
      open(options.stderr_log.c_str(),
           O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);

  std::vector<std::string> argv_storage = {options.binary};
  argv_storage.insert(argv_storage.end(), options.args.begin(),
                      options.args.end());
  argv_storage.push_back("--events-fd");
  argv_storage.push_back("3");
  if (options.acknowledgements) {
    argv_storage.push_back("--acks-fd");
    argv_storage.push_back("4");
  }
  std::vector<char*> argv;
  for (auto& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_storage =
      ScrubbedEnvironment(options.env, options.work_dir);
  std::vector<char*> envp;
  for (auto& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);

  const pid_t pid = fork();
  if (pid < 0) {
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    setpgid(0, 0);
    // gRPC ignores SIGPIPE in the worker, and ignored signals survive exec.
    // Restore it so a trainer whose worker died (its events pipe closed)
    // stops at its next report instead of training on as an orphan.
    signal(SIGPIPE, SIG_DFL);
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, STDIN_FILENO);
    dup2(devnull, STDOUT_FILENO);
    dup2(errors[1], STDERR_FILENO);
    // Via descriptors above 4 first: a pipe end may itself be fd 3 or 4.
    // Those copies close at exec; dup2 clears O_CLOEXEC on fds 3 and 4.
    const int events_out = fcntl(events[1], F_DUPFD_CLOEXEC, 10);
    const int acks_in = acks[0] >= 0 ? fcntl(acks[0], F_DUPFD_CLOEXEC, 10) : -1;
    dup2(events_out, 3);
    if (acks_in >= 0) dup2(acks_in, 4);
    if (chdir(options.work_dir.c_str()) != 0) _exit(126);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  close(events[1]);
  close(errors[1]);
  if (acks[0] >= 0) close(acks[0]);
  process->pid_ = pid;
  TrainerProcess* self = process.get();
  process->reader_ = std::thread(
      [self, e = events[0], s = errors[0]] { self->ReadLoop(e, s); });
  return process;
}

TrainerProcess::~TrainerProcess() {
  std::thread killer;
  {
    absl::MutexLock lock(&mu_);
    if (!exited_ && pid_ > 0) kill(pid_, SIGKILL);
    // No Stop() starts a killer from now on.
    stop_requested_ = true;
    killer = std::move(killer_);
  }
  if (reader_.joinable()) reader_.join();
  if (killer.joinable()) killer.join();
  if (stderr_log_fd_ >= 0) close(stderr_log_fd_);
  if (acks_fd_ >= 0) close(acks_fd_);
}

absl::Status TrainerProcess::Acknowledge(const std::string& line) {
  if (acks_fd_ < 0) {
    return absl::FailedPreconditionError("no acknowledgement socket");
  }
  const std::string text = line + "\n";
  absl::MutexLock lock(&mu_);
  std::size_t written = 0;
  while (written < text.size()) {
    // A socket, so that a gone reader is EPIPE and never a SIGPIPE.
    const ssize_t n = send(acks_fd_, text.data() + written,
                           text.size() - written, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::UnavailableError(
          absl::StrCat("trainer gone: ", std::strerror(errno)));
    }
    written += static_cast<std::size_t>(n);
  }
  return absl::OkStatus();
}

std::string ToValidUtf8(const std::string& text, std::size_t max_bytes) {
  return utf8::ToValid(text, max_bytes);
}

void TrainerProcess::AppendStderr(const std::string& chunk) {
  if (stderr_log_fd_ >= 0) {
    ssize_t ignored = write(stderr_log_fd_, chunk.data(), chunk.size());
    (void)ignored;
  }
  absl::MutexLock lock(&mu_);
  stderr_partial_ += chunk;
  std::size_t start = 0, nl;
  while ((nl = stderr_partial_.find_first_of("\n\r", start)) !=
         std::string::npos) {
    std::string line = stderr_partial_.substr(start, nl - start);
    // Progress redraws (\r) are noise in a failure report.
    if (!line.empty() && stderr_partial_[nl] == '\n') {
      stderr_tail_.push_back(ToValidUtf8(line, 2000));
      while (static_cast<int>(stderr_tail_.size()) >
             options_.stderr_tail_lines) {
        stderr_tail_.pop_front();
      }
    }
    start = nl + 1;
  }
  stderr_partial_.erase(0, start);
  if (stderr_partial_.size() > 8192) stderr_partial_.clear();
}

void TrainerProcess::ReadLoop(int events_fd, int stderr_fd) {
  using Clock = std::chrono::steady_clock;
  const auto stall_timeout = options_.stall_timeout;
  const bool watched = stall_timeout.count() > 0;
  Clock::time_point last_progress = Clock::now();
  bool stall_killed = false;
  std::string events_partial;
  pollfd fds[2] = {{events_fd, POLLIN, 0}, {stderr_fd, POLLIN, 0}};
  int open_fds = 2;
  char buffer[65536];
  while (open_fds > 0) {
    int timeout_ms = -1;
    if (watched && !stall_killed) {
      // Woken at the deadline, or hourly for very long timeouts (poll takes
      // an int of milliseconds).
      const auto left = last_progress + stall_timeout - Clock::now();
      timeout_ms = static_cast<int>(std::clamp<int64_t>(
          std::chrono::ceil<std::chrono::milliseconds>(left).count(), 0,
          3600 * 1000));
    }
    const int ready = poll(fds, 2, timeout_ms);
    if (ready < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (ready == 0) {
      if (watched && !stall_killed &&
          Clock::now() - last_progress >= stall_timeout) {
        // Killed, not stopped: SIGTERM waits for a handler that a stopped
        // or wedged trainer never runs. The whole process group (the child
        // leads its own), so that nothing it started keeps the pipes open.
        absl::MutexLock lock(&mu_);
        if (!exited_) {
          kill(-pid_, SIGKILL);
          kill(pid_, SIGKILL);
        }
        stalled_ = true;
        stall_killed = true;
      }
      continue;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) {
        continue;
      }
      ssize_t n = read(fds[i].fd, buffer, sizeof(buffer));
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
        continue;
      }
      if (i == 1) {
        AppendStderr(std::string(buffer, n));
        continue;
      }
      events_partial.append(buffer, n);
      std::size_t nl;
      bool delivered = false;
      while ((nl = events_partial.find('\n')) != std::string::npos) {
        std::string line = events_partial.substr(0, nl);
        events_partial.erase(0, nl + 1);
        if (line.empty()) continue;
        delivered = true;
        if (callbacks_.on_event) callbacks_.on_event(line);
      }
      if (delivered) last_progress = Clock::now();
      if (events_partial.size() > (1 << 20)) events_partial.clear();
    }
  }
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  ExitInfo exit;
  if (WIFEXITED(status)) exit.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) exit.signal = WTERMSIG(status);
  {
    absl::MutexLock lock(&mu_);
    exited_ = true;
    exit.stalled = stalled_ && exit.signal == SIGKILL;
  }
  if (callbacks_.on_exit) callbacks_.on_exit(exit);
}

void TrainerProcess::Stop(std::chrono::milliseconds grace) {
  absl::MutexLock lock(&mu_);
  if (exited_ || stop_requested_) return;
  stop_requested_ = true;
  kill(pid_, SIGTERM);
  killer_ = std::thread([this, grace] {
    const auto deadline = std::chrono::steady_clock::now() + grace;
    while (std::chrono::steady_clock::now() < deadline) {
      {
        absl::MutexLock lock(&mu_);
        if (exited_) return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    absl::MutexLock lock(&mu_);
    if (!exited_) kill(pid_, SIGKILL);
  });
}

void TrainerProcess::Kill() {
  absl::MutexLock lock(&mu_);
  if (!exited_) kill(pid_, SIGKILL);
}

void TrainerProcess::Wait() {
  if (reader_.joinable() && reader_.get_id() != std::this_thread::get_id()) {
    reader_.join();
  }
}

std::vector<std::string> TrainerProcess::StderrTail() const {
  absl::MutexLock lock(&mu_);
  return {stderr_tail_.begin(), stderr_tail_.end()};
}

absl::StatusOr<std::unique_ptr<TrainerRun>> ProcessLauncher::Start(
    const TrainerRunOptions& options, TrainerRunCallbacks callbacks) {
  auto process = TrainerProcess::Start(options, std::move(callbacks));
  if (!process.ok()) return process.status();
  return std::unique_ptr<TrainerRun>(std::move(*process));
}

}  // namespace halftime
