#include "engine/host_firewall.h"

#include <unistd.h>

#include "common/error.h"
#include "common/fs.h"
#include "common/proc.h"
#include "model/egress.h"
#include "runtime/net.h"

namespace upstream {

using nlohmann::json;

namespace {

// The firewall's own record of each slot's rules (written under the firewall lock with the
// rules themselves), from which a rebuild of the table puts every live box's rules back.
std::string firewall_dir() { return netd::run_dir() + "/firewall"; }
std::string firewall_lock() { return netd::run_dir() + "/firewall.lock"; }
std::string firewall_sig() { return netd::run_dir() + "/firewall.sig"; }
std::string slot_record(uint32_t slot) {
  return firewall_dir() + "/" + std::to_string(slot) + ".json";
}

json rules_json(const firewall::SlotRules& r) {
  return {{"slot", r.slot},   {"box_ip", r.box_ip}, {"proxied", r.proxied}, {"custom", r.custom},
          {"allow", r.allow}, {"deny", r.deny},     {"open", r.open}};
}

std::optional<firewall::SlotRules> read_record(uint32_t slot) {
  auto text = try_read_file(slot_record(slot), 1 << 20);
  if (!text) return std::nullopt;
  try {
    json j = json::parse(*text);
    firewall::SlotRules r;
    r.slot = j.at("slot").get<uint32_t>();
    r.box_ip = j.at("box_ip").get<std::string>();
    r.proxied = j.at("proxied").get<bool>();
    r.custom = j.at("custom").get<bool>();
    r.allow = j.at("allow").get<std::vector<std::string>>();
    r.deny = j.at("deny").get<std::vector<std::string>>();
    r.open = j.at("open").get<std::vector<std::string>>();
    if (r.slot != slot || r.box_ip != egress::net_addrs(slot).box_ip) return std::nullopt;
    return r;
  } catch (const std::exception&) {
    return std::nullopt;  // not ours, or damaged: the next rules for the slot replace it
  }
}

std::vector<uint32_t> record_slots() { return numbered_files(firewall_dir(), ".json"); }

firewall::TableSpec table_spec(const netd::Ports& ports) {
  return {ports.proxy, ports.dns, egress::kBoxNetPool, egress::private_ranges()};
}

}  // namespace

HostFirewall::HostFirewall(std::vector<std::string> open_private, std::string netd_exe,
                           const runtime::SlotAllocator& slots)
    : open_private_(std::move(open_private)), netd_exe_(std::move(netd_exe)), slots_(slots) {}

firewall::SlotRules HostFirewall::rules_for(uint32_t slot, const BoxSpec& spec) const {
  firewall::SlotRules r;
  r.slot = slot;
  r.box_ip = egress::net_addrs(slot).box_ip;
  if (spec.network == NetworkMode::none) return r;
  r.proxied = egress::proxied(spec.network, spec.egress);
  r.custom = spec.network == NetworkMode::custom;
  if (r.custom) {
    r.allow = spec.egress.allow_cidrs;
    r.deny = spec.egress.deny_cidrs;
  }
  r.open = open_private_;
  return r;
}

void HostFirewall::rebuild(const netd::Ports& ports, bool always) {
  make_dirs(firewall_dir(), 0700);
  FileLock lock(firewall_lock(), 60'000);
  firewall::TableSpec spec = table_spec(ports);
  std::string sig = firewall::signature(spec);
  bool rebuild = always || try_read_file(firewall_sig()) != sig;
  // Rules of slots no box holds any more (a kill -9 before their stop) go; a rebuild puts the
  // live ones back, in the same transaction as the table itself.
  std::vector<firewall::SlotRules> live;
  for (uint32_t slot : record_slots()) {
    auto r = read_record(slot);
    if (r && slots_.in_use(slot)) {
      live.push_back(*r);
      continue;
    }
    if (!rebuild && r) runtime::apply_nft(firewall::clear_slot_ruleset(slot, r->box_ip));
    ::unlink(slot_record(slot).c_str());
  }
  if (rebuild) {
    runtime::enable_ipv4_forwarding();
    runtime::apply_nft(firewall::table_ruleset(spec, live));
    write_file_atomic(firewall_sig(), sig, 0600);
  }
}

std::string HostFirewall::netd_exe() const { return netd_exe_.empty() ? self_exe() : netd_exe_; }

void HostFirewall::rebuild(bool always) { rebuild(netd::ensure_running(netd_exe()), always); }

bool HostFirewall::ensure() {
  netd::Ports ports = netd::ensure_running(netd_exe());
  if (ports_[0] == ports.proxy && ports_[1] == ports.dns) return false;
  rebuild(ports, false);
  // Policy files of boxes that are gone are netd's to ignore and ours to clear.
  for (uint32_t slot : netd::policy_slots()) {
    egress::BoxPolicy p;
    try {
      p = egress::policy_from_json(json::parse(read_file(netd::policy_path(slot))));
    } catch (const std::exception&) {
      continue;  // being written, or gone meanwhile
    }
    if (!process_matches(p.init_pid, p.init_start)) ::unlink(netd::policy_path(slot).c_str());
  }
  ports_[0] = ports.proxy;
  ports_[1] = ports.dns;
  return true;
}

void HostFirewall::set(uint32_t slot, const BoxSpec& spec) {
  firewall::SlotRules r = rules_for(slot, spec);
  make_dirs(firewall_dir(), 0700);
  FileLock lock(firewall_lock(), 60'000);
  bool had = ::access(slot_record(slot).c_str(), F_OK) == 0;
  if (firewall::has_rules(r)) {
    write_file_atomic(slot_record(slot), rules_json(r).dump(), 0600);
    runtime::apply_nft(firewall::slot_ruleset(r));
  } else if (had) {
    // Whatever a box that held this slot before left (it died without its stop).
    runtime::apply_nft(firewall::clear_slot_ruleset(slot, r.box_ip));
    ::unlink(slot_record(slot).c_str());
  }
}

void HostFirewall::clear(uint32_t slot) {
  FileLock lock(firewall_lock(), 60'000);
  if (::access(slot_record(slot).c_str(), F_OK) != 0) return;
  runtime::apply_nft(firewall::clear_slot_ruleset(slot, egress::net_addrs(slot).box_ip));
  ::unlink(slot_record(slot).c_str());
}

}  // namespace upstream
