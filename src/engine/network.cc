// Box networks on the engine's side: netd and the host firewall made ready, each box's policy
// file and firewall rules kept in step with its spec and state, and its counters read back.
#include <dirent.h>
#include <unistd.h>

#include "common/error.h"
#include "common/fd.h"
#include "common/proc.h"
#include "common/strings.h"
#include "engine/impl.h"
#include "netd/ca.h"
#include "netd/egress.h"
#include "netd/netd.h"
#include "runtime/net.h"

namespace upstream {

using nlohmann::json;

namespace {

bool proxied(const BoxSpec& s) { return s.network == "custom" || !s.egress.headers.empty(); }

}  // namespace

std::string Engine::Impl::net_stats_dir(const std::string& box_id) const {
  return layout.home + "/net/" + box_id;
}

void Engine::Impl::ensure_firewall() {
  std::string exe = opts.netd_exe.empty() ? self_exe() : opts.netd_exe;
  netd::Ports ports = netd::ensure_running(exe);
  if (firewall_ports[0] == ports.proxy && firewall_ports[1] == ports.dns) return;
  bool rebuilt = runtime::install_firewall(opts.open_private, ports.proxy, ports.dns);
  // Policies of boxes that are gone (a kill -9 before their stop) go with their rules; after a
  // rebuild, the live ones get their rules back.
  if (DIR* d = ::opendir(netd::run_dir().c_str())) {
    std::vector<std::string> names;
    while (dirent* e = ::readdir(d)) names.push_back(e->d_name);
    ::closedir(d);
    for (const auto& n : names) {
      if (n.size() < 6 || n.substr(n.size() - 5) != ".json" || n == "netd.json") continue;
      std::string num = n.substr(0, n.size() - 5);
      if (num.find_first_not_of("0123456789") != std::string::npos) continue;
      uint32_t slot = static_cast<uint32_t>(std::stoul(num));
      try {
        egress::BoxPolicy p =
            egress::policy_from_json(json::parse(read_file(netd::policy_path(slot))));
        if (!process_matches(p.init_pid, p.init_start)) {
          ::unlink(netd::policy_path(slot).c_str());
          runtime::clear_box_rules(slot);
        } else if (rebuilt) {
          bool custom = p.mode == "custom";
          runtime::set_box_rules(slot, custom || !p.egress.headers.empty(), custom,
                                 p.egress.allow_cidrs, p.egress.deny_cidrs);
        }
      } catch (const std::exception&) {
        ::unlink(netd::policy_path(slot).c_str());
      }
    }
  }
  firewall_ports[0] = ports.proxy;
  firewall_ports[1] = ports.dns;
}

void Engine::Impl::set_net_rules(uint32_t slot, const BoxSpec& spec) {
  if (spec.network == "none") {
    runtime::clear_box_rules(slot);
    return;
  }
  runtime::set_box_rules(slot, proxied(spec), spec.network == "custom", spec.egress.allow_cidrs,
                         spec.egress.deny_cidrs);
}

void Engine::Impl::net_up(const BoxRecord& b) {
  if (b.spec.network == "none" || !b.slot) return;
  egress::BoxPolicy p;
  p.box_id = b.id;
  p.box_name = b.name;
  p.box_ip = runtime::net_addrs(*b.slot).box_ip;
  p.init_pid = b.init_pid;
  p.init_start = b.init_start;
  p.mode = b.spec.network;
  p.egress = b.spec.egress;
  p.open_private = opts.open_private;
  p.resolvers = opts.resolvers;
  p.trust_file = opts.trust_ca;
  storage::make_dirs(net_stats_dir(b.id), 0700);
  p.stats_path = net_stats_dir(b.id) + "/stats.json";
  std::string pem;
  if (!b.spec.egress.headers.empty()) {
    ca::Files f = ca::ensure(layout.home + "/ca");
    p.ca_cert = f.cert;
    p.ca_key = f.key;
    pem = read_file(f.cert);
  }
  write_file_atomic(netd::policy_path(*b.slot), egress::policy_to_json(p).dump(), 0600);
  if (!pem.empty()) trust_ca_in_box(b, pem);
}

void Engine::Impl::net_down(uint32_t slot) {
  if (slot >= runtime::kMaxNetSlots) return;
  ::unlink(netd::policy_path(slot).c_str());
  runtime::clear_box_rules(slot);
}

json Engine::net_stats(const std::string& ref) {
  Impl& I = *impl_;
  BoxRecord b;
  {
    std::lock_guard g(I.mu);
    b = I.store.resolve(ref);
  }
  json j = netd::read_stats(I.net_stats_dir(b.id) + "/stats.json");
  j["box_id"] = b.id;
  j["network"] = b.spec.network;
  return j;
}

}  // namespace upstream
