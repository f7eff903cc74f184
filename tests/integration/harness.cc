#include "harness.h"

#include <dirent.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "common/fd.h"
#include "common/proc.h"
#include "common/strings.h"
#include "storage/layout.h"

namespace upstream::testing {

namespace {

std::unique_ptr<Engine> g_engine;
std::string g_home;

class Env : public ::testing::Environment {
 public:
  void SetUp() override {
    if (::geteuid() != 0) {
      std::fprintf(stderr, "integration tests need root\n");
      std::exit(1);
    }
    char tmpl[] = "/tmp/upstream-it-XXXXXX";
    g_home = ::mkdtemp(tmpl);
    EngineOptions o = EngineOptions::from_environment();
    o.home = g_home;
    o.pool_size = 8ull << 30;
    o.default_limits.memory = 1ull << 30;
    o.default_limits.disk = 2ull << 30;
    g_engine = Engine::open(o);
  }
  void TearDown() override {
    if (g_engine) {
      for (const auto& b : g_engine->list_boxes()) {
        try {
          g_engine->remove_box(b.id, true);
        } catch (...) {
        }
      }
      g_engine.reset();
    }
    ::umount2((g_home + "/pool").c_str(), MNT_DETACH);
    remove_tree(g_home);
  }
};

[[maybe_unused]] auto* g_env = ::testing::AddGlobalTestEnvironment(new Env);

}  // namespace

Engine& engine() { return *g_engine; }
const std::string& home() { return g_home; }

Result run(const std::string& box, const std::vector<std::string>& argv, ExecSpec spec) {
  spec.argv = argv;
  Result r;
  auto s = engine().start_exec(box, spec);
  r.rec = s->wait(
      [&](Stream st, std::string_view d) { (st == Stream::stdout_ ? r.out : r.err).append(d); });
  if (s->finished() && r.err.empty()) r.err = r.rec.stderr_tail;
  return r;
}

std::string sh(const std::string& box, const std::string& line, const std::string& user) {
  ExecSpec spec;
  spec.shell = line;
  spec.user = user;
  Result r;
  auto s = engine().start_exec(box, spec);
  r.rec = s->wait(
      [&](Stream st, std::string_view d) { (st == Stream::stdout_ ? r.out : r.err).append(d); });
  EXPECT_EQ(r.code(), 0) << "command: " << line << "\nstderr: " << r.err << "\nstdout: " << r.out;
  return r.out;
}

ScopedBox::ScopedBox(BoxSpec spec) { rec = engine().create_box(std::move(spec)); }
ScopedBox::~ScopedBox() {
  try {
    engine().remove_box(rec.id, true);
  } catch (...) {
  }
}

std::vector<std::string> host_mounts_under(const std::string& prefix) {
  std::vector<std::string> out;
  std::ifstream f("/proc/self/mountinfo");
  std::string line;
  while (std::getline(f, line)) {
    auto parts = split(line, ' ');
    if (parts.size() > 4 && starts_with(parts[4], prefix)) out.push_back(parts[4]);
  }
  return out;
}

std::vector<pid_t> processes_with_uid_at_least(uid_t uid) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  while (dirent* e = ::readdir(d)) {
    if (!std::isdigit(static_cast<unsigned char>(e->d_name[0]))) continue;
    struct stat st;
    pid_t pid = std::atoi(e->d_name);
    // Zombies hold nothing but a pid; they wait for the host's init to collect them.
    if (::stat((std::string("/proc/") + e->d_name).c_str(), &st) == 0 && st.st_uid >= uid &&
        process_start_time(pid).has_value())
      out.push_back(pid);
  }
  ::closedir(d);
  return out;
}

std::string cgroup_group() {
  // The instance id is the first thing system_info reports about the state directory.
  return "upstream-" + engine().system_info().instance;
}

bool path_exists(const std::string& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0;
}

const std::string& busybox_rootfs() {
  static std::string root = [] {
    std::string r = g_home + "/busybox-rootfs";
    for (const char* d : {"bin", "etc", "tmp", "root"}) make_dirs(r + "/" + d);
    ::chmod((r + "/tmp").c_str(), 01777);
    write_file_atomic(r + "/bin/busybox", read_file("/bin/busybox"), 0755);
    for (const char* c :
         {"sh", "ls", "cat", "echo", "id", "ps", "sleep", "hostname", "touch", "mkdir", "rm", "wc"})
      ::symlink("busybox", (r + "/bin/" + c).c_str());
    write_file_atomic(r + "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0644);
    write_file_atomic(r + "/etc/group", "root:x:0:\n", 0644);
    return r;
  }();
  return root;
}

}  // namespace upstream::testing
