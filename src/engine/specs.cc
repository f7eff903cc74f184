#include <unistd.h>

#include <cctype>

#include "common/error.h"
#include "common/strings.h"
#include "engine/impl.h"
#include "model/egress.h"

namespace upstream {

namespace {

void check_user(const std::string& user) {
  if (user.empty()) return;
  if (user.size() > 64) throw_invalid("user name is too long");
  for (char c : user)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' ||
          c == ':'))
      throw_invalid("invalid user '" + user + "': use root, user, a user name, or uid[:gid]");
}

void check_box_path(const std::string& p, const char* what) {
  if (p.empty() || p[0] != '/')
    throw_invalid(std::string(what) + " must be an absolute path, not '" + p + "'");
  if (p.find('\0') != std::string::npos) throw_invalid(std::string(what) + " contains a NUL byte");
}

}  // namespace

void validate_box_spec(BoxSpec& spec) {
  if (!spec.name.empty() && !valid_box_name(spec.name))
    throw_invalid(
        "invalid box name '" + spec.name +
        "': use up to 63 letters, digits, '_', '.' or '-', starting with a letter or digit");
  if (!spec.name.empty() && spec.name.size() == 12) {
    bool hex = true;
    for (char c : spec.name)
      if (!std::isxdigit(static_cast<unsigned char>(c)) ||
          std::isupper(static_cast<unsigned char>(c)))
        hex = false;
    if (hex) throw_invalid("box name '" + spec.name + "' looks like a box id; choose another name");
  }
  for (const auto& e : spec.env) parse_env_entry(e);
  for (const auto& [k, v] : spec.labels) parse_label(k + "=" + v);
  if (spec.policy.auto_pause_ms < 0 || spec.policy.auto_stop_ms < 0)
    throw_invalid("policy times must not be negative (0 means never)");
  const Limits& l = spec.limits;
  if (l.memory && *l.memory < (16ull << 20)) throw_invalid("memory limit must be at least 16 MiB");
  if (l.pids && (*l.pids < 16 || *l.pids > 4'000'000))
    throw_invalid("pids limit must be between 16 and 4000000");
  if (l.disk && *l.disk < (64ull << 20)) throw_invalid("disk limit must be at least 64 MiB");
  if (l.cpu_milli && *l.cpu_milli < 10) throw_invalid("CPU limit must be at least 0.01");
  if (l.cpu_milli) {
    long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus > 0 && *l.cpu_milli > static_cast<uint64_t>(cpus) * 1000)
      throw_invalid("CPU limit " + std::to_string(*l.cpu_milli / 1000.0).substr(0, 6) +
                    " is more than the " + std::to_string(cpus) + " CPUs of this host");
  }
  check_user(spec.user);
  check_box_path(spec.workdir, "working directory");
  egress::validate(spec.network, spec.egress);
}

void validate_exec_spec(const ExecSpec& spec) {
  if (spec.argv.empty() && spec.shell.empty()) throw_invalid("no command given");
  if (!spec.argv.empty() && !spec.shell.empty())
    throw_invalid("give either a command or a shell string, not both");
  if (!spec.argv.empty() && spec.argv[0].empty()) throw_invalid("the command name is empty");
  for (const auto& a : spec.argv)
    if (a.find('\0') != std::string::npos) throw_invalid("a command argument contains a NUL byte");
  for (const auto& e : spec.env) parse_env_entry(e);
  check_user(spec.user);
  if (!spec.cwd.empty()) check_box_path(spec.cwd, "working directory");
  if (spec.tty && spec.background) throw_invalid("a background exec cannot have a terminal");
  if (spec.stdin && spec.background) throw_invalid("a background exec cannot read stdin");
}

std::string box_path(const std::string& path, const std::string& base) {
  if (path.empty()) throw_invalid("empty path");
  if (path.find('\0') != std::string::npos) throw_invalid("path contains a NUL byte");
  std::string full = path[0] == '/' ? path : base + "/" + path;
  // Normalise lexically; the kernel resolves the result inside the box anyway.
  std::vector<std::string> out;
  for (const auto& c : split(full, '/')) {
    if (c.empty() || c == ".") continue;
    if (c == "..") {
      if (!out.empty()) out.pop_back();
      continue;
    }
    out.push_back(c);
  }
  return "/" + join(out, "/");
}

}  // namespace upstream
