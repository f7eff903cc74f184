#include <csignal>
#include <cstring>

#include "cli/cli.h"
#include "common/error.h"
#include "common/strings.h"

namespace upstream::cli {

Limits parse_limits(const std::string& cpus, const std::string& memory, const std::string& pids,
                    const std::string& disk) {
  Limits l;
  if (!cpus.empty()) l.cpu_milli = parse_cpus_milli(cpus);
  if (!memory.empty()) l.memory = parse_size(memory, "memory limit");
  if (!disk.empty()) l.disk = parse_size(disk, "disk limit");
  if (!pids.empty()) {
    std::string t = trim(pids);
    if (t.empty() || t.find_first_not_of("0123456789") != std::string::npos || t.size() > 9)
      throw_invalid("invalid pids limit '" + pids + "': expected a whole number");
    l.pids = std::stoull(t);
  }
  return l;
}

std::vector<std::string> parse_env_list(const std::vector<std::string>& items) {
  std::vector<std::string> out;
  for (const auto& item : items) {
    auto [k, v] = parse_env_entry(item);
    out.push_back(k + "=" + v);
  }
  return out;
}

std::map<std::string, std::string> parse_labels(const std::vector<std::string>& items) {
  std::map<std::string, std::string> out;
  for (const auto& item : items) {
    auto [k, v] = parse_label(item);
    out[k] = v;
  }
  return out;
}

void Context::require_local(const std::string& what) const {
  if (remote)
    throw Error(Errc::failed_precondition,
                what +
                    " works on the local state directory only, not over HTTP yet; unset "
                    "UPSTREAM_URL to use it");
}

}  // namespace upstream::cli
