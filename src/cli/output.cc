#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "cli/cli.h"
#include "common/strings.h"
#include "common/time.h"

namespace upstream::cli {

using nlohmann::json;

std::string limits_text(const Limits& l) {
  std::vector<std::string> parts;
  if (l.cpu_milli) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", static_cast<double>(*l.cpu_milli) / 1000.0);
    parts.push_back(std::string("cpus=") + buf);
  }
  if (l.memory) parts.push_back("memory=" + format_bytes(*l.memory));
  if (l.pids) parts.push_back("pids=" + std::to_string(*l.pids));
  if (l.disk) parts.push_back("disk=" + format_bytes(*l.disk));
  return parts.empty() ? "none" : join(parts, " ");
}

void print_table(const std::vector<std::string>& headers,
                 const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> w(headers.size());
  for (size_t i = 0; i < headers.size(); i++) w[i] = headers[i].size();
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size() && i < w.size(); i++) w[i] = std::max(w[i], r[i].size());
  auto line = [&](const std::vector<std::string>& r) {
    std::string out;
    for (size_t i = 0; i < r.size(); i++) {
      out += r[i];
      if (i + 1 < r.size()) out += std::string(w[i] - r[i].size() + 3, ' ');
    }
    std::cout << out << "\n";
  };
  line(headers);
  for (const auto& r : rows) line(r);
  std::cout.flush();
}

void print_json(const json& j) { std::cout << j.dump(2) << std::endl; }

}  // namespace upstream::cli
