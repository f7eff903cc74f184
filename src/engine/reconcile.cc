// Bringing records in line with reality after crashes: an init killed with -9, a CLI killed in
// the middle of a create or a remove, a host reboot. Nothing here guesses: a transition is
// finished or undone according to what the record says was under way.
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include "common/error.h"
#include "common/init_protocol.h"
#include "common/proc.h"
#include "common/strings.h"
#include "common/time.h"
#include "engine/impl.h"

namespace upstream {

using nlohmann::json;

std::string Engine::Impl::read_tail(const std::string& path, size_t max, uint64_t& total) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  total = 0;
  if (!fd) return "";
  off_t size = ::lseek(fd.get(), 0, SEEK_END);
  if (size <= 0) return "";
  total = static_cast<uint64_t>(size);
  off_t from = size > static_cast<off_t>(max) ? size - static_cast<off_t>(max) : 0;
  std::string out(static_cast<size_t>(size - from), '\0');
  ssize_t n = ::pread(fd.get(), out.data(), out.size(), from);
  out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return out;
}

void Engine::Impl::finish_exec_from_status(ExecRecord e, const BoxRecord& box) {
  std::string status_text = try_read_file(log_path(box.id, e.seq, "status"), 1 << 16).value_or("");
  json j = json::parse(status_text, nullptr, false);
  bool have = !status_text.empty() && j.is_object() && j.contains("code");
  if (!have) {
    if (box_state::alive(box.state) && process_matches(box.init_pid, box.init_start))
      return;  // still running
    e.state = "lost";
    e.reason = "box-stopped";
    e.ended_at = now_ms();
  } else {
    initproto::ExitStatus st = j.get<initproto::ExitStatus>();
    e.state = starts_with(st.reason, "failed") ? "failed" : "exited";
    e.exit_code = st.code;
    e.signal = st.signal;
    e.reason = st.reason;
    e.timed_out = st.timed_out;
    e.started_at = st.started_at ? st.started_at : e.started_at;
    e.ended_at = st.ended_at;
    e.cpu_us = st.cpu_us;
    e.max_rss_kb = st.max_rss_kb;
  }
  e.stdout_tail = read_tail(log_path(box.id, e.seq, "out"), opts.exec_tail_bytes, e.stdout_bytes);
  e.stderr_tail = read_tail(log_path(box.id, e.seq, "err"), opts.exec_tail_bytes, e.stderr_bytes);
  store.finish_exec(e);
}

void Engine::Impl::refresh_execs(const BoxRecord& box) {
  for (auto& e : store.list_execs(box.id, true, 0)) finish_exec_from_status(e, box);
}

void Engine::reconcile() {
  Impl& I = *impl_;
  std::lock_guard g(I.mu);
  auto guard = FileLock::try_lock(I.layout.lock("reconcile"));
  if (!guard) return;  // someone else is at it

  std::string boot = boot_id();
  bool rebooted = I.store.meta("boot_id") != boot;

  // Listed before the records are read: anything created after this listing has its record
  // committed already, so nothing in flight is mistaken for a leftover.
  std::vector<std::string> cgroups = runtime::BoxCgroup::list(I.cgroups, I.cgroup_group);
  std::vector<std::string> volumes = I.pool.list_volumes();
  std::vector<std::string> sockets;
  if (DIR* d = ::opendir(I.layout.run_dir().c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n.size() > 5 && n.substr(n.size() - 5) == ".sock")
        sockets.push_back(n.substr(0, n.size() - 5));
    }
    ::closedir(d);
  }

  std::set<std::string> known;
  for (const BoxRecord& b : I.store.list()) {
    known.insert(b.id);
    bool owner_alive = b.owner_pid && process_matches(b.owner_pid, b.owner_start);
    try {
      if (b.state == box_state::creating && !owner_alive) {
        auto lock = I.lock_box(b.id);
        if (b.init_pid) I.stop_init(b, 0);
        I.cleanup_failed_create(b.id);
        known.erase(b.id);
      } else if (b.state == box_state::removing && !owner_alive) {
        auto lock = I.lock_box(b.id);
        if (b.init_pid) I.stop_init(b, 0);
        I.cleanup_failed_create(b.id);
        known.erase(b.id);
      } else if ((b.state == box_state::starting || b.state == box_state::stopping) &&
                 !owner_alive) {
        auto lock = I.lock_box(b.id);
        runtime::CgroupUsage u = I.stop_init(b, 0);
        I.refresh_execs(b);
        I.store.mark_stopped(b.id, b.state == box_state::starting ? "start interrupted" : "stopped",
                             u.cpu_us, u.memory_peak, u.oom_kills);
      } else if (box_state::alive(b.state)) {
        I.check_alive(b);
      } else if (b.state == box_state::archived) {
        // An archive interrupted after it was recorded: the working directory goes now. (A
        // live archive or unarchive holds the box's lock.)
        if (auto lock = FileLock::try_lock(I.layout.lock("box-" + b.id))) {
          remove_tree(I.volume(b.id) + "/fs");
          remove_tree(I.volume(b.id) + "/fs.unpacking");
        }
      } else if (b.state == box_state::stopped &&
                 std::find(cgroups.begin(), cgroups.end(), b.id) != cgroups.end()) {
        // A stopped box with processes: a file session's temporary init whose caller died.
        // A live session holds the box's lock; only an abandoned one is cleaned up.
        if (auto lock = FileLock::try_lock(I.layout.lock("box-" + b.id))) {
          I.cgroup(b.id).destroy(3000);
          ::unlink(I.layout.socket(b.id).c_str());
        }
      }
    } catch (const Error&) {
      // Left for the next reconciliation; one broken box must not block the others.
    }
  }
  if (rebooted) I.store.set_meta("boot_id", boot);

  for (const auto& id : cgroups)
    if (!known.count(id)) I.cgroup(id).destroy(3000);
  for (const auto& id : volumes)
    if (!known.count(id)) {
      try {
        I.pool.destroy_volume(id);
      } catch (const Error&) {
      }
    }
  for (const auto& id : sockets)
    if (!known.count(id)) ::unlink(I.layout.socket(id).c_str());
  // Layers of interrupted snapshots and imports.
  try {
    I.gc_layers();
  } catch (const Error&) {
  }
}

}  // namespace upstream
