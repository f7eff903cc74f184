#include <csignal>
#include <cstring>

#include "cli/cli.h"
#include "common/error.h"
#include "common/strings.h"
#include "model/egress.h"

namespace upstream::cli {

void add_egress_options(CLI::App* c, EgressOpts& o, bool headers) {
  c->add_option("--allow-domain", o.allow_domains,
                "custom: a name the box may reach over HTTP(S) and resolve, e.g. pypi.org or "
                "*.example.com (repeatable)")
      ->allow_extra_args(false);
  c->add_option("--allow-cidr", o.allow_cidrs,
                "custom: an IPv4 range the box may reach on any port (repeatable)")
      ->allow_extra_args(false);
  c->add_option("--deny-cidr", o.deny_cidrs,
                "custom: an IPv4 range the box never reaches, whatever else allows it (repeatable)")
      ->allow_extra_args(false);
  if (!headers) return;
  c->add_option("--header", o.headers,
                "'HOST=Name: value': a header the host proxy adds to the box's HTTPS requests to "
                "HOST (or *.domain); the value never enters the box (repeatable)")
      ->allow_extra_args(false);
}

Egress egress_from(const EgressOpts& o) {
  Egress e;
  e.allow_domains = o.allow_domains;
  e.allow_cidrs = o.allow_cidrs;
  e.deny_cidrs = o.deny_cidrs;
  for (const auto& h : o.headers) {
    auto eq = h.find('=');
    auto colon = eq == std::string::npos ? std::string::npos : h.find(':', eq);
    if (eq == std::string::npos || eq == 0 || colon == std::string::npos)
      throw_invalid("invalid --header '" + h +
                    "': use HOST=Name: value, e.g. "
                    "'api.example.com=Authorization: Bearer TOKEN'");
    std::string name = trim(h.substr(eq + 1, colon - eq - 1));
    e.headers[h.substr(0, eq)][name] = trim(h.substr(colon + 1));
  }
  return e;
}

std::optional<pipeline::RunNetwork> network_options(const std::string& mode, const EgressOpts& o) {
  if (mode.empty() && o.allow_domains.empty() && o.allow_cidrs.empty() && o.deny_cidrs.empty())
    return std::nullopt;
  pipeline::RunNetwork n;
  if (!mode.empty()) n.mode = parse_network_mode(mode);
  n.egress = egress_from(o);
  egress::validate(n.mode, n.egress);
  return n;
}

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
