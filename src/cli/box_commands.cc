#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <iostream>
#include <map>
#include <thread>

#include "cli/cli.h"
#include "common/error.h"
#include "common/fd.h"
#include "common/strings.h"
#include "common/time.h"
#include "model/egress.h"
#include "runtime/net.h"

namespace upstream::cli {

using nlohmann::json;

namespace {

struct CreateOpts {
  std::string name, image = "host", cpus, memory, pids, disk, user, workdir, auto_pause, auto_stop,
                    auto_archive, network;
  std::vector<std::string> env, labels;
  EgressOpts egress;
  bool keep_alive = false;
};

// A policy time: a duration, or "never".
int64_t policy_ms(const std::string& text, const char* what) {
  if (text == "never" || text == "0") return 0;
  return static_cast<int64_t>(parse_duration_ms(text, what));
}

void add_create_options(CLI::App* c, CreateOpts& o) {
  c->add_option("--name", o.name, "Name of the box (also its hostname)");
  c->add_option("--image", o.image,
                "host (default), dir:/path/to/rootfs, tar:/path/to/rootfs.tar[.gz|.zst], or a "
                "snapshot or image name");
  c->add_option("--label,-l", o.labels, "Label key=value (repeatable)")->allow_extra_args(false);
  c->add_option("--env,-e", o.env, "Environment KEY=VALUE for every exec (repeatable)")
      ->allow_extra_args(false);
  c->add_option("--cpus", o.cpus, "CPU limit, e.g. 1 or 0.5");
  c->add_option("--memory,-m", o.memory, "Memory limit, e.g. 512m or 2g (default 2g)");
  c->add_option("--pids", o.pids, "Process limit (default 4096)");
  c->add_option("--disk", o.disk, "Disk limit of the box's writable layer, e.g. 5g (default 10g)");
  c->add_option("--user,-u", o.user,
                "Default user of execs: root, user, a name or uid[:gid] (default root)");
  c->add_option("--workdir,-w", o.workdir, "Default working directory (default /home/user)");
  c->add_option("--network", o.network,
                "none (default: loopback only), allow-all (the internet through the host's NAT; "
                "never private ranges, the host or other boxes) or custom (only the allowed "
                "domains and CIDRs)");
  add_egress_options(c, o.egress);
  c->add_option("--auto-pause", o.auto_pause,
                "Pause the box after this long idle, e.g. 10m, or never (default 30m; applied "
                "by `upstream serve`)");
  c->add_option("--auto-stop", o.auto_stop,
                "Stop the box after this long paused, or never (default 24h)");
  c->add_option("--auto-archive", o.auto_archive,
                "Archive the box after this long stopped, or never (default 7d)");
  c->add_flag("--keep-alive", o.keep_alive, "Never pause the box for being idle");
}

// Boxes a command made: their ids, one per line, or with --json their records.
void print_box_ids(const Context& ctx, const std::vector<BoxRecord>& boxes) {
  if (ctx.json) {
    json arr = json::array();
    for (const auto& b : boxes) arr.push_back(box_json(b));
    print_json(arr);
    return;
  }
  for (const auto& b : boxes) std::cout << b.id << "\n";
  std::cout.flush();
}

BoxSpec spec_from(const CreateOpts& o) {
  BoxSpec s;
  s.name = o.name;
  s.image = o.image;
  s.labels = parse_labels(o.labels);
  s.env = parse_env_list(o.env);
  s.limits = parse_limits(o.cpus, o.memory, o.pids, o.disk);
  if (!o.user.empty()) s.user = o.user;
  if (!o.workdir.empty()) s.workdir = o.workdir;
  if (!o.network.empty()) s.network = parse_network_mode(o.network);
  s.egress = egress_from(o.egress);
  if (!o.auto_pause.empty()) s.policy.auto_pause_ms = policy_ms(o.auto_pause, "--auto-pause");
  if (!o.auto_stop.empty()) s.policy.auto_stop_ms = policy_ms(o.auto_stop, "--auto-stop");
  if (!o.auto_archive.empty())
    s.policy.auto_archive_ms = policy_ms(o.auto_archive, "--auto-archive");
  s.policy.keep_alive = o.keep_alive;
  return s;
}

struct ExecOpts {
  bool interactive = false, tty = false, detach = false;
  std::string cwd, user, timeout, shell;
  std::vector<std::string> env;
};

void add_exec_options(CLI::App* c, ExecOpts& o) {
  c->add_flag("--interactive,-i", o.interactive, "Stream stdin to the command");
  c->add_flag("--tty,-t", o.tty, "Run the command on a terminal");
  c->add_flag("--detach,-d", o.detach, "Run in the background and print the exec number");
  c->add_option("--env,-e", o.env, "Environment KEY=VALUE (repeatable)")->allow_extra_args(false);
  c->add_option("--cwd", o.cwd, "Working directory inside the box");
  c->add_option("--user,-u", o.user, "User: root, user, a name or uid[:gid]");
  c->add_option("--timeout", o.timeout,
                "Kill the command (and everything it started) after this long, e.g. 30s");
  c->add_option("--shell,-c", o.shell,
                "Run this shell command line (bash -c) instead of a command");
}

// Options given after the box (parsed into `late` by `parsed`) over those given before it.
void merge_exec_options(ExecOpts& o, const ExecOpts& late, const CLI::App& parsed) {
  o.interactive = o.interactive || late.interactive;
  o.tty = o.tty || late.tty;
  o.detach = o.detach || late.detach;
  o.env.insert(o.env.end(), late.env.begin(), late.env.end());
  if (parsed.count("--cwd")) o.cwd = late.cwd;
  if (parsed.count("--user")) o.user = late.user;
  if (parsed.count("--timeout")) o.timeout = late.timeout;
  if (parsed.count("--shell")) o.shell = late.shell;
}

ExecSpec exec_spec_from(const ExecOpts& o, std::vector<std::string> argv) {
  ExecSpec s;
  s.argv = argv;
  s.shell = o.shell;
  s.env = parse_env_list(o.env);
  s.cwd = o.cwd;
  s.user = o.user;
  if (!o.timeout.empty()) s.timeout_ms = parse_duration_ms(o.timeout, "timeout");
  s.stdin = o.interactive;
  s.tty = o.tty;
  s.background = o.detach;
  if (s.tty) {
    winsize ws{};
    if (::ioctl(0, TIOCGWINSZ, &ws) == 0 && ws.ws_row) {
      s.rows = ws.ws_row;
      s.cols = ws.ws_col;
    }
  }
  return s;
}

// Puts the local terminal in raw mode for the lifetime of the object.
class RawTerminal {
 public:
  RawTerminal() {
    if (::isatty(0) && ::tcgetattr(0, &saved_) == 0) {
      termios raw = saved_;
      ::cfmakeraw(&raw);
      ::tcsetattr(0, TCSANOW, &raw);
      active_ = true;
    }
  }
  ~RawTerminal() {
    if (active_) ::tcsetattr(0, TCSANOW, &saved_);
  }

 private:
  termios saved_{};
  bool active_ = false;
};

// Runs an exec in the foreground: output to our stdout/stderr, signals forwarded. Returns the
// code to exit with.
int run_foreground(Backend& engine, const std::string& box, const ExecSpec& spec) {
  auto session = engine.start_exec(box, spec);
  if (session->finished()) {
    ExecRecord r = session->wait({});
    std::cerr << r.stderr_tail << std::flush;
    return r.exit_code.value_or(kExitExecError);
  }
  if (spec.background) {
    std::cout << session->seq() << std::endl;
    return 0;
  }
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH}) sigaddset(&set, s);
  sigprocmask(SIG_BLOCK, &set, nullptr);
  UniqueFd sigfd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  int interrupts = 0;
  std::unique_ptr<RawTerminal> raw;
  if (spec.tty) raw = std::make_unique<RawTerminal>();
  auto on_event = [&]() {
    signalfd_siginfo si;
    while (::read(sigfd.get(), &si, sizeof si) == sizeof si) {
      int sig = static_cast<int>(si.ssi_signo);
      if (sig == SIGWINCH) {
        winsize ws{};
        if (::ioctl(0, TIOCGWINSZ, &ws) == 0) session->resize(ws.ws_row, ws.ws_col);
      } else {
        // First interrupt: passed on to the command. Second: the command and all it started die.
        session->signal(++interrupts > 1 ? SIGKILL : sig);
      }
    }
  };
  auto sink = [](Stream s, std::string_view d) {
    write_all(s == Stream::stdout_ ? 1 : 2, d.data(), d.size());
  };
  ExecRecord r = session->wait(sink, (spec.stdin || spec.tty) ? 0 : -1, sigfd.get(), on_event);
  raw.reset();
  sigprocmask(SIG_UNBLOCK, &set, nullptr);
  if (r.timed_out)
    std::cerr << "upstream: command timed out after " << format_duration_ms(spec.timeout_ms)
              << "; it and every process it started were killed" << std::endl;
  else if (r.oom_killed)
    std::cerr << "upstream: command was killed: the box ran out of memory" << std::endl;
  else if (r.state == "lost" || r.reason == "box-stopped")
    std::cerr << "upstream: the box stopped while the command ran" << std::endl;
  return r.exit_code.value_or(kExitExecError);
}

std::string exec_command_text(const ExecRecord& e) {
  if (e.argv.size() == 3 && (e.argv[0] == "/bin/bash" || e.argv[0] == "/bin/sh") &&
      e.argv[1] == "-c")
    return e.argv[2];
  return shell_join(e.argv);
}

std::string exec_result_text(const ExecRecord& e) {
  if (e.state == "running") return "running";
  if (e.state == "lost") return "lost (box stopped)";
  if (e.timed_out) return "timed out";
  if (e.oom_killed) return "out of memory";
  if (e.reason == "killed") return "killed";
  if (e.state == "failed") return "failed (" + std::to_string(e.exit_code.value_or(-1)) + ")";
  if (e.signal)
    return std::string("signal ") + (sigabbrev_np(e.signal) ? sigabbrev_np(e.signal) : "?");
  return "exit " + std::to_string(e.exit_code.value_or(-1));
}

// "ID:path" on one side of cp. A local path containing ':' can be written as ./a:b.
bool split_box_path(const std::string& arg, std::string& box, std::string& path) {
  auto colon = arg.find(':');
  if (colon == std::string::npos || colon == 0) return false;
  std::string head = arg.substr(0, colon);
  if (head.find('/') != std::string::npos || head == "." || head == "..") return false;
  box = head;
  path = arg.substr(colon + 1);
  return true;
}

void print_box_human(const BoxRecord& b, const BoxUsage& u, const std::vector<BoxEvent>& events) {
  int64_t now = now_ms();
  auto row = [](const std::string& k, const std::string& v) {
    std::cout << k << ":" << std::string(13 - k.size(), ' ') << v << "\n";
  };
  row("ID", b.id);
  row("Name", b.name);
  row("State", b.state + (b.state_reason.empty() ? "" : " (" + b.state_reason + ")"));
  row("Image", b.spec.image);
  row("Created", format_time(b.created_at) + " (" + format_ago(b.created_at, now) + ")");
  if (b.started_at) row("Started", format_time(b.started_at));
  if (b.stopped_at && b.state == box_state::stopped) row("Stopped", format_time(b.stopped_at));
  row("Limits", limits_text(b.spec.limits));
  {
    const Policy& p = b.spec.policy;
    auto when = [](int64_t ms) {
      return ms > 0 ? format_duration_ms(static_cast<uint64_t>(ms)) : std::string("never");
    };
    row("Policy", (p.keep_alive ? std::string("keep alive")
                                : "auto-pause after " + when(p.auto_pause_ms) + " idle") +
                      ", auto-stop after " + when(p.auto_stop_ms) + " paused, auto-archive after " +
                      when(p.auto_archive_ms) + " stopped");
  }
  row("User", b.spec.user);
  row("Workdir", b.spec.workdir);
  row("Network", to_string(b.spec.network) +
                     (b.slot && b.spec.network != NetworkMode::none && box_state::alive(b.state) &&
                              *b.slot < egress::kMaxNetSlots
                          ? " (address " + egress::net_addrs(*b.slot).box_ip + ")"
                          : ""));
  {
    // The egress policy: what a custom network lets out, and the hosts headers are added for
    // (by name only: their values are secrets).
    const Egress& g = b.spec.egress;
    if (!g.allow_domains.empty()) row("Domains", join(g.allow_domains, " "));
    if (!g.allow_cidrs.empty()) row("CIDRs", join(g.allow_cidrs, " "));
    if (!g.deny_cidrs.empty()) row("Denied", join(g.deny_cidrs, " "));
    std::vector<std::string> h;
    for (const auto& [host, headers] : g.headers) {
      std::vector<std::string> names;
      for (const auto& [name, value] : headers) names.push_back(name);
      h.push_back(host + " (" + join(names, ", ") + ")");
    }
    if (!h.empty()) row("Headers", join(h, " "));
  }
  if (!b.spec.labels.empty()) {
    std::vector<std::string> l;
    for (const auto& [k, v] : b.spec.labels) l.push_back(k + "=" + v);
    row("Labels", join(l, " "));
  }
  if (!b.spec.env.empty()) row("Env", join(b.spec.env, " "));
  if (box_state::alive(b.state)) row("Init pid", std::to_string(b.init_pid));
  std::string usage = "cpu " + format_duration_ms(u.cpu_us / 1000) + ", memory " +
                      format_bytes(u.memory) + " (peak " + format_bytes(u.memory_peak) + ")";
  if (u.disk_bytes) usage += ", disk " + format_bytes(*u.disk_bytes);
  if (u.oom_kills) usage += ", " + std::to_string(u.oom_kills) + " OOM kills";
  row("Usage", usage);
  std::cout << "Events:\n";
  for (const auto& e : events)
    std::cout << "  " << format_time(e.at) << "  " << e.state << "  " << e.reason << "\n";
  std::cout.flush();
}

}  // namespace

namespace {

void add_box_create_command(CLI::App* box, Context& ctx) {
  auto* c = box->add_subcommand("create", "Create a box and start it; prints its id");
  c->footer(
      "Examples:\n"
      "  upstream box create --name py --memory 1g --disk 2g\n"
      "  upstream box create --name web --network allow-all --label team=ml\n"
      "  upstream box create --image prepared -n 4 --name worker   # four boxes from a snapshot");
  auto o = std::make_shared<CreateOpts>();
  auto count = std::make_shared<size_t>(0);
  add_create_options(c, *o);
  c->add_option("--count,-n", *count,
                "Create this many boxes (named NAME-1..NAME-N with --name); from a snapshot "
                "they share its layers")
      ->check(CLI::Range(size_t{1}, size_t{1000}));
  c->callback([&ctx, o, count] {
    if (*count) {
      print_box_ids(ctx, ctx.backend().create_boxes(spec_from(*o), *count));
      return;
    }
    BoxRecord b = ctx.backend().create_box(spec_from(*o));
    if (ctx.json)
      print_json(box_json(b));
    else
      std::cout << b.id << std::endl;
  });
}

void add_box_fork_command(CLI::App* box, Context& ctx) {
  auto* c = box->add_subcommand(
      "fork", "Snapshot a box and start copies of it (they share the snapshot's layers)");
  auto ref = std::make_shared<std::string>();
  auto count = std::make_shared<size_t>(1);
  auto name = std::make_shared<std::string>();
  auto labels = std::make_shared<std::vector<std::string>>();
  auto env = std::make_shared<std::vector<std::string>>();
  c->add_option("box", *ref, "Box id or name")->required();
  c->add_option("--count,-n", *count, "How many copies (default 1)")
      ->check(CLI::Range(size_t{1}, size_t{1000}));
  c->add_option("--name", *name, "Name the copies NAME-1..NAME-N (default: generated)");
  c->add_option("--label,-l", *labels, "Label key=value for the copies (repeatable)")
      ->allow_extra_args(false);
  c->add_option("--env,-e", *env, "Environment KEY=VALUE for the copies (repeatable)")
      ->allow_extra_args(false);
  c->callback([&ctx, ref, count, name, labels, env] {
    BoxSpec s;
    s.name = *name;
    s.labels = parse_labels(*labels);
    s.env = parse_env_list(*env);
    print_box_ids(ctx, ctx.backend().fork_box(*ref, *count, s));
  });
}

void add_box_run_command(CLI::App* box, Context& ctx) {
  auto* c =
      box->add_subcommand("run", "Create a box, run one command in it (and remove it with --rm)");
  set_usage(c, "[OPTIONS] [-- COMMAND [ARG...]]");
  c->footer(
      "Examples:\n"
      "  upstream box run --rm -- python3 -c 'print(6 * 7)'\n"
      "  upstream box run --rm -it -- bash\n"
      "  upstream box run --name job --timeout 10m -c 'make test'");
  auto o = std::make_shared<CreateOpts>();
  auto x = std::make_shared<ExecOpts>();
  auto rm = std::make_shared<bool>(false);
  auto argv = std::make_shared<std::vector<std::string>>();
  add_create_options(c, *o);
  c->add_flag("--rm", *rm, "Remove the box when the command ends");
  c->add_flag("--interactive,-i", x->interactive, "Stream stdin to the command");
  c->add_flag("--tty,-t", x->tty, "Run the command on a terminal");
  c->add_option("--cwd", x->cwd, "Working directory inside the box");
  c->add_option("--timeout", x->timeout, "Kill the command after this long, e.g. 30s");
  c->add_option("--shell,-c", x->shell, "Run this shell command line instead of a command");
  c->add_option("command", *argv, "Command and arguments (after --)");
  c->callback([&ctx, o, x, rm, argv] {
    std::vector<std::string> command = *argv;
    if (ctx.dashes) command.insert(command.end(), ctx.after_dashes.begin(), ctx.after_dashes.end());
    ExecSpec spec = exec_spec_from(*x, command);
    validate_exec_spec(spec);
    Backend& e = ctx.backend();
    BoxRecord b = e.create_box(spec_from(*o));
    int code;
    try {
      code = run_foreground(e, b.id, spec);
    } catch (...) {
      if (*rm) e.remove_box(b.id, true);
      throw;
    }
    if (*rm) e.remove_box(b.id, true);
    if (code != 0) throw ExitCode{code};
  });
}

void add_box_ls_command(CLI::App* box, Context& ctx) {
  auto* c = box->add_subcommand("ls", "List boxes")->alias("list");
  auto labels = std::make_shared<std::vector<std::string>>();
  auto state = std::make_shared<std::string>();
  auto quiet = std::make_shared<bool>(false);
  c->add_option("--label,-l", *labels, "Only boxes with this label key=value (repeatable)")
      ->allow_extra_args(false);
  c->add_option("--state", *state, "Only boxes in this state (running, stopped, ...)")
      ->check(CLI::IsMember({"creating", "starting", "running", "paused", "stopping", "stopped",
                             "archived", "removing"}));
  c->add_flag("--quiet,-q", *quiet, "Print only ids");
  c->callback([&ctx, labels, state, quiet] {
    store::BoxFilter f;
    f.labels = parse_labels(*labels);
    f.state = *state;
    auto boxes = ctx.backend().list_boxes(f);
    if (ctx.json) {
      json arr = json::array();
      for (const auto& b : boxes) arr.push_back(box_json(b));
      print_json(arr);
      return;
    }
    if (*quiet) {
      for (const auto& b : boxes) std::cout << b.id << "\n";
      return;
    }
    // Newest first, as docker lists containers; the JSON keeps the store's order.
    std::stable_sort(boxes.begin(), boxes.end(), [](const BoxRecord& a, const BoxRecord& b) {
      return a.created_at > b.created_at;
    });
    std::map<std::string, std::vector<std::string>> ports;  // box id -> its exposed ports
    for (const auto& e : ctx.backend().exposures(""))
      ports[e.box_id].push_back(std::to_string(e.port));
    int64_t now = now_ms();
    std::vector<std::vector<std::string>> rows;
    for (const auto& b : boxes) {
      auto p = ports.find(b.id);
      rows.push_back({b.id, b.name, b.spec.image, b.state, to_string(b.spec.network),
                      p == ports.end() ? "" : join(p->second, ","), format_ago(b.created_at, now)});
    }
    print_table({"ID", "NAME", "IMAGE", "STATE", "NETWORK", "PORTS", "CREATED"}, rows);
  });
}

void add_box_inspect_command(CLI::App* box, Context& ctx) {
  auto* c = box->add_subcommand("inspect", "Show a box in detail");
  auto refs = std::make_shared<std::vector<std::string>>();
  c->add_option("box", *refs, "Box id, id prefix or name")->required();
  c->callback([&ctx, refs] {
    Backend& e = ctx.backend();
    json arr = json::array();
    for (const auto& r : *refs) {
      BoxUsage u;
      std::vector<BoxEvent> ev;
      BoxRecord b = e.inspect(r, u, ev);
      if (ctx.json)
        arr.push_back(box_json(b, &u, &ev));
      else
        print_box_human(b, u, ev);
    }
    if (ctx.json) print_json(refs->size() == 1 ? arr[0] : arr);
  });
}

// Adds `add` to `list` and removes `rm` from it; a removal of what is not there is refused by
// name (nothing is changed then).
void edit_list(std::vector<std::string>& list, const std::vector<std::string>& add,
               const std::vector<std::string>& rm, const std::string& what,
               const std::string& box) {
  for (const auto& r : rm) {
    auto it = std::find(list.begin(), list.end(), r);
    if (it == list.end())
      throw_invalid("box " + box + " does not allow " + what + " '" + r + "'" +
                    (list.empty() ? "" : " (it allows " + join(list, ", ") + ")"));
    list.erase(it);
  }
  for (const auto& a : add)
    if (std::find(list.begin(), list.end(), a) == list.end()) list.push_back(a);
}

void add_box_network_command(CLI::App* box, Context& ctx) {
  auto* c = box->add_subcommand(
      "network",
      "Change a box's network mode and egress policy (a running box at once): --allow-* replace "
      "the policy, --add-*/--rm-* edit it; the headers stay unless --header or --clear-headers "
      "is given");
  auto ref = std::make_shared<std::string>();
  auto mode = std::make_shared<std::string>();
  auto eo = std::make_shared<EgressOpts>();
  auto clear = std::make_shared<bool>(false);
  auto add_d = std::make_shared<std::vector<std::string>>();
  auto rm_d = std::make_shared<std::vector<std::string>>();
  auto add_c = std::make_shared<std::vector<std::string>>();
  auto rm_c = std::make_shared<std::vector<std::string>>();
  c->add_option("box", *ref, "Box id, id prefix or name")->required();
  c->add_option("mode", *mode, "none, allow-all or custom (with --add-*/--rm-*: the box's own)");
  add_egress_options(c, *eo);
  c->add_option("--add-domain", *add_d, "custom: add a name to the box's allowed domains")
      ->allow_extra_args(false);
  c->add_option("--rm-domain", *rm_d, "custom: remove a name from the box's allowed domains")
      ->allow_extra_args(false);
  c->add_option("--add-cidr", *add_c, "custom: add a range to the box's allowed CIDRs")
      ->allow_extra_args(false);
  c->add_option("--rm-cidr", *rm_c, "custom: remove a range from the box's allowed CIDRs")
      ->allow_extra_args(false);
  c->add_flag("--clear-headers", *clear, "Remove the box's headers");
  c->callback([&ctx, ref, mode, eo, clear, add_d, rm_d, add_c, rm_c] {
    Egress e = egress_from(*eo);
    bool edit = !add_d->empty() || !rm_d->empty() || !add_c->empty() || !rm_c->empty();
    BoxUsage u;
    std::vector<BoxEvent> ev;
    BoxRecord cur = ctx.backend().inspect(*ref, u, ev);
    NetworkMode m = mode->empty() ? cur.spec.network : parse_network_mode(*mode);
    if (edit) {
      if (!e.allow_domains.empty() || !e.allow_cidrs.empty())
        throw_invalid(
            "--allow-domain/--allow-cidr replace the policy and --add-*/--rm-* edit it: use one "
            "or the other");
      if (m != NetworkMode::custom)
        throw_invalid("--add-*/--rm-* edit a custom network's policy; box " + cur.name + " is " +
                      to_string(m) + " (give the mode custom to start one)");
      e.allow_domains = cur.spec.egress.allow_domains;
      e.allow_cidrs = cur.spec.egress.allow_cidrs;
      if (e.deny_cidrs.empty()) e.deny_cidrs = cur.spec.egress.deny_cidrs;
      // Compared as the policy stores them (lower case; an address as its /32).
      using Parse = std::string (*)(const std::string&, const std::string&);
      auto stored = [](std::vector<std::string> v, Parse parse, const char* what) {
        for (auto& x : v) x = parse(x, what);
        return v;
      };
      Parse dom = egress::parse_domain_pattern, net = egress::parse_cidr;
      edit_list(e.allow_domains, stored(*add_d, dom, "allowed domain"),
                stored(*rm_d, dom, "allowed domain"), "the domain", cur.name);
      edit_list(e.allow_cidrs, stored(*add_c, net, "allowed CIDR"),
                stored(*rm_c, net, "allowed CIDR"), "the range", cur.name);
    } else if (mode->empty()) {
      throw_invalid(
          "give the network mode (none, allow-all or custom), or --add-*/--rm-* to "
          "edit the box's policy");
    }
    BoxRecord b = ctx.backend().set_network(*ref, m, e, eo->headers.empty() && !*clear);
    // A replacement that drops what the box allowed says so (an edit says nothing).
    std::vector<std::string> dropped;
    auto gone = [&dropped](const std::vector<std::string>& was,
                           const std::vector<std::string>& now) {
      for (const auto& x : was)
        if (std::find(now.begin(), now.end(), x) == now.end()) dropped.push_back(x);
    };
    gone(cur.spec.egress.allow_domains, b.spec.egress.allow_domains);
    gone(cur.spec.egress.allow_cidrs, b.spec.egress.allow_cidrs);
    if (!edit && !dropped.empty() && !ctx.json)
      std::cerr << "The policy of " << cur.name << " was replaced; it no longer allows "
                << join(dropped, ", ") << " (--add-domain/--add-cidr add to a policy)\n";
    print_box_ids(ctx, {b});
  });
}

void add_box_expose_command(CLI::App* box, Context& ctx) {
  auto* c = box->add_subcommand(
      "expose",
      "Make a port of the box reachable from the host at a URL, for requests with the "
      "generated credentials (HTTP and WebSocket)");
  auto ref = std::make_shared<std::string>();
  auto port = std::make_shared<int>(0);
  auto auth = std::make_shared<std::string>("bearer");
  c->add_option("box", *ref, "Box id, id prefix or name")->required();
  c->add_option("port", *port, "Port in the box")->required();
  c->add_option("--auth", *auth,
                "bearer (default: a generated token) or basic (a generated user and password)");
  c->callback([&ctx, ref, port, auth] {
    Engine::Exposure e = ctx.backend().expose(*ref, *port, *auth);
    if (ctx.json) {
      print_json(exposure_json(e));
      return;
    }
    std::cout << e.url << "\n";
    if (!e.token.empty())
      std::cout << "Authorization: Bearer " << e.token << "\n";
    else
      std::cout << "user: " << e.username << "\npassword: " << e.password << "\n";
    std::cout << "(shown once: upstream keeps only a hash; revoke with `upstream box unexpose "
              << e.box_name << " " << e.id << "`)" << std::endl;
  });
}

void add_box_exposures_command(CLI::App* box, Context& ctx) {
  auto* c = box->add_subcommand("exposures", "List exposed ports (of one box, or of all)");
  auto ref = std::make_shared<std::string>();
  c->add_option("box", *ref, "Box id, id prefix or name");
  c->callback([&ctx, ref] {
    auto list = ctx.backend().exposures(*ref);
    if (ctx.json) {
      json arr = json::array();
      for (const auto& e : list) arr.push_back(exposure_json(e));
      print_json(arr);
      return;
    }
    std::printf("%-16s %-16s %6s  %-7s %s\n", "ID", "BOX", "PORT", "AUTH", "URL");
    for (const auto& e : list)
      std::printf("%-16s %-16s %6u  %-7s %s\n", e.id.c_str(), e.box_name.c_str(), e.port,
                  e.auth.c_str(), e.url.c_str());
  });
}

void add_box_unexpose_command(CLI::App* box, Context& ctx) {
  auto* c = box->add_subcommand("unexpose", "Revoke an exposed port: its URL stops answering");
  auto ref = std::make_shared<std::string>();
  auto which = std::make_shared<std::string>();
  c->add_option("box", *ref, "Box id, id prefix or name")->required();
  c->add_option("exposure", *which, "Exposure id, or the port in the box")->required();
  c->callback([&ctx, ref, which] { ctx.backend().unexpose(*ref, *which); });
}

void add_box_traffic_command(CLI::App* box, Context& ctx) {
  auto* c = box->add_subcommand(
      "traffic", "Show a box's network counters: per destination, denied attempts, DNS");
  auto ref = std::make_shared<std::string>();
  c->add_option("box", *ref, "Box id, id prefix or name")->required();
  c->callback([&ctx, ref] {
    json j = ctx.backend().net_stats(*ref);
    if (ctx.json) {
      print_json(j);
      return;
    }
    std::printf("%-40s %6s %6s %10s %10s  %s\n", "DESTINATION", "CONNS", "REQS", "OUT", "IN",
                "LAST");
    json dests = j.contains("destinations") ? j["destinations"] : json::object();
    for (const auto& [dest, d] : dests.items())
      std::printf("%-40s %6llu %6llu %10s %10s  %s\n", dest.c_str(),
                  static_cast<unsigned long long>(d.value("connections", uint64_t{0})),
                  static_cast<unsigned long long>(d.value("requests", uint64_t{0})),
                  format_bytes(d.value("bytes_out", uint64_t{0})).c_str(),
                  format_bytes(d.value("bytes_in", uint64_t{0})).c_str(),
                  d.value("last_at", "").c_str());
    json denied = j.contains("denied") ? j["denied"] : json::array();
    if (!denied.empty()) {
      std::printf("\nDENIED\n%-40s %6s  %-20s %s\n", "DESTINATION", "COUNT", "LAST", "REASON");
      for (const auto& d : denied)
        std::printf("%-40s %6llu  %-20s %s\n", d.value("destination", "").c_str(),
                    static_cast<unsigned long long>(d.value("count", uint64_t{0})),
                    d.value("last_at", "").c_str(), d.value("reason", "").c_str());
    }
    json dns = j.contains("dns") ? j["dns"] : json::object();
    std::printf("\nDNS: %llu queries, %llu refused\n",
                static_cast<unsigned long long>(dns.value("queries", uint64_t{0})),
                static_cast<unsigned long long>(dns.value("refused", uint64_t{0})));
  });
}

void add_box_usage_command(CLI::App* box, Context& ctx) {
  auto* c =
      box->add_subcommand("usage", "Show a box's resource usage (and its execs' with --execs)");
  auto ref = std::make_shared<std::string>();
  auto execs = std::make_shared<size_t>(0);
  c->add_option("box", *ref, "Box id, id prefix or name")->required();
  c->add_option("--execs", *execs,
                "Also show the CPU, wall time and peak memory of the last N execs");
  c->callback([&ctx, ref, execs] {
    BoxUsage u = ctx.backend().usage(*ref);
    std::vector<ExecRecord> recs;
    if (*execs) recs = ctx.backend().list_execs(*ref, false, *execs);
    json j = usage_json(u);
    if (ctx.json) {
      if (*execs) {
        j["execs"] = json::array();
        for (const auto& e : recs)
          j["execs"].push_back(
              {{"exec", e.seq},
               {"command", shell_join(e.argv)},
               {"cpu_seconds", static_cast<double>(e.cpu_us) / 1e6},
               {"wall_seconds",
                static_cast<double>((e.ended_at ? e.ended_at : now_ms()) - e.started_at) / 1000.0},
               {"memory_peak_bytes", e.max_rss_kb * 1024},
               {"state", e.state}});
      }
      print_json(j);
      return;
    }
    std::cout << "cpu:          " << format_duration_ms(u.cpu_us / 1000) << " active\n"
              << "running:      " << format_duration_ms(static_cast<uint64_t>(u.running_ms))
              << " (wall clock, all runs)\n"
              << "memory:       " << format_bytes(u.memory) << " (peak "
              << format_bytes(u.memory_peak) << ")\n"
              << "processes:    " << u.pids << "\n"
              << "oom kills:    " << u.oom_kills << "\n";
    if (u.disk_bytes) std::cout << "disk:         " << format_bytes(*u.disk_bytes) << "\n";
    std::cout << "snapshots:    " << u.snapshots << " (" << format_bytes(u.snapshot_bytes)
              << " of their own)\n";
    if (!recs.empty()) {
      std::printf("\n%-6s %-10s %-10s %-10s %s\n", "EXEC", "CPU", "WALL", "PEAK MEM", "COMMAND");
      for (const auto& e : recs) {
        int64_t wall = (e.ended_at ? e.ended_at : now_ms()) - e.started_at;
        std::printf("%-6llu %-10s %-10s %-10s %s\n", static_cast<unsigned long long>(e.seq),
                    format_duration_ms(e.cpu_us / 1000).c_str(),
                    format_duration_ms(static_cast<uint64_t>(std::max<int64_t>(0, wall))).c_str(),
                    format_bytes(e.max_rss_kb * 1024).c_str(), shell_join(e.argv).c_str());
      }
    }
  });
}

void add_box_exec_command(CLI::App* box, Context& ctx) {
  auto* c = box->add_subcommand(
      "exec", "Run a command in a running box: exec [options] BOX -- COMMAND [ARGS...]");
  set_usage(c, "[OPTIONS] BOX [OPTIONS] -- COMMAND [ARG...]");
  c->footer(
      "Examples:\n"
      "  upstream box exec py -- python3 -V\n"
      "  upstream box exec py --timeout 30s -e MODE=fast -- ./train.sh\n"
      "  upstream box exec -it py -- bash\n"
      "  upstream box exec py -c 'cd /work && ls | wc -l'");
  auto x = std::make_shared<ExecOpts>();
  add_exec_options(c, *x);
  c->prefix_command();
  c->allow_extras();
  c->fallthrough(false);
  c->callback([&ctx, c, x] {
    std::vector<std::string> rest = c->remaining();
    // `exec BOX -c 'line'` reads naturally too (unless `--` made -c the command's name).
    bool shell_after_box = rest.size() == 3 && (rest[1] == "-c" || rest[1] == "--shell") &&
                           x->shell.empty() && !(ctx.dashes && !ctx.after_dashes.empty());
    if (ctx.dashes && rest.size() > 1 && starts_with(rest[1], "-") && !shell_after_box) {
      // `exec BOX --timeout 1s -- COMMAND`: before `--`, what follows the box is upstream's
      // options (an unknown one is refused by name), as kubectl reads them.
      std::vector<std::string> more(rest.rbegin(), rest.rend() - 1);  // reversed, for parse()
      rest.resize(1);
      ExecOpts late;
      CLI::App options{"", "upstream box exec " + rest[0]};
      add_exec_options(&options, late);
      options.parse(more);
      merge_exec_options(*x, late, options);
    } else if (ctx.dashes && rest.size() > 1) {
      rest.push_back("--");  // `exec BOX grep -- -x`: the `--` belongs to the command
    }
    if (ctx.dashes) rest.insert(rest.end(), ctx.after_dashes.begin(), ctx.after_dashes.end());
    if (rest.empty())
      throw_invalid("no box given: upstream box exec [options] BOX -- COMMAND [ARGS...]");
    std::string ref = rest[0];
    rest.erase(rest.begin());
    if (shell_after_box) {
      x->shell = rest[1];
      rest.clear();
    }
    ExecSpec spec = exec_spec_from(*x, rest);
    int code = run_foreground(ctx.backend(), ref, spec);
    if (code != 0) throw ExitCode{code};
  });
}

void add_box_ps_command(CLI::App* box, Context& ctx) {
  auto* c = box->add_subcommand("ps", "List the running execs of a box");
  auto ref = std::make_shared<std::string>();
  auto all = std::make_shared<bool>(false);
  c->add_option("box", *ref, "Box id, id prefix or name")->required();
  c->add_flag("--all,-a", *all, "Include every finished exec (the last 50)");
  c->callback([&ctx, ref, all] {
    Backend& e = ctx.backend();
    auto procs = e.exec_processes(*ref);
    std::map<uint64_t, Engine::ExecProcesses> by_seq;
    for (const auto& p : procs) by_seq[p.seq] = p;
    // Running execs, and finished ones whose processes live on (still killable).
    std::vector<ExecRecord> execs;
    for (auto& x : e.list_execs(*ref, false, *all ? 50 : 0))
      if (*all || x.state == "running" || (by_seq.count(x.seq) && by_seq[x.seq].processes > 0))
        execs.push_back(std::move(x));
    if (ctx.json) {
      json arr = json::array();
      for (const auto& x : execs) {
        json j = exec_json(x);
        j["processes"] = by_seq.count(x.seq) ? by_seq[x.seq].processes : 0;
        arr.push_back(j);
      }
      print_json(arr);
      return;
    }
    int64_t now = now_ms();
    std::vector<std::vector<std::string>> rows;
    for (const auto& x : execs) {
      std::string state = exec_result_text(x);
      size_t n = by_seq.count(x.seq) ? by_seq[x.seq].processes : 0;
      if (x.state != "running" && n)
        state += ", " + std::to_string(n) + " process" + (n == 1 ? "" : "es") + " left";
      rows.push_back({std::to_string(x.seq), x.background ? "background" : "foreground", state,
                      format_ago(x.started_at, now), exec_command_text(x)});
    }
    print_table({"EXEC", "MODE", "STATE", "STARTED", "COMMAND"}, rows);
  });
}

void add_box_logs_command(CLI::App* box, Context& ctx) {
  auto* c = box->add_subcommand("logs", "Exec history of a box, or the output of one exec");
  auto ref = std::make_shared<std::string>();
  auto seq = std::make_shared<uint64_t>(0);
  auto follow = std::make_shared<bool>(false);
  auto only_out = std::make_shared<bool>(false), only_err = std::make_shared<bool>(false);
  auto limit = std::make_shared<size_t>(50);
  c->add_option("box", *ref, "Box id, id prefix or name")->required();
  c->add_option("exec", *seq, "Exec number (see `upstream box logs BOX`)");
  c->add_flag("--follow,-f", *follow, "Keep printing output until the exec ends");
  c->add_flag("--stdout", *only_out, "Only standard output");
  c->add_flag("--stderr", *only_err, "Only standard error");
  c->add_option("--last,-n", *limit, "How many execs to list (default 50)");
  c->callback([&ctx, ref, seq, follow, only_out, only_err, limit] {
    Backend& e = ctx.backend();
    if (*seq == 0) {
      auto execs = e.list_execs(*ref, false, *limit);
      if (ctx.json) {
        json arr = json::array();
        for (const auto& x : execs) arr.push_back(exec_json(x));
        print_json(arr);
        return;
      }
      int64_t now = now_ms();
      std::vector<std::vector<std::string>> rows;
      for (const auto& x : execs) {
        std::string dur =
            x.ended_at ? format_duration_ms(static_cast<uint64_t>(x.ended_at - x.started_at)) : "-";
        rows.push_back({std::to_string(x.seq), exec_result_text(x), dur,
                        format_ago(x.started_at, now), exec_command_text(x)});
      }
      print_table({"EXEC", "RESULT", "DURATION", "STARTED", "COMMAND"}, rows);
      return;
    }
    auto rec = e.get_exec(*ref, *seq);
    if (!rec) throw Error(Errc::not_found, "box " + *ref + " has no exec " + std::to_string(*seq));
    if (ctx.json) {
      json j = exec_json(*rec);
      j["stdout_tail"] = rec->stdout_tail;
      j["stderr_tail"] = rec->stderr_tail;
      print_json(j);
      return;
    }
    bool want_out = !*only_err, want_err = !*only_out;
    uint64_t out_off = 0, err_off = 0;
    for (;;) {
      // Whether it still runs is asked before reading, so nothing written before it ended
      // is missed by the last read.
      bool running = false;
      if (*follow) {
        auto now = e.get_exec(*ref, *seq);
        running = now && now->state == "running";
      }
      if (want_out) out_off += e.copy_log(*ref, *seq, Stream::stdout_, out_off, 1);
      if (want_err) err_off += e.copy_log(*ref, *seq, Stream::stderr_, err_off, 2);
      if (!running) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
}

void add_box_kill_command(CLI::App* box, Context& ctx) {
  auto* c = box->add_subcommand(
      "kill", "Kill an exec and every process it started (also what a finished exec left running)");
  auto ref = std::make_shared<std::string>();
  auto seq = std::make_shared<uint64_t>(0);
  auto sig = std::make_shared<std::string>("KILL");
  c->add_option("box", *ref, "Box id, id prefix or name")->required();
  c->add_option("exec", *seq, "Exec number")->required();
  c->add_option("--signal,-s", *sig, "Signal to send to every process of the exec (default KILL)");
  c->callback([&ctx, ref, seq, sig] { ctx.backend().kill_exec(*ref, *seq, parse_signal(*sig)); });
}

void add_box_cp_command(CLI::App* box, Context& ctx) {
  auto* c = box->add_subcommand(
      "cp", "Copy files: cp BOX:PATH LOCAL, cp LOCAL BOX:PATH ('-' is a tar stream)");
  c->footer(
      "Examples:\n"
      "  upstream box cp ./src py:/home/user/src\n"
      "  upstream box cp py:/home/user/out.csv .\n"
      "  upstream box cp py:/home/user/results - | tar -tv");
  auto src = std::make_shared<std::string>(), dst = std::make_shared<std::string>();
  auto user = std::make_shared<std::string>();
  c->add_option("source", *src, "BOX:PATH or a local path")->required();
  c->add_option("destination", *dst, "LOCAL path or BOX:PATH")->required();
  c->add_option("--user,-u", *user,
                "Read and write in the box as this user (default: the box's user)");
  c->callback([&ctx, src, dst, user] {
    std::string sbox, spath, dbox, dpath;
    bool from_box = split_box_path(*src, sbox, spath);
    bool to_box = split_box_path(*dst, dbox, dpath);
    if (from_box == to_box)
      throw_invalid("exactly one of source and destination must be BOX:PATH (got '" + *src +
                    "' and '" + *dst + "')");
    Backend& e = ctx.backend();
    if (from_box) {
      std::string path = spath.empty() ? "." : spath;
      if (*dst == "-")
        e.download_tar(sbox, path, 1, *user);
      else
        e.copy_out(sbox, path, *dst, *user);
    } else {
      std::string path = dpath.empty() ? "." : dpath;
      if (*src == "-")
        e.upload_tar(dbox, path, 0, *user);
      else
        e.copy_in(dbox, *src, path, *user);
    }
  });
}

// A command on several boxes: every name is resolved first (a typo changes nothing), then `op`
// runs for each box, going on past a failure (each reported with the box's name, as docker
// does); the command exits 1 if any failed.
void for_each_box(Context& ctx, const std::vector<std::string>& refs,
                  const std::function<void(const BoxRecord&)>& op) {
  std::vector<BoxRecord> boxes;
  for (const auto& r : refs) boxes.push_back(ctx.backend().get_box(r));
  bool failed = false;
  for (const auto& b : boxes) {
    try {
      op(b);
    } catch (const Error& e) {
      std::cerr << "upstream: error: box " << b.name << ": " << e.what() << std::endl;
      failed = true;
    }
  }
  if (failed) throw ExitCode{kExitError};
}

void add_box_stop_command(CLI::App* box, Context& ctx) {
  auto* c = box->add_subcommand("stop", "Stop boxes: their processes end, their files stay");
  auto refs = std::make_shared<std::vector<std::string>>();
  auto grace = std::make_shared<std::string>("10s");
  c->add_option("box", *refs, "Box ids or names")->required();
  c->add_option("--time,-t", *grace, "How long processes get to exit after SIGTERM (default 10s)");
  c->callback([&ctx, refs, grace] {
    uint64_t ms = parse_duration_ms(*grace, "stop timeout");
    for_each_box(ctx, *refs, [&](const BoxRecord& box) {
      BoxRecord b = ctx.backend().stop_box(box.id, static_cast<int64_t>(ms));
      if (!ctx.json) std::cout << b.id << std::endl;
    });
  });
}

void add_box_rm_command(CLI::App* box, Context& ctx) {
  auto* c = box->add_subcommand("rm", "Remove boxes and everything in them")->alias("remove");
  auto refs = std::make_shared<std::vector<std::string>>();
  auto force = std::make_shared<bool>(false);
  c->add_option("box", *refs, "Box ids or names")->required();
  c->add_flag("--force,-f", *force, "Remove running boxes too (their processes are killed)");
  c->callback([&ctx, refs, force] {
    // Without --force a running box in the list removes nothing.
    if (!*force)
      for (const auto& r : *refs) {
        BoxRecord b = ctx.backend().get_box(r);
        if (box_state::alive(b.state))
          throw Error(Errc::failed_precondition, "box " + b.name + " is " + b.state +
                                                     "; stop it first or remove it with --force");
      }
    for_each_box(ctx, *refs, [&](const BoxRecord& b) {
      ctx.backend().remove_box(b.id, *force);
      if (!ctx.json) std::cout << b.id << std::endl;
    });
  });
}

}  // namespace

void add_box_commands(CLI::App& app, Context& ctx) {
  CLI::App* box = app.add_subcommand("box", "Create and use boxes")->require_subcommand(1);

  // create ------------------------------------------------------------------------------------
  add_box_create_command(box, ctx);
  add_box_fork_command(box, ctx);

  // run ---------------------------------------------------------------------------------------
  add_box_run_command(box, ctx);

  // ls ----------------------------------------------------------------------------------------
  add_box_ls_command(box, ctx);

  // inspect -----------------------------------------------------------------------------------
  add_box_inspect_command(box, ctx);

  // network -----------------------------------------------------------------------------------
  add_box_network_command(box, ctx);

  // expose, exposures, unexpose ---------------------------------------------------------------
  add_box_expose_command(box, ctx);
  add_box_exposures_command(box, ctx);
  add_box_unexpose_command(box, ctx);

  // traffic -----------------------------------------------------------------------------------
  add_box_traffic_command(box, ctx);

  // usage -------------------------------------------------------------------------------------
  add_box_usage_command(box, ctx);

  // exec --------------------------------------------------------------------------------------
  add_box_exec_command(box, ctx);

  // ps ----------------------------------------------------------------------------------------
  add_box_ps_command(box, ctx);

  // logs --------------------------------------------------------------------------------------
  add_box_logs_command(box, ctx);

  // kill --------------------------------------------------------------------------------------
  add_box_kill_command(box, ctx);

  // cp ----------------------------------------------------------------------------------------
  add_box_cp_command(box, ctx);

  // stop / start / rm ---------------------------------------------------------------------------
  add_box_stop_command(box, ctx);
  // Commands that move boxes from one state to another and print each box (its id, or with
  // --json the whole record).
  auto transition = [&](const char* name, const char* what,
                        BoxRecord (Backend::*op)(const std::string&)) {
    auto* c = box->add_subcommand(name, what);
    auto refs = std::make_shared<std::vector<std::string>>();
    c->add_option("box", *refs, "Box ids or names")->required();
    c->callback([&ctx, refs, op] {
      for_each_box(ctx, *refs, [&](const BoxRecord& box) {
        BoxRecord b = (ctx.backend().*op)(box.id);
        if (ctx.json)
          print_json(box_json(b));
        else
          std::cout << b.id << std::endl;
      });
    });
  };
  transition("start", "Start stopped (or archived) boxes with the files they had",
             &Backend::start_box);
  transition("pause", "Pause boxes: their processes are frozen, memory kept, no CPU used",
             &Backend::pause_box);
  transition("resume", "Resume paused boxes where they were (an exec or file call also resumes)",
             &Backend::resume_box);
  transition("archive",
             "Archive stopped boxes: their files packed into the layer store, working directory "
             "freed (start unpacks them)",
             &Backend::archive_box);
  add_box_rm_command(box, ctx);
}

}  // namespace upstream::cli
