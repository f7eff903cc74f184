#include "pipeline/context.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#include <algorithm>
#include <memory>

#include "common/error.h"
#include "common/fd.h"
#include "common/strings.h"
#include "common/time.h"

namespace upstream::pipeline {

using json = nlohmann::json;

json step_to_json(const StepRecord& s) {
  json j = {{"index", s.index},
            {"name", s.name},
            {"lang", s.lang},
            {"code", s.code},
            {"status", s.status},
            {"started_at", s.started_at},
            {"duration_ms", s.duration_ms},
            {"output_lines", s.output_lines},
            {"output_bytes", s.output_bytes},
            {"result", s.result}};
  j["exit_code"] = s.exit_code ? json(*s.exit_code) : json(nullptr);
  if (s.signal) j["signal"] = s.signal;
  if (!s.result_error.empty()) j["result_error"] = s.result_error;
  return j;
}

StepRecord step_from_json(const json& j) {
  StepRecord s;
  s.index = j.value("index", 0);
  s.name = j.value("name", "");
  s.lang = j.value("lang", "");
  s.code = j.value("code", "");
  s.status = j.value("status", "");
  if (j.contains("exit_code") && j["exit_code"].is_number_integer())
    s.exit_code = j["exit_code"].get<int>();
  s.signal = j.value("signal", 0);
  s.started_at = j.value("started_at", int64_t{0});
  s.duration_ms = j.value("duration_ms", int64_t{0});
  s.output_lines = j.value("output_lines", uint64_t{0});
  s.output_bytes = j.value("output_bytes", uint64_t{0});
  if (j.contains("result")) s.result = j["result"];
  s.result_error = j.value("result_error", "");
  return s;
}

json turn_to_json(const TurnRecord& t) {
  json steps = json::array(), artifacts = json::array();
  for (const auto& s : t.steps) steps.push_back(step_to_json(s));
  for (const auto& a : t.artifacts) artifacts.push_back({{"path", a.path}, {"size", a.size}});
  return {{"turn", t.turn},
          {"run_id", t.run_id},
          {"session", t.session},
          {"document", t.document},
          {"box", t.box},
          {"status", t.status},
          {"started_at", t.started_at},
          {"duration_ms", t.duration_ms},
          {"steps", steps},
          {"artifacts", artifacts}};
}

TurnRecord turn_from_json(const json& j) {
  TurnRecord t;
  t.turn = j.value("turn", 0);
  t.run_id = j.value("run_id", "");
  t.session = j.value("session", "");
  t.document = j.value("document", "");
  t.box = j.value("box", "");
  t.status = j.value("status", "");
  t.started_at = j.value("started_at", int64_t{0});
  t.duration_ms = j.value("duration_ms", int64_t{0});
  for (const auto& s : j.value("steps", json::array())) t.steps.push_back(step_from_json(s));
  for (const auto& a : j.value("artifacts", json::array()))
    t.artifacts.push_back({a.value("path", ""), a.value("size", uint64_t{0})});
  return t;
}

ContextStore::ContextStore(std::string root) : root_(std::move(root)) {}

bool ContextStore::exists(const std::string& name) const {
  struct stat st;
  return valid_box_name(name) && ::stat((dir(name) + "/state.json").c_str(), &st) == 0;
}

std::vector<std::string> ContextStore::names() const {
  std::vector<std::string> out;
  DIR* d = ::opendir(root_.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == ".." || !valid_box_name(n)) continue;
    if (exists(n)) out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

FileLock ContextStore::lock(const std::string& name) {
  make_dirs(dir(name), 0700);
  auto l = FileLock::try_lock(dir(name) + "/.lock");
  if (!l)
    throw Error(Errc::failed_precondition,
                "session '" + name +
                    "' is running a turn already; wait for it to end (one turn at a time)");
  return std::move(*l);
}

std::string stored_session_name(const std::string& ref) {
  auto slash = ref.find('/');
  if (slash == std::string::npos) return ref;
  std::string tenant = ref.substr(0, slash), name = ref.substr(slash + 1);
  if (tenant.empty() || name.empty() || tenant.find('_') != std::string::npos ||
      name.find('/') != std::string::npos)
    throw Error(Errc::invalid_argument,
                "invalid session '" + ref + "': expected NAME or TENANT/NAME");
  return tenant + "_" + name;
}

std::string shown_session_name(const SessionState& s) {
  if (s.tenant && !s.tenant->empty() && s.name.starts_with(*s.tenant + "_"))
    return s.name.substr(s.tenant->size() + 1);
  return s.name;
}

bool session_belongs_to(const SessionState& s, const std::string& tenant) {
  if (s.tenant) return *s.tenant == tenant;
  // Written before sessions recorded it: a tenant's are the ones under its prefix.
  return tenant.empty() || s.name.starts_with(tenant + "_");
}

std::optional<SessionState> ContextStore::state(const std::string& name) const {
  auto text = try_read_file(dir(name) + "/state.json");
  if (!text) return std::nullopt;
  json j = json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    throw Error(Errc::internal, "the session state " + dir(name) + "/state.json is damaged");
  SessionState s;
  s.name = j.value("name", name);
  s.box_id = j.value("box", "");
  s.created_at = j.value("created_at", int64_t{0});
  s.updated_at = j.value("updated_at", int64_t{0});
  s.cwd = j.value("cwd", "");
  if (j.contains("tenant") && j["tenant"].is_string()) s.tenant = j["tenant"].get<std::string>();
  for (const auto& e : j.value("env", json::array()))
    if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string())
      s.env.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
  return s;
}

void ContextStore::save_state(const SessionState& s) {
  make_dirs(dir(s.name), 0700);
  json env = json::array();
  for (const auto& [k, v] : s.env) env.push_back({k, v});
  json j = {{"name", s.name},
            {"box", s.box_id},
            {"created_at", s.created_at},
            {"updated_at", s.updated_at},
            {"env", env},
            {"cwd", s.cwd}};
  if (s.tenant) j["tenant"] = *s.tenant;
  write_file_atomic(dir(s.name) + "/state.json", j.dump(2) + "\n", 0600);
}

std::vector<TurnRecord> ContextStore::turns(const std::string& name) const {
  std::vector<TurnRecord> out;
  DIR* d = ::opendir(dir(name).c_str());
  if (!d) return out;
  std::vector<int> numbers;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (!starts_with(n, "turn-") || n.size() > 14) continue;
    std::string digits = n.substr(5);
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    numbers.push_back(std::stoi(digits));
  }
  ::closedir(d);
  std::sort(numbers.begin(), numbers.end());
  for (int k : numbers) {
    auto text = try_read_file(turn_dir(name, k) + "/turn.json");
    if (!text) continue;
    json j = json::parse(*text, nullptr, false);
    if (j.is_discarded()) continue;
    out.push_back(turn_from_json(j));
  }
  return out;
}

std::string ContextStore::begin_turn(const std::string& name, int turn) {
  make_dirs(dir(name), 0700);
  // Staging directories of turns a crash interrupted are of no use to anyone.
  if (DIR* d = ::opendir(dir(name).c_str())) {
    std::vector<std::string> stale;
    while (dirent* e = ::readdir(d))
      if (starts_with(e->d_name, ".staging-")) stale.push_back(e->d_name);
    ::closedir(d);
    for (const auto& s : stale) remove_tree(dir(name) + "/" + s);
  }
  std::string staging = dir(name) + "/.staging-" + std::to_string(turn);
  make_dirs(staging + "/steps", 0755);
  make_dirs(staging + "/artifacts", 0755);
  return staging;
}

void ContextStore::publish_turn(const std::string& name, const std::string& staging,
                                const TurnRecord& t) {
  write_file_atomic(staging + "/turn.json", turn_to_json(t).dump(2) + "\n");
  // Everything the turn wrote (step results, logs, artifacts) reaches the disk before the turn
  // is listed.
  if (UniqueFd s(::open(staging.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)); s) ::syncfs(s.get());
  std::string final_dir = turn_dir(name, t.turn);
  remove_tree(final_dir);  // a half-published turn of a crashed run with our number
  if (::rename(staging.c_str(), final_dir.c_str()) != 0) throw_sys("rename " + staging);
  // Make the rename durable before the manifest names it.
  UniqueFd d(::open(dir(name).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d) ::fsync(d.get());
  write_file_atomic(dir(name) + "/context.json", manifest(name).dump(2) + "\n");
}

json ContextStore::manifest(const std::string& name) const {
  json list = json::array();
  for (const auto& t : turns(name)) {
    std::string base = "turn-" + std::to_string(t.turn);
    json steps = json::array(), artifacts = json::array();
    for (const auto& s : t.steps) {
      json e = {{"index", s.index},
                {"name", s.name},
                {"status", s.status},
                {"result", base + "/steps/" + std::to_string(s.index) + "/result.json"}};
      e["exit_code"] = s.exit_code ? json(*s.exit_code) : json(nullptr);
      steps.push_back(e);
    }
    for (const auto& a : t.artifacts)
      artifacts.push_back({{"path", base + "/artifacts/" + a.path}, {"size", a.size}});
    list.push_back({{"turn", t.turn},
                    {"run_id", t.run_id},
                    {"status", t.status},
                    {"started_at", format_time(t.started_at)},
                    {"duration_ms", t.duration_ms},
                    {"document", base + "/document.md"},
                    {"steps", steps},
                    {"artifacts", artifacts}});
  }
  return {{"session", name}, {"turns", list}};
}

void ContextStore::remove(const std::string& name) {
  if (!valid_box_name(name))
    throw Error(Errc::invalid_argument, "invalid session name '" + name + "'");
  // The state file goes first: a session half removed by a crash is no longer listed.
  std::string d = dir(name);
  if (::unlink((d + "/state.json").c_str()) != 0 && errno != ENOENT)
    throw_sys("remove " + d + "/state.json");
  remove_tree(d);
}

namespace {

void walk(int dirfd, const std::string& prefix, std::vector<ArtifactRecord>& out) {
  int fd = ::dup(dirfd);
  if (fd < 0) return;
  DIR* d = ::fdopendir(fd);
  if (!d) {
    ::close(fd);
    return;
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    struct stat st;
    if (::fstatat(dirfd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    std::string rel = prefix.empty() ? n : prefix + "/" + n;
    if (S_ISDIR(st.st_mode)) {
      UniqueFd sub(::openat(dirfd, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (sub) walk(sub.get(), rel, out);
    } else {
      out.push_back({rel, S_ISREG(st.st_mode) ? static_cast<uint64_t>(st.st_size) : 0});
    }
  }
  ::closedir(d);
}

}  // namespace

std::vector<ArtifactRecord> list_tree(const std::string& dir) {
  std::vector<ArtifactRecord> out;
  UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (d) walk(d.get(), "", out);
  return out;
}

void export_context(const ContextStore& store, const std::string& name, int fd) {
  std::unique_ptr<archive, decltype(&archive_write_free)> a(archive_write_new(),
                                                            archive_write_free);
  archive_write_set_format_pax_restricted(a.get());
  if (archive_write_open_fd(a.get(), fd) != ARCHIVE_OK)
    throw Error(std::string("tar: ") + archive_error_string(a.get()));
  auto fail = [&] { throw Error(std::string("tar: ") + archive_error_string(a.get())); };
  std::string base = store.dir(name);
  std::vector<std::string> files = {"context.json"};
  for (const auto& t : store.turns(name))
    for (const auto& f : list_tree(store.turn_dir(name, t.turn)))
      files.push_back("turn-" + std::to_string(t.turn) + "/" + f.path);
  for (const auto& rel : files) {
    std::string path = base + "/" + rel;
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) continue;
    std::unique_ptr<archive_entry, decltype(&archive_entry_free)> e(archive_entry_new(),
                                                                    archive_entry_free);
    archive_entry_set_pathname(e.get(), (name + "/" + rel).c_str());
    archive_entry_set_mtime(e.get(), st.st_mtime, 0);
    if (S_ISLNK(st.st_mode)) {
      char target[4096];
      ssize_t n = ::readlink(path.c_str(), target, sizeof target - 1);
      if (n < 0) continue;
      target[n] = 0;
      archive_entry_set_filetype(e.get(), AE_IFLNK);
      archive_entry_set_perm(e.get(), 0777);
      archive_entry_set_symlink(e.get(), target);
      if (archive_write_header(a.get(), e.get()) != ARCHIVE_OK) fail();
      continue;
    }
    if (!S_ISREG(st.st_mode)) continue;
    UniqueFd in(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!in) continue;
    archive_entry_set_filetype(e.get(), AE_IFREG);
    archive_entry_set_perm(e.get(), st.st_mode & 0777);
    archive_entry_set_size(e.get(), st.st_size);
    if (archive_write_header(a.get(), e.get()) != ARCHIVE_OK) fail();
    char buf[64 * 1024];
    int64_t left = st.st_size;
    while (left > 0) {
      ssize_t n = ::read(in.get(), buf, static_cast<size_t>(std::min<int64_t>(left, sizeof buf)));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw Error(path + " changed while it was archived");
      if (archive_write_data(a.get(), buf, static_cast<size_t>(n)) < 0) fail();
      left -= n;
    }
  }
  if (archive_write_close(a.get()) != ARCHIVE_OK) fail();
}

}  // namespace upstream::pipeline
