// Box networks on the engine's side: each box's policy file (what netd reads) and firewall
// rules (host_firewall.h) kept in step with its spec and state, its exposed ports, and its
// counters read back.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "common/digest.h"
#include "common/error.h"
#include "common/fd.h"
#include "common/strings.h"
#include "common/time.h"
#include "engine/impl.h"
#include "model/egress.h"
#include "netd/ca.h"
#include "netd/netd.h"
#include "runtime/net.h"

namespace upstream {

using nlohmann::json;

std::string Engine::Impl::net_stats_dir(const std::string& box_id) const {
  return layout.home + "/net/" + box_id;
}

std::string Engine::Impl::net_stats_path(const std::string& box_id) const {
  return net_stats_dir(box_id) + "/stats.json";
}

void Engine::Impl::net_up(const BoxRecord& b) {
  if (!b.slot) return;
  if (b.spec.network == NetworkMode::none) {
    // No network, but exposed ports: netd reaches them through the box's own namespace.
    if (load_exposures(b.id).empty()) return;
    firewall.ensure();  // netd runs
    write_net_policy(b);
    return;
  }
  write_net_policy(b);
  if (!b.spec.egress.headers.empty()) trust_egress_ca(b);
}

void Engine::Impl::trust_egress_ca(const BoxRecord& b) {
  trust_ca_in_box(b, read_file(ca::ensure(layout.home + "/ca").cert));
}

std::vector<egress::Exposure> Engine::Impl::load_exposures(const std::string& box_id) {
  std::vector<egress::Exposure> out;
  auto text = try_read_file(net_stats_dir(box_id) + "/exposures.json");
  if (!text) return out;
  for (const auto& e : json::parse(*text)) out.push_back(egress::exposure_from_json(e));
  return out;
}

void Engine::Impl::save_exposures(const std::string& box_id,
                                  const std::vector<egress::Exposure>& list) {
  json arr = json::array();
  for (const auto& l : list) arr.push_back(egress::exposure_to_json(l));
  make_dirs(net_stats_dir(box_id), 0700);
  write_file_atomic(net_stats_dir(box_id) + "/exposures.json", arr.dump(), 0600);
}

void Engine::Impl::write_net_policy(const BoxRecord& b) {
  if (!b.slot) return;
  bool none = b.spec.network == NetworkMode::none;
  auto exposures = load_exposures(b.id);
  if (none && exposures.empty()) {
    ::unlink(netd::policy_path(*b.slot).c_str());
    return;
  }
  egress::BoxPolicy p;
  p.box_id = b.id;
  p.box_name = b.name;
  // A box without a network has no address: nothing it sends can reach netd, which only
  // forwards its exposed ports (ingress, through the box's namespace).
  p.box_ip = none ? "" : egress::net_addrs(*b.slot).box_ip;
  p.init_pid = b.init_pid;
  p.init_start = b.init_start;
  p.mode = b.spec.network;
  p.egress = b.spec.egress;
  p.open_private = opts.open_private;
  p.resolvers = opts.resolvers;
  p.trust_file = opts.trust_ca;
  make_dirs(net_stats_dir(b.id), 0700);
  p.stats_path = net_stats_path(b.id);
  if (!b.spec.egress.headers.empty()) {
    ca::Files f = ca::ensure(layout.home + "/ca");
    p.ca_cert = f.cert;
    p.ca_key = f.key;
  }
  p.exposures = std::move(exposures);
  write_file_atomic(netd::policy_path(*b.slot), egress::policy_to_json(p).dump(), 0600);
}

void Engine::Impl::net_down(uint32_t slot, const BoxSpec& spec) {
  if (slot >= egress::kMaxNetSlots) return;
  ::unlink(netd::policy_path(slot).c_str());  // exposures of a box without a network too
  if (spec.network != NetworkMode::none) firewall.clear(slot);
}

void Engine::rebuild_firewall() {
  Impl& I = *impl_;
  std::lock_guard g(I.mu);
  I.firewall.rebuild(true);
}

bool Engine::ensure_network() {
  Impl& I = *impl_;
  if (netd::policy_slots().empty()) return false;
  std::lock_guard g(I.mu);
  bool was_ready = I.firewall.ready();
  return I.firewall.ensure() && was_ready;
}

json Engine::net_stats(const std::string& ref) {
  Impl& I = *impl_;
  BoxRecord b;
  {
    std::lock_guard g(I.mu);
    b = I.store.resolve(ref);
  }
  json j = netd::read_stats(I.net_stats_path(b.id));
  j["box_id"] = b.id;
  j["network"] = b.spec.network;
  return j;
}

namespace {

Engine::Exposure exposure_info(const BoxRecord& b, const egress::Exposure& e) {
  Engine::Exposure x;
  x.id = e.id;
  x.box_id = b.id;
  x.box_name = b.name;
  x.auth = e.auth;
  x.username = e.username;
  x.port = e.port;
  x.host_port = e.host_port;
  x.created_at = e.created_at;
  std::string host = e.address == "0.0.0.0" ? "127.0.0.1" : e.address;
  x.url = "http://" + host + ":" + std::to_string(e.host_port) + "/";
  return x;
}

// Whether something accepts connections at address:port, polled until it is `want` or ~3 s.
bool wait_listening(const std::string& address, uint16_t port, bool want) {
  std::string host = address == "0.0.0.0" ? "127.0.0.1" : address;
  for (int i = 0; i < 300; i++) {
    UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    ::inet_pton(AF_INET, host.c_str(), &sa.sin_addr);
    bool up = ::connect(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
    if (up == want) return true;
    ::usleep(10000);
  }
  return false;
}

uint16_t free_port(const std::string& address) {
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  ::inet_pton(AF_INET, address.c_str(), &sa.sin_addr);
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
    throw_sys(Errc::unavailable, "bind " + address + " for an exposed port");
  socklen_t len = sizeof sa;
  ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&sa), &len);
  return ntohs(sa.sin_port);
}

}  // namespace

Engine::Exposure Engine::expose(const std::string& ref, int port, const std::string& auth) {
  Impl& I = *impl_;
  if (port < 1 || port > 65535)
    throw_invalid("invalid port " + std::to_string(port) + ": use 1 to 65535");
  if (auth != "bearer" && auth != "basic")
    throw_invalid("invalid auth '" + auth +
                  "': use bearer (a generated token) or basic (a "
                  "generated user name and password)");
  std::lock_guard g(I.mu);
  auto held = I.hold_box(ref);
  BoxRecord& b = held.box;
  // A box without a network can be exposed too: exposing is ingress only (netd connects to the
  // port inside the box's own namespace) and gives the box no way out.
  auto list = I.load_exposures(b.id);
  for (const auto& e : list)
    if (e.port == port)
      throw Error(Errc::already_exists, "port " + std::to_string(port) + " of box " + b.name +
                                            " is already exposed (" + e.id + ")");
  egress::Exposure e;
  e.id = "ex-" + random_hex(10);
  e.port = static_cast<uint16_t>(port);
  e.address = I.opts.expose_address;
  e.host_port = free_port(e.address);
  e.auth = auth;
  e.created_at = now_ms();
  Exposure x;
  if (auth == "bearer") {
    x.token = random_hex(40);
    e.hash = sha256_hex(x.token);
  } else {
    e.username = "box";
    x.password = random_hex(24);
    e.hash = sha256_hex(e.username + ":" + x.password);
  }
  list.push_back(e);
  I.save_exposures(b.id, list);
  if (box_state::alive(b.state)) {
    I.firewall.ensure();  // netd runs
    I.write_net_policy(b);
    if (!wait_listening(e.address, e.host_port, true))
      throw Error(Errc::unavailable, "the exposed port did not start listening on " + e.address +
                                         ":" + std::to_string(e.host_port) + "; see " +
                                         netd::run_dir() + "/netd.log");
  }
  Exposure out = exposure_info(b, e);
  out.token = x.token;
  out.password = x.password;
  return out;
}

std::vector<Engine::Exposure> Engine::exposures(const std::string& ref) {
  Impl& I = *impl_;
  std::lock_guard g(I.mu);
  std::vector<BoxRecord> boxes;
  if (ref.empty())
    boxes = I.store.list({});
  else
    boxes.push_back(I.store.resolve(ref));
  std::vector<Exposure> out;
  for (const auto& b : boxes)
    for (const auto& e : I.load_exposures(b.id)) out.push_back(exposure_info(b, e));
  return out;
}

void Engine::unexpose(const std::string& ref, const std::string& which) {
  Impl& I = *impl_;
  std::lock_guard g(I.mu);
  auto held = I.hold_box(ref);
  BoxRecord& b = held.box;
  auto list = I.load_exposures(b.id);
  auto it = std::find_if(list.begin(), list.end(), [&](const egress::Exposure& e) {
    return e.id == which || std::to_string(e.port) == which;
  });
  if (it == list.end())
    throw Error(Errc::not_found, "box " + b.name + " has no exposure '" + which + "'");
  egress::Exposure gone = *it;
  list.erase(it);
  I.save_exposures(b.id, list);
  if (box_state::alive(b.state)) {
    I.write_net_policy(b);
    wait_listening(gone.address, gone.host_port, false);
  }
}

}  // namespace upstream
