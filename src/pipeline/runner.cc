#include "pipeline/runner.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <iostream>
#include <set>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fd.h"
#include "common/strings.h"
#include "common/time.h"
#include "common/utf8.h"
#include "model/box.h"
#include "pipeline/context.h"
#include "storage/layout.h"

namespace upstream::pipeline {

using json = nlohmann::json;

namespace {

constexpr size_t kMaxDocumentBytes = 64ull << 20;
constexpr size_t kMaxLineBytes = 4096;         // longer output lines are cut in the report
constexpr size_t kMaxPendingBytes = 1 << 20;   // a "line" longer than this is broken up
constexpr uint64_t kMaxResultBytes = 1 << 20;  // $UPSTREAM_OUTPUT
constexpr size_t kMaxShownResult = 400;        // structured results shown inline up to this size
constexpr size_t kMaxArtifacts = 10000;
constexpr uint64_t kMaxArtifactBytes = 1ull << 30;  // per turn: the context store is host disk
constexpr int kDefaultHead = 40, kDefaultTail = 40;
constexpr size_t kFailureLines = 10;  // a failed step's last lines shown on the terminal

// Bash steps are sourced by this wrapper. It runs them with `set -eo pipefail` (as CI runners
// do), and its exit trap reports the working directory and the exported variables the step
// changed, so the next step (or turn) starts there, like the next cell of a notebook. The
// report is NUL-separated: the directory, then +NAME=VALUE for each new or changed variable and
// -NAME for each one the step unset or stopped exporting.
constexpr const char* kBashWrapper = R"(__upstream_state=$1; __upstream_script=$2; shift 2
declare -A __upstream_env0
compgen -e > "$__upstream_state.names"; mapfile -t __upstream_names < "$__upstream_state.names"
for __upstream_v in "${__upstream_names[@]}"; do __upstream_env0[$__upstream_v]=${!__upstream_v}; done
unset __upstream_v __upstream_names
__upstream_exit() {
  local __rc=$? __v __names
  set +e
  local -A __now
  compgen -e > "$__upstream_state.names" 2>/dev/null; mapfile -t __names < "$__upstream_state.names"
  {
    printf '%s\0' "$PWD"
    [[ -e $UPSTREAM_OUTPUT ]] && printf '?output\0'
    for __v in "${__names[@]}"; do
      __now[$__v]=1
      if [[ ! -v __upstream_env0[$__v] || "${__upstream_env0[$__v]}" != "${!__v}" ]]; then
        printf '+%s=%s\0' "$__v" "${!__v}"
      fi
    done
    for __v in "${!__upstream_env0[@]}"; do [[ -v __now[$__v] ]] || printf -- '-%s\0' "$__v"; done
  } > "$__upstream_state" 2>/dev/null
  exit $__rc
}
trap __upstream_exit EXIT
set -eo pipefail
. "$__upstream_script"
)";

bool carried_name(const std::string& name) {
  static const std::set<std::string> skip = {"PWD", "OLDPWD", "SHLVL", "_"};
  return !name.empty() && !skip.count(name) && !starts_with(name, "UPSTREAM_") &&
         !starts_with(name, "__upstream");
}

void set_env(std::vector<std::pair<std::string, std::string>>& env, const std::string& k,
             const std::string& v) {
  for (auto& e : env)
    if (e.first == k) {
      e.second = v;
      return;
    }
  env.emplace_back(k, v);
}

bool plain_relative_path(const std::string& p) {
  if (p.empty() || p[0] == '/') return false;
  for (const auto& c : split(p, '/'))
    if (c.empty() || c == "." || c == "..") return false;
  return true;
}

std::string seconds_text(int64_t ms) {
  char buf[32];
  if (ms < 60'000) {
    std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ms) / 1000.0);
    return buf;
  }
  return format_duration_ms(static_cast<uint64_t>(ms));
}

// --- output of one step: the whole of it to a log file, a head and a tail in memory ----------

class OutputCollector {
 public:
  OutputCollector(const std::string& log_path, int head, int tail)
      : log_(open_or_throw(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)),
        head_max_(static_cast<size_t>(std::max(head, 0))),
        tail_max_(static_cast<size_t>(std::max(tail, 0))) {}

  void add(Stream s, std::string_view data) {
    bytes_ += data.size();
    std::string& pending = s == Stream::stdout_ ? out_ : err_;
    size_t start = 0;
    for (size_t i = 0; i < data.size(); i++) {
      if (data[i] != '\n') continue;
      pending.append(data.substr(start, i - start));
      line(s, pending);
      pending.clear();
      start = i + 1;
    }
    pending.append(data.substr(start));
    if (pending.size() > kMaxPendingBytes) {
      line(s, pending);
      pending.clear();
    }
  }

  void finish() {
    if (!out_.empty()) line(Stream::stdout_, out_);
    if (!err_.empty()) line(Stream::stderr_, err_);
    out_.clear();
    err_.clear();
    flush();
  }

  // An error of upstream's own, shown like stderr output.
  void note(const std::string& text) { line(Stream::stderr_, "upstream: " + text); }

  void fill(StepReport& r, const std::string& log_shown_as) const {
    r.lines.assign(head_.begin(), head_.end());
    r.cut_at = head_.size();
    r.cut_lines = lines_ - head_.size() - tail_.size();
    r.lines.insert(r.lines.end(), tail_.begin(), tail_.end());
    if (r.cut_lines) r.cut_note = log_shown_as;
  }
  uint64_t lines() const { return lines_; }
  uint64_t bytes() const { return bytes_; }

 private:
  void line(Stream s, std::string_view raw) {
    lines_++;
    const char* prefix = s == Stream::stderr_ ? "! " : "";
    buf_ += prefix;
    buf_.append(raw);
    buf_ += '\n';
    if (buf_.size() >= (64 << 10)) flush();
    if (head_.size() < head_max_ || tail_max_ > 0) {
      std::string shown = clean_output_line(raw.substr(0, kMaxLineBytes));
      if (raw.size() > kMaxLineBytes) shown += " [... line cut at 4 KiB]";
      shown = prefix + shown;
      if (head_.size() < head_max_) {
        head_.push_back(std::move(shown));
      } else {
        tail_.push_back(std::move(shown));
        if (tail_.size() > tail_max_) tail_.pop_front();
      }
    }
  }
  void flush() {
    if (buf_.empty()) return;
    try {
      write_all(log_.get(), buf_);
    } catch (const Error&) {
      // A full disk loses the log, not the run; the report still has the head and tail.
    }
    buf_.clear();
  }

  UniqueFd log_;
  size_t head_max_, tail_max_;
  std::string out_, err_, buf_;
  std::vector<std::string> head_;
  std::deque<std::string> tail_;
  uint64_t lines_ = 0, bytes_ = 0;
};

// --- progress ----------------------------------------------------------------------------------

// What a run shows as it goes. On a terminal a spinner, else plain lines; with --progress json
// one JSON event per line (what POST /v1/pipelines streams): step_start, output (with -v),
// step_end, progress (every other line) and summary. An event carries the human line the plain
// display shows as "line" (when it shows one), so printing every line field is the plain view.
class Progress {
 public:
  // Lines go to standard error when standard output carries the report.
  Progress(const std::string& mode, bool verbose, size_t label_width, bool to_stderr)
      : out_(to_stderr ? std::cerr : std::cout),
        verbose_(verbose),
        width_(std::min<size_t>(label_width + 3, 64)) {
    if (mode == "none")
      mode_ = Mode::none;
    else if (mode == "json")
      mode_ = Mode::json;
    else if (mode == "plain" || !::isatty(to_stderr ? 2 : 1) || verbose)
      mode_ = Mode::plain;
    else
      mode_ = Mode::tty;
  }
  bool spinning() const { return mode_ == Mode::tty; }

  void message(const std::string& text) {
    if (mode_ == Mode::json) return emit({{"type", "progress"}, {"line", text}});
    if (mode_ == Mode::none) return;
    clear();
    out_ << text << std::endl;
  }
  // The run's last line, with its figures for the json view.
  void summary(const std::string& text, json fields) {
    if (mode_ != Mode::json) return message(text);
    fields["type"] = "summary";
    fields["line"] = text;
    emit(fields);
  }

  void start(const Step& s) {
    label_ = "Step " + std::to_string(s.index) + ": " + s.name;
    started_ = mono_ms();
    frame_ = 0;
    if (mode_ == Mode::json) {
      json ev = {{"type", "step_start"}, {"index", s.index}, {"name", s.name}, {"lang", s.lang}};
      if (verbose_) ev["line"] = "== " + label_;
      emit(ev);
    } else if (mode_ == Mode::tty) {
      draw();
    } else if (verbose_ && mode_ == Mode::plain) {
      out_ << "== " << label_ << std::endl;
    }
  }
  void tick() {
    if (mode_ == Mode::tty) draw();
  }
  // A step's output as it comes, with -v: to the terminal as it is (standard output, unless
  // that carries the report), or as output events.
  void output(const Step& s, Stream st, std::string_view data, bool report_to_stdout) {
    if (mode_ != Mode::json) {
      try {
        write_all(st == Stream::stdout_ && !report_to_stdout ? 1 : 2, data.data(), data.size());
      } catch (const Error&) {
      }
      return;
    }
    Utf8Joiner& j = st == Stream::stdout_ ? joiners_[0] : joiners_[1];
    std::string text = j.take(data);
    if (!text.empty()) emit_output(s, st, text);
  }
  // `fields`: status, exit_code, signal, duration_ms (for the json view).
  void end(const Step& s, const std::string& outcome, json fields = json::object()) {
    std::string label = "Step " + std::to_string(s.index) + ": " + s.name;
    if (mode_ == Mode::json) {
      for (int i : {0, 1})
        if (std::string rest = joiners_[i].rest(); !rest.empty())
          emit_output(s, i == 0 ? Stream::stdout_ : Stream::stderr_, rest);
      fields["type"] = "step_end";
      fields["index"] = s.index;
      fields["name"] = s.name;
      fields["line"] = dotted(label) + ' ' + outcome;
      return emit(fields);
    }
    if (mode_ == Mode::none) return;
    clear();
    out_ << dotted(label) << ' ' << outcome << std::endl;
  }
  // Lines shown under a step's outcome (a failed step's last output, when -v did not show it).
  void detail(const std::vector<std::string>& lines) {
    if (mode_ == Mode::json) {
      for (const auto& l : lines) message("    " + l);
      return;
    }
    if (mode_ == Mode::none) return;
    clear();
    for (const auto& l : lines) out_ << "    " << l << '\n';
    out_ << std::flush;
  }
  bool verbose() const { return verbose_; }

 private:
  enum class Mode { tty, plain, none, json };
  void emit(const json& ev) {
    // Names and lines come from the document and the box: not always UTF-8.
    out_ << ev.dump(-1, ' ', false, json::error_handler_t::replace) << std::endl;
  }
  void emit_output(const Step& s, Stream st, const std::string& text) {
    emit({{"type", "output"},
          {"index", s.index},
          {"stream", st == Stream::stdout_ ? "stdout" : "stderr"},
          {"data", text}});
  }
  std::string dotted(const std::string& label) const {
    size_t cols = label.size();  // bytes; names are mostly ASCII
    size_t dots = cols + 3 <= width_ ? width_ - cols : 2;
    return label + ' ' + std::string(dots < 2 ? 2 : dots - 1, '.');
  }
  void draw() {
    static const char* frames[] = {"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"};
    out_ << "\r\033[K" << frames[frame_++ % 10] << ' ' << label_ << "  "
         << seconds_text(mono_ms() - started_) << std::flush;
    drawn_ = true;
  }
  void clear() {
    if (drawn_) out_ << "\r\033[K" << std::flush;
    drawn_ = false;
  }

  std::ostream& out_;
  Mode mode_ = Mode::plain;
  bool verbose_;
  size_t width_;
  std::string label_;
  int64_t started_ = 0;
  unsigned frame_ = 0;
  bool drawn_ = false;
  Utf8Joiner joiners_[2];
};

// Signals that end the run (the running step is killed first), and a timer for the spinner, on
// one descriptor the exec's wait can watch.
class RunEvents {
 public:
  explicit RunEvents(bool timer) {
    sigemptyset(&set_);
    for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set_, s);
    ::sigprocmask(SIG_BLOCK, &set_, &old_);
    sig_.reset(::signalfd(-1, &set_, SFD_CLOEXEC | SFD_NONBLOCK));
    ep_.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!sig_ || !ep_) throw_sys("signalfd");
    add(sig_.get());
    if (timer) {
      timer_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
      if (timer_) {
        itimerspec its{{0, 100'000'000}, {0, 100'000'000}};
        ::timerfd_settime(timer_.get(), 0, &its, nullptr);
        add(timer_.get());
      }
    }
  }
  ~RunEvents() { ::sigprocmask(SIG_SETMASK, &old_, nullptr); }
  int fd() const { return ep_.get(); }

  // Drains what is pending: returns a terminating signal if one came; `ticked` says whether the
  // timer fired.
  int poll(bool& ticked) {
    ticked = false;
    if (timer_) {
      uint64_t n;
      if (::read(timer_.get(), &n, sizeof n) == sizeof n) ticked = true;
    }
    signalfd_siginfo si;
    while (::read(sig_.get(), &si, sizeof si) == sizeof si)
      if (!signal_) signal_ = static_cast<int>(si.ssi_signo);
    return signal_;
  }
  int signal() const { return signal_; }

 private:
  void add(int fd) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    ::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, fd, &ev);
  }
  sigset_t set_{}, old_{};
  UniqueFd sig_, timer_, ep_;
  int signal_ = 0;
};

std::string script_name(const Step& s) {
  const char* ext = s.runner == "bash" ? ".sh" : s.runner == "python3" ? ".py" : ".js";
  return std::string(kBoxRunDir) + "/step-" + std::to_string(s.index) + ext;
}

std::vector<std::string> step_argv(const Step& s) {
  std::string script = script_name(s);
  if (s.runner == "bash")
    return {"bash",
            "--noprofile",
            "--norc",
            "-c",
            kBashWrapper,
            "upstream-step",
            std::string(kBoxRunDir) + "/state-" + std::to_string(s.index),
            script};
  if (s.runner == "python3") return {"python3", script};
  return {"node", script};
}

}  // namespace

std::string write_report(const RunOptions& opts, const Document& doc, const std::string& report,
                         const std::string& run_id, bool& diverted) {
  diverted = false;  // set when the document changed on disk during the run
  if (opts.report_to_stdout()) {
    write_all(STDOUT_FILENO, report.data(), report.size());
    return "";
  }
  if (opts.output) {
    write_file_atomic(*opts.output, report);
    return *opts.output;
  }
  auto now = try_read_file(opts.path);
  std::string target = opts.path;
  Document again;
  bool readable = reparses_same(doc, report, again);
  if (!readable)
    std::cerr << "upstream: warning: " << opts.path
              << " is laid out so that the results cannot be written into it safely (the steps "
                 "would not parse"
                 " back the same); the report goes next to it"
              << std::endl;
  if (!now || *now != doc.source || !readable) {
    diverted = !now || *now != doc.source;
    auto slash = opts.path.find_last_of('/');
    std::string dir = slash == std::string::npos ? "" : opts.path.substr(0, slash + 1);
    std::string base = slash == std::string::npos ? opts.path : opts.path.substr(slash + 1);
    auto dot = base.rfind('.');
    std::string stem = dot == std::string::npos || dot == 0 ? base : base.substr(0, dot);
    std::string ext = dot == std::string::npos || dot == 0 ? ".md" : base.substr(dot);
    target = dir + stem + "." + run_id + ext;
  }
  // Keep the document's permissions.
  struct stat st;
  int mode = ::stat(opts.path.c_str(), &st) == 0 ? static_cast<int>(st.st_mode & 07777) : 0644;
  write_file_atomic(target, report, mode);
  return target;
}

std::string apply_step_state(std::string_view state,
                             std::vector<std::pair<std::string, std::string>>& env) {
  auto records = split(state, '\0');
  if (records.empty() || records[0].empty() || records[0][0] != '/') return "";
  for (size_t i = 1; i < records.size(); i++) {
    const std::string& r = records[i];
    if (r.size() < 2) continue;
    if (r[0] == '+') {
      auto eq = r.find('=');
      if (eq == std::string::npos) continue;
      std::string name = r.substr(1, eq - 1);
      if (carried_name(name) && valid_env_name(name)) set_env(env, name, r.substr(eq + 1));
    } else if (r[0] == '-') {
      std::string name = r.substr(1);
      env.erase(
          std::remove_if(env.begin(), env.end(), [&](const auto& e) { return e.first == name; }),
          env.end());
    }
  }
  return records[0];
}

Document load_document(const std::string& path) {
  if (path == "-") {
    std::string text = read_all(STDIN_FILENO, kMaxDocumentBytes + 1);
    if (text.size() > kMaxDocumentBytes)
      throw Error(Errc::invalid_argument, "<stdin>: is more than " +
                                              format_bytes(kMaxDocumentBytes) +
                                              "; documents are limited to that");
    return parse_document(text, "<stdin>");
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    int err = errno;
    throw Error(err == ENOENT ? Errc::not_found : Errc::invalid_argument,
                path + ": " + (err == ENOENT ? std::string("no such file") : errno_string(err)));
  }
  if (S_ISDIR(st.st_mode))
    throw Error(Errc::invalid_argument, path + ": is a directory, not a markdown document");
  if (!S_ISREG(st.st_mode)) throw Error(Errc::invalid_argument, path + ": is not a regular file");
  if (static_cast<uint64_t>(st.st_size) > kMaxDocumentBytes)
    throw Error(Errc::invalid_argument,
                path + ": is " + format_bytes(static_cast<uint64_t>(st.st_size)) +
                    "; documents are limited to " + format_bytes(kMaxDocumentBytes));
  std::string text = read_file(path, kMaxDocumentBytes + 1);
  return parse_document(text, path);
}

namespace {

class TurnRunner {
 public:
  TurnRunner(Engine& engine, const RunOptions& opts, Document doc)
      : engine_(engine), opts_(opts), doc_(std::move(doc)) {}
  static void dry_run(const Document& doc, const RunOptions& opts);

  int run();

 private:
  void check_image();
  void prepare_box();
  void load_context_into_box();
  void run_step(const Step& s, StepReport& rep, StepRecord& rec);
  void read_step_files(const Step& s, StepRecord& rec, StepReport& rep);
  void collect_artifacts();
  void show_failure(const StepReport& rep);
  // The parts of run(): the session, store and progress it uses; the session's state (a turn
  // for another tenant's session is refused); each step in order; the turn's totals; the lines
  // that end the run; the standalone run's box.
  void begin();
  SessionState open_session(int64_t started_at);
  bool run_steps(TurnRecord& turn, std::vector<std::optional<StepReport>>& reports);
  Summary summarize(const TurnRecord& turn, int64_t started_at, std::string& failed_steps,
                    json& failed_list) const;
  void report_end(const TurnRecord& turn, const Summary& sum, const std::string& failed_steps,
                  const json& failed_list, const std::string& setup_error,
                  const std::string& written, bool diverted);
  void release_box();

  Engine& engine_;
  const RunOptions& opts_;
  Document doc_;
  std::string session_;  // empty: standalone
  std::string run_id_;
  std::unique_ptr<ContextStore> store_;
  std::string store_name_;  // session name, or the run id
  std::string staging_;
  int turn_ = 1;
  BoxRecord box_;
  bool box_created_ = false;
  std::unique_ptr<FileSession> files_;
  std::vector<std::pair<std::string, std::string>> env_;
  std::string cwd_, start_cwd_;
  std::unique_ptr<Progress> progress_;
  std::unique_ptr<RunEvents> events_;
  int head_ = kDefaultHead, tail_ = kDefaultTail;
  int interrupted_ = 0;
  bool engine_failed_ = false;
};

void TurnRunner::dry_run(const Document& doc_, const RunOptions& opts_) {
  std::cout << doc_.path << ": " << doc_.steps.size() << " step"
            << (doc_.steps.size() == 1 ? "" : "s");
  std::string session = opts_.session.value_or(doc_.meta.session.value_or(""));
  if (!session.empty()) std::cout << " (session " << session << ")";
  if (auto n = opts_.network_for(doc_)) std::cout << " (network " << describe(*n) << ")";
  std::cout << "; nothing is run (--dry-run)" << std::endl;
  for (const auto& s : doc_.steps) {
    std::cout << "Step " << s.index << ": " << s.name << "  [" << s.lang << ", line " << s.line;
    if (s.skip) std::cout << ", skipped";
    if (s.continue_on_error) std::cout << ", may fail";
    if (auto t = s.timeout_ms.value_or(doc_.meta.timeout_ms.value_or(0)))
      std::cout << ", timeout " << format_duration_ms(t);
    if (s.user) std::cout << ", user " << *s.user;
    std::cout << "]" << std::endl;
  }
  for (const auto& o : doc_.other_blocks)
    std::cout << "Skipped: the " << o.lang << " block at line " << o.line
              << " (not a step's language)" << std::endl;
  if (!doc_.other_blocks.empty())
    std::cout << "Steps are " << kStepLanguages << " blocks; other blocks are left as they are."
              << std::endl;
}

// The front matter's image, when this turn creates a box, is checked before anything is run or
// written: one the engine does not know is an error of the document (exit 2, file untouched).
void TurnRunner::check_image() {
  const auto& m = doc_.meta;
  if (!m.image) return;
  if (!session_.empty()) {
    auto state = store_->state(session_);
    if (state && !state->box_id.empty()) {
      try {
        engine_.get_box(state->box_id);
        return;  // the session's box is kept, whatever the document names
      } catch (const Error& e) {
        if (e.code() != Errc::not_found) throw;
      }
    }
  }
  try {
    engine_.check_image(*m.image, opts_.labels);
  } catch (const Error& e) {
    if (e.code() != Errc::invalid_argument && e.code() != Errc::not_found &&
        e.code() != Errc::permission_denied)
      throw;
    throw Error(Errc::invalid_argument, doc_.path + ":" + std::to_string(m.image_line) + ":" +
                                            std::to_string(m.image_column) +
                                            ": front matter: " + e.what());
  }
}

void TurnRunner::prepare_box() {
  const auto& m = doc_.meta;
  const std::optional<RunNetwork> network = opts_.network_for(doc_);
  std::optional<SessionState> state;
  if (!session_.empty()) state = store_->state(session_);
  if (state && !state->box_id.empty()) {
    try {
      box_ = engine_.get_box(state->box_id);
      if (box_.state != box_state::running) box_ = engine_.start_box(box_.id);
      if (m.image && *m.image != box_.spec.image)
        progress_->message("Note: session " + session_ + " runs in its box with image " +
                           box_.spec.image + "; the document's image " + *m.image +
                           " applies to a new session");
      // A network the turn asks for is the session box's from now on.
      RunNetwork had{box_.spec.network, box_.spec.egress};
      had.egress.headers.clear();
      if (network && !(*network == had)) {
        box_ = engine_.set_network(box_.id, network->mode, network->egress, true);
        progress_->message("Note: the box of session " + session_ + " now has network " +
                           describe(*network) + " (it had " + describe(had) + ")");
      }
    } catch (const Error& e) {
      if (e.code() != Errc::not_found) throw;
      progress_->message(
          "Note: the box of session " + session_ +
          " is gone; this turn starts in a fresh box (earlier turns' context is kept)");
      box_ = {};
    }
  }
  if (box_.id.empty()) {
    BoxSpec spec;
    spec.image = m.image.value_or("host");
    spec.limits = m.limits;
    if (m.workdir) spec.workdir = *m.workdir;
    if (network) {
      spec.network = network->mode;
      spec.egress = network->egress;
    }
    std::string name = session_.empty() ? "run-" + run_id_ : "session-" + session_;
    spec.name = valid_box_name(name) ? name : "";
    spec.labels = opts_.labels;
    if (session_.empty())
      spec.labels["upstream.run"] = run_id_;
    else
      spec.labels["upstream.session"] = session_;
    validate_box_spec(spec);
    try {
      box_ = engine_.create_box(spec);
    } catch (const Error& e) {
      if (e.code() != Errc::already_exists) throw;
      spec.name.clear();
      box_ = engine_.create_box(spec);
    }
    box_created_ = true;
    state.reset();  // a fresh box starts from the document alone
  }
  if (state) {
    env_ = state->env;
    cwd_ = state->cwd;
  }
  for (const auto& [k, v] : m.env) set_env(env_, k, v);
  if (m.workdir) cwd_ = *m.workdir;
  if (cwd_.empty()) cwd_ = box_.spec.workdir;
  start_cwd_ = cwd_;

  files_ = engine_.files(box_.id, "root");
  // The turn's scratch space: step scripts and their reports, and the artifacts folder, fresh
  // for every turn and writable by whichever user a step runs as.
  ExecSpec prep;
  prep.argv = {"/bin/sh",
               "-c",
               "rm -rf \"$1\" \"$2\" && mkdir -p \"$1\" \"$2\" \"$3\" && chmod 1777 \"$1\" \"$2\" "
               "&& chmod 755 \"$3\"",
               "upstream-prep",
               kBoxRunDir,
               kBoxArtifactsDir,
               kBoxContextDir};
  prep.user = "root";
  prep.cwd = "/";
  auto ex = engine_.start_exec(box_.id, prep);
  std::string err;
  ExecRecord r = ex->wait([&](Stream, std::string_view d) {
    if (err.size() < 4096) err.append(d);
  });
  if (r.exit_code != 0)
    throw Error(Errc::failed_precondition,
                "could not prepare the box for the turn: " + trim(err + r.stderr_tail));
}

void TurnRunner::load_context_into_box() {
  std::set<std::string> present;
  for (const auto& f : files_->list(kBoxContextDir)) present.insert(f.name);
  size_t artifacts = 0;
  auto turns = session_.empty() ? std::vector<TurnRecord>{} : store_->turns(session_);
  for (const auto& t : turns) {
    artifacts += t.artifacts.size();
    std::string name = "turn-" + std::to_string(t.turn);
    if (present.count(name)) continue;
    // Results and artifacts; the whole output logs stay on the host.
    std::string host = store_->turn_dir(session_, t.turn);
    std::string box = std::string(kBoxContextDir) + "/.incoming-" + name;
    files_->mkdir(box + "/steps", true, 0755);
    files_->copy_in(host + "/document.md", box + "/document.md");
    files_->copy_in(host + "/turn.json", box + "/turn.json");
    for (const auto& s : t.steps) {
      std::string sd = host + "/steps/" + std::to_string(s.index);
      files_->mkdir(box + "/steps/" + std::to_string(s.index), true, 0755);
      files_->copy_in(sd + "/result.json",
                      box + "/steps/" + std::to_string(s.index) + "/result.json");
    }
    files_->copy_in(host + "/artifacts", box + "/artifacts");
    files_->move(box, std::string(kBoxContextDir) + "/" + name, true);
  }
  json manifest = session_.empty() ? json{{"session", nullptr}, {"turns", json::array()}}
                                   : store_->manifest(session_);
  files_->write(std::string(kBoxContextDir) + "/context.json", manifest.dump(2) + "\n", 0644);
  if (!session_.empty())
    progress_->message("Context loaded: " + std::to_string(artifacts) + " artifact" +
                       (artifacts == 1 ? "" : "s") + " from " + std::to_string(turns.size()) +
                       " previous turn" + (turns.size() == 1 ? "" : "s"));
}

void TurnRunner::read_step_files(const Step& s, StepRecord& rec, StepReport& rep) {
  std::string out_name = "output-" + std::to_string(s.index) + ".json";
  bool has_output = false;
  if (s.runner == "bash") {
    // The wrapper's exit trap reports the directory, the environment and whether the step
    // wrote $UPSTREAM_OUTPUT (a step that exec'd another program leaves no report).
    std::string state;
    try {
      state =
          files_->read(std::string(kBoxRunDir) + "/state-" + std::to_string(s.index), 16ull << 20);
    } catch (const Error& e) {
      if (e.code() != Errc::not_found) throw;
    }
    std::string dir = apply_step_state(state, env_);
    if (!dir.empty()) cwd_ = dir;
    has_output = state.find(std::string("\0?output\0", 9)) != std::string::npos;
    if (state.empty())
      for (const auto& f : files_->list(kBoxRunDir))
        if (f.name == out_name) has_output = true;
  } else {
    for (const auto& f : files_->list(kBoxRunDir))
      if (f.name == out_name) has_output = true;
  }
  if (!has_output) return;
  std::string path = std::string(kBoxRunDir) + "/" + out_name;
  FileInfo info = files_->stat(path, false);
  if (info.type != "file") {
    rec.result_error = "$UPSTREAM_OUTPUT is not a regular file";
  } else if (info.size > kMaxResultBytes) {
    rec.result_error = "$UPSTREAM_OUTPUT holds " + format_bytes(info.size) + "; the limit is 1 MiB";
  } else {
    std::string text = files_->read(path, kMaxResultBytes);
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded())
      rec.result_error = "$UPSTREAM_OUTPUT does not hold valid JSON";
    else
      rec.result = j;
  }
  if (!rec.result_error.empty()) {
    rep.structured.clear();
    rep.note = rep.note.empty() ? rec.result_error : rep.note + "; " + rec.result_error;
  } else {
    std::string compact = rec.result.dump();
    rep.structured = compact.size() <= kMaxShownResult
                         ? compact
                         : "(" + format_bytes(compact.size()) + " of JSON; see the turn's steps/" +
                               std::to_string(s.index) + "/result.json)";
  }
}

void TurnRunner::run_step(const Step& s, StepReport& rep, StepRecord& rec) {
  std::string step_dir = staging_ + "/steps/" + std::to_string(s.index);
  make_dirs(step_dir);
  OutputCollector out(step_dir + "/output.log", head_, tail_);
  std::string log_final =
      store_->turn_dir(store_name_, turn_) + "/steps/" + std::to_string(s.index) + "/output.log";

  rec.started_at = now_ms();
  int64_t t0 = mono_ms();
  progress_->start(s);
  ExecRecord r;
  bool started = false;
  try {
    files_->write(script_name(s), s.code, 0644);
    ExecSpec spec;
    spec.argv = step_argv(s);
    for (const auto& [k, v] : env_) spec.env.push_back(k + "=" + v);
    std::string idx = std::to_string(s.index);
    spec.env.push_back("UPSTREAM_OUTPUT=" + std::string(kBoxRunDir) + "/output-" + idx + ".json");
    spec.env.push_back("UPSTREAM_ARTIFACTS=" + std::string(kBoxArtifactsDir));
    spec.env.push_back("UPSTREAM_CONTEXT=" + std::string(kBoxContextDir));
    spec.env.push_back("UPSTREAM_RUN_ID=" + run_id_);
    spec.env.push_back("UPSTREAM_SESSION=" + session_);
    spec.env.push_back("UPSTREAM_TURN=" + std::to_string(turn_));
    spec.env.push_back("UPSTREAM_STEP=" + idx);
    spec.cwd = cwd_;
    spec.user = s.user.value_or(doc_.meta.user.value_or(""));
    spec.timeout_ms = s.timeout_ms.value_or(doc_.meta.timeout_ms.value_or(0));
    auto ex = engine_.start_exec(box_.id, spec);
    started = true;
    auto sink = [&](Stream st, std::string_view d) {
      out.add(st, d);
      if (opts_.verbose) progress_->output(s, st, d, opts_.report_to_stdout());
    };
    auto on_event = [&] {
      bool ticked = false;
      int sig = events_->poll(ticked);
      if (sig && !interrupted_) {
        interrupted_ = sig;
        ex->signal(SIGKILL);  // the step and every process it started
      }
      if (ticked) progress_->tick();
    };
    r = ex->wait(sink, -1, events_->fd(), on_event);
    if (ex->finished() && !r.exit_code && !r.stderr_tail.empty()) out.note(trim(r.stderr_tail));
  } catch (const Error& e) {
    out.note(e.what());
    if (!started)
      engine_failed_ = e.code() != Errc::invalid_argument && e.code() != Errc::not_found;
  }
  out.finish();
  rec.duration_ms = mono_ms() - t0;
  rep.duration_ms = rec.duration_ms;
  rec.exit_code = r.exit_code;
  rec.signal = r.signal;
  rep.exit_code = r.exit_code;
  rep.signal = r.signal;
  if (interrupted_)
    rec.status = "interrupted";
  else if (r.timed_out)
    rec.status = "timed out";
  else if (r.exit_code && *r.exit_code == 0)
    rec.status = "ok";
  else
    rec.status = "failed";
  if (r.oom_killed) rep.note = "out of memory";
  rep.status = rec.status;
  if (started && !engine_failed_) {
    try {
      read_step_files(s, rec, rep);
    } catch (const Error& e) {
      out.note("could not read the step's results: " + std::string(e.what()));
    }
  }
  rec.output_lines = out.lines();
  rec.output_bytes = out.bytes();
  out.fill(rep, log_final);

  // Not synced one by one: the turn is made durable as a whole when it is published.
  UniqueFd rf =
      open_or_throw(step_dir + "/result.json", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  write_all(rf.get(), step_to_json(rec).dump(2) + "\n");

  std::string outcome;
  std::string secs = seconds_text(rec.duration_ms);
  if (rec.status == "ok")
    outcome = "done (" + secs + ")";
  else if (rec.status == "timed out")
    outcome = "timed out (" + secs + ")";
  else if (rec.status == "interrupted")
    outcome = "interrupted (" + secs + ")";
  else if (r.exit_code)
    outcome = "failed (exit " + std::to_string(*r.exit_code) + ", " + secs + ")";
  else if (r.signal)
    outcome = "failed (signal " + std::to_string(r.signal) + ", " + secs + ")";
  else
    outcome = "failed (did not start)";
  if (rec.status != "ok" && rec.status != "interrupted" && s.continue_on_error)
    outcome += ", allowed to fail";
  json fields = {{"status", rec.status}, {"duration_ms", rec.duration_ms}};
  fields["exit_code"] = r.exit_code ? json(*r.exit_code) : json(nullptr);
  if (r.signal) fields["signal"] = r.signal;
  if (s.continue_on_error) fields["allowed_to_fail"] = true;
  progress_->end(s, outcome, fields);
  if (rec.status == "failed" || rec.status == "timed out") show_failure(rep);
}

// Without -v nothing of a failed step's output was on the terminal: its last lines of standard
// error (or of its output, when it wrote no errors) are shown under its outcome.
void TurnRunner::show_failure(const StepReport& rep) {
  if (progress_->verbose()) return;
  std::vector<std::string> err;
  for (const auto& l : rep.lines)
    if (starts_with(l, "! ")) err.push_back(l.substr(2));
  std::vector<std::string> from = err.empty() ? rep.lines : std::move(err);
  if (from.size() > kFailureLines) from.erase(from.begin(), from.end() - kFailureLines);
  if (from.empty()) return;
  if (!rep.cut_note.empty()) from.push_back("(the whole output is in " + rep.cut_note + ")");
  progress_->detail(from);
}

void TurnRunner::collect_artifacts() {
  std::string dest = staging_ + "/artifacts";
  // One exec lists the regular files to keep: everything in $UPSTREAM_ARTIFACTS, and what the
  // front matter's globs match from the directory the turn started in (and the globs that match
  // nothing, to warn of). Symlinks are not kept.
  ExecSpec spec;
  spec.argv = {"bash",
               "--noprofile",
               "--norc",
               "-c",
               "art=$1; wd=$2; shift 2; shopt -s globstar nullglob dotglob; IFS=\n"
               "if cd -- \"$art\" 2>/dev/null; then for f in **; do [[ -f $f && ! -L $f ]] && "
               "printf 'A%s\\0' \"$f\"; done; fi\n"
               "cd -- \"$wd\" 2>/dev/null && ok=1 || ok=0\n"
               "for g in \"$@\"; do n=0; ((ok)) && for f in $g; do\n"
               "  [[ -f $f && ! -L $f ]] && { printf 'G%s\\0' \"$f\"; n=1; }; done\n"
               "  ((n)) || printf 'N%s\\0' \"$g\"; done\nexit 0",
               "upstream-artifacts",
               kBoxArtifactsDir,
               start_cwd_};
  for (const auto& g : doc_.meta.artifacts) spec.argv.push_back(g);
  spec.user = "root";
  spec.cwd = "/";
  spec.timeout_ms = 60'000;
  auto ex = engine_.start_exec(box_.id, spec);
  std::string listing;
  ex->wait([&](Stream st, std::string_view d) {
    if (st == Stream::stdout_ && listing.size() < (16u << 20)) listing.append(d);
  });
  std::set<std::string> seen;
  uint64_t total = 0;
  size_t count = 0;
  for (const auto& entry : split(listing, '\0')) {
    if (entry.size() < 2) continue;
    std::string rel = entry.substr(1);
    if (entry[0] == 'N') {
      progress_->message("Warning: artifact pattern '" + rel + "' matched no file in " +
                         start_cwd_);
      continue;
    }
    std::string from = (entry[0] == 'A' ? std::string(kBoxArtifactsDir) : start_cwd_) + "/" + rel;
    if (!plain_relative_path(rel) || !seen.insert(rel).second) continue;
    if (++count > kMaxArtifacts) {
      progress_->message("Warning: more than " + std::to_string(kMaxArtifacts) +
                         " artifacts; only the first were saved");
      break;
    }
    try {
      FileInfo info = files_->stat(from, false);
      if (info.type != "file") continue;
      if (total + info.size > kMaxArtifactBytes) {
        progress_->message("Warning: artifact " + rel +
                           " was not saved: the turn's artifacts are limited to " +
                           format_bytes(kMaxArtifactBytes));
        continue;
      }
      total += info.size;
      auto slash = rel.find_last_of('/');
      if (slash != std::string::npos) make_dirs(dest + "/" + rel.substr(0, slash));
      files_->copy_out(from, dest + "/" + rel);
    } catch (const Error& e) {
      progress_->message("Warning: artifact " + rel + " was not saved: " + e.what());
    }
  }
}

void TurnRunner::begin() {
  session_ = opts_.session.value_or(doc_.meta.session.value_or(""));
  if (!session_.empty() && !valid_box_name(session_))
    throw Error(Errc::invalid_argument,
                "invalid session name '" + session_ + "' (letters, digits, '_', '.', '-')");
  head_ = opts_.head_lines.value_or(doc_.meta.head_lines.value_or(kDefaultHead));
  tail_ = opts_.tail_lines.value_or(doc_.meta.tail_lines.value_or(kDefaultTail));
  run_id_ = "r" + random_hex(11);
  const std::string& home = engine_.options().home;
  store_ = std::make_unique<ContextStore>(session_.empty() ? ContextStore::runs(home)
                                                           : ContextStore::sessions(home));
  store_name_ = session_.empty() ? run_id_ : session_;

  size_t width = 0;
  for (const auto& s : doc_.steps)
    width = std::max(width, ("Step " + std::to_string(s.index) + ": " + s.name).size());
  progress_ =
      std::make_unique<Progress>(opts_.progress, opts_.verbose, width, opts_.report_to_stdout());
  events_ = std::make_unique<RunEvents>(progress_->spinning());
}

SessionState TurnRunner::open_session(int64_t started_at) {
  if (!session_.empty()) {
    auto turns = store_->turns(session_);
    turn_ = turns.empty() ? 1 : turns.back().turn + 1;
  }
  SessionState state =
      session_.empty() ? SessionState{} : store_->state(session_).value_or(SessionState{});
  state.name = store_name_;
  bool new_session = !state.created_at;
  if (!state.created_at) state.created_at = started_at;
  if (session_.empty()) return state;
  auto t = opts_.labels.find(kTenantLabel);
  std::string tenant = t == opts_.labels.end() ? "" : t->second;
  if (state.tenant && *state.tenant != tenant)
    throw Error(Errc::permission_denied,
                "session " + session_ + " is " +
                    (state.tenant->empty() ? std::string("the operator's")
                                           : "tenant " + *state.tenant + "'s") +
                    ": its turns run for it only");
  // Recorded from now on. A session from before that is its tenant's when it runs for it; one
  // named like a tenant's (TENANT_NAME) stays unrecorded when the operator runs it.
  if (!state.tenant && (new_session || !tenant.empty() || session_.find('_') == std::string::npos))
    state.tenant = tenant;
  return state;
}

// Runs the steps in order (or records why one is not run); true if one failed that may not.
bool TurnRunner::run_steps(TurnRecord& turn, std::vector<std::optional<StepReport>>& reports) {
  bool stop = false;
  bool failed = false;
  std::string not_run_reason = "an earlier step failed";
  for (size_t i = 0; i < doc_.steps.size(); i++) {
    const Step& s = doc_.steps[i];
    StepReport rep;
    StepRecord rec;
    rec.index = s.index;
    rec.name = s.name;
    rec.lang = s.lang;
    rec.code = s.code;
    bool ticked = false;
    if (!interrupted_) interrupted_ = events_->poll(ticked);
    if (engine_failed_ || interrupted_ || stop) {
      rep.status = rec.status = "not run";
      rep.note = engine_failed_ ? "upstream could not run it"
                 : interrupted_ ? "the run was interrupted"
                                : not_run_reason;
    } else if (s.skip) {
      rep.status = rec.status = "skipped";
      progress_->end(s, "skipped", {{"status", "skipped"}});
    } else {
      run_step(s, rep, rec);
      if (rec.status == "failed" || rec.status == "timed out") {
        if (!s.continue_on_error) failed = true;
        if (!s.continue_on_error && doc_.meta.on_error != "continue") stop = true;
      }
    }
    reports[i] = std::move(rep);
    turn.steps.push_back(std::move(rec));
  }
  return failed;
}

Summary TurnRunner::summarize(const TurnRecord& turn, int64_t started_at, std::string& failed_steps,
                              json& failed_list) const {
  Summary sum;
  sum.run_id = run_id_;
  sum.session = session_;
  sum.turn = turn_;
  sum.started_at = started_at;
  sum.duration_ms = turn.duration_ms;
  sum.status = turn.status;
  sum.steps = static_cast<int>(doc_.steps.size());
  failed_list = json::array();
  for (const auto& r : turn.steps) {
    if (r.status == "ok") sum.ok++;
    if (r.status == "failed" || r.status == "timed out") {
      failed_list.push_back({{"index", r.index}, {"name", r.name}});
      sum.failed++;
      failed_steps += std::string(failed_steps.empty() ? "" : ", ") + "step " +
                      std::to_string(r.index) + " (" + r.name + ")";
    }
    if (r.status == "interrupted") sum.interrupted++;
    if (r.status == "skipped") sum.skipped++;
  }
  return sum;
}

void TurnRunner::report_end(const TurnRecord& turn, const Summary& sum,
                            const std::string& failed_steps, const json& failed_list,
                            const std::string& setup_error, const std::string& written,
                            bool diverted) {
  if (!setup_error.empty()) std::cerr << "upstream: error: " << setup_error << std::endl;
  if (!session_.empty() || !turn.artifacts.empty())
    progress_->message("Context: " + std::to_string(turn.artifacts.size()) + " artifact" +
                       (turn.artifacts.size() == 1 ? "" : "s") + " saved in " +
                       store_->turn_dir(store_name_, turn_));
  if (diverted)
    progress_->message(doc_.path +
                       " changed while the run went on; it was left alone and the report is in " +
                       written);
  else if (!written.empty())
    progress_->message("Report written to " + written);
  progress_->summary(std::string(turn.status == "succeeded"     ? "Succeeded"
                                 : turn.status == "interrupted" ? "Interrupted"
                                                                : "Failed") +
                         ": " + std::to_string(sum.ok) + " of " + std::to_string(sum.steps) +
                         " steps succeeded in " + seconds_text(turn.duration_ms) + " (run " +
                         run_id_ + ")" + (failed_steps.empty() ? "" : "; failed: " + failed_steps),
                     {{"status", turn.status},
                      {"steps", sum.steps},
                      {"succeeded", sum.ok},
                      {"failed", failed_list},
                      {"duration_ms", turn.duration_ms},
                      {"run_id", run_id_},
                      {"session", session_.empty() ? json(nullptr) : json(session_)},
                      {"turn", turn_}});
}

// A standalone run's box goes with the run, unless --keep.
void TurnRunner::release_box() {
  files_.reset();
  if (!session_.empty() || !box_created_) return;
  if (opts_.keep) {
    progress_->message("Box kept: " + box_.name + " (remove it with `upstream box rm " + box_.name +
                       "`)");
    return;
  }
  try {
    engine_.remove_box(box_.id, true);
  } catch (const Error& e) {
    std::cerr << "upstream: warning: the run's box " << box_.name
              << " could not be removed: " << e.what() << std::endl;
  }
}

int TurnRunner::run() {
  begin();
  check_image();
  FileLock lock = store_->lock(store_name_);
  int64_t started_at = now_ms();
  int64_t t0 = mono_ms();
  SessionState state = open_session(started_at);

  progress_->message(
      std::string("Running ") + doc_.path + ": " + std::to_string(doc_.steps.size()) + " step" +
      (doc_.steps.size() == 1 ? "" : "s") +
      (session_.empty() ? std::string()
                        : ", session " + session_ + " turn " + std::to_string(turn_)));
  staging_ = store_->begin_turn(store_name_, turn_);
  write_file_atomic(staging_ + "/document.md", doc_.source);

  TurnRecord turn;
  turn.turn = turn_;
  turn.run_id = run_id_;
  turn.session = session_;
  turn.document = doc_.path;
  turn.started_at = started_at;

  std::vector<std::optional<StepReport>> reports(doc_.steps.size());
  std::string setup_error;
  try {
    prepare_box();
    turn.box = box_.id;
    state.box_id = box_.id;
    load_context_into_box();
  } catch (const Error& e) {
    setup_error = e.what();
    engine_failed_ = true;
  }
  bool failed = run_steps(turn, reports);

  if (!engine_failed_) {
    try {
      collect_artifacts();
    } catch (const Error& e) {
      progress_->message("Warning: artifacts could not be collected: " + std::string(e.what()));
    }
  }
  turn.artifacts = list_tree(staging_ + "/artifacts");
  turn.duration_ms = mono_ms() - t0;
  turn.status = interrupted_ ? "interrupted" : (failed || engine_failed_) ? "failed" : "succeeded";
  std::string failed_steps;  // named in the last line
  json failed_list;
  Summary sum = summarize(turn, started_at, failed_steps, failed_list);

  std::string report = write_back(doc_, reports, sum);
  write_file_atomic(staging_ + "/report.md", report);
  int code = interrupted_     ? 128 + interrupted_
             : engine_failed_ ? kRunEngineError
             : failed         ? kRunStepFailed
                              : kRunOk;
  std::string written;
  bool diverted = false;
  try {
    written = write_report(opts_, doc_, report, run_id_, diverted);
  } catch (const Error& e) {
    std::cerr << "upstream: error: the report could not be written: " << e.what() << std::endl;
    if (code == kRunOk) code = kRunEngineError;
  }
  store_->publish_turn(store_name_, staging_, turn);
  if (!session_.empty()) {
    state.env = env_;
    state.cwd = cwd_;
    state.updated_at = now_ms();
    store_->save_state(state);
  }
  report_end(turn, sum, failed_steps, failed_list, setup_error, written, diverted);
  release_box();
  return code;
}

}  // namespace

void remove_session(Engine& engine, const std::string& name) {
  ContextStore store = ContextStore::sessions(engine.options().home);
  if (!store.exists(name)) throw Error(Errc::not_found, "no session '" + name + "'");
  auto lock = store.lock(name);
  auto st = store.state(name);
  if (st && !st->box_id.empty()) {
    try {
      engine.remove_box(st->box_id, true);
    } catch (const Error& e) {
      if (e.code() != Errc::not_found) throw;
    }
  }
  store.remove(name);
}

int run_document(const std::function<Engine&()>& engine, const RunOptions& opts) {
  Document doc = load_document(opts.path);
  if (doc.steps.empty())
    throw Error(Errc::invalid_argument,
                opts.path + ": has no steps (fenced code blocks marked " + kStepLanguages + ")");
  if (opts.session && !valid_box_name(*opts.session))
    throw Error(Errc::invalid_argument,
                "invalid session name '" + *opts.session + "' (letters, digits, '_', '.', '-')");
  if (opts.head_lines && *opts.head_lines < 0)
    throw Error(Errc::invalid_argument, "--head must be 0 or more");
  if (opts.tail_lines && *opts.tail_lines < 0)
    throw Error(Errc::invalid_argument, "--tail must be 0 or more");
  if (opts.dry_run) {
    TurnRunner::dry_run(doc, opts);
    return kRunOk;
  }
  TurnRunner runner(engine(), opts, std::move(doc));
  return runner.run();
}

}  // namespace upstream::pipeline
