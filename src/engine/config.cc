#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "common/strings.h"
#include "engine/engine.h"
#include "model/egress.h"
#include "runtime/net.h"

namespace upstream {

TenantRules tenant_rules_from_json(const nlohmann::json& j, const std::string& at, bool top) {
  TenantRules r;
  if (!j.is_object()) throw_invalid(at + " must be an object");
  for (const auto& [k, v] : j.items()) {
    if (k == "images") {
      if (!v.is_array()) throw_invalid(at + ".images must be a list of image names");
      std::vector<std::string> list;
      for (const auto& i : v) {
        if (!i.is_string() || i.get<std::string>().empty())
          throw_invalid(at + ".images must be a list of image names, such as [\"host\"]");
        list.push_back(i.get<std::string>());
      }
      r.images = list;
    } else if (k == "box") {
      r.box_max = limits_from_json(v, at + ".box");
    } else if (k == "total") {
      if (!v.is_object())
        throw_invalid(at + ".total must be an object such as {\"disk\": \"100g\"}");
      for (const auto& [tk, tv] : v.items()) {
        if (tk != "memory" && tk != "disk")
          throw_invalid("unknown field '" + at + ".total." + tk + "' (known: memory, disk)");
        if (!tv.is_string() && !tv.is_number_unsigned())
          throw_invalid(at + ".total." + tk + " must be a size such as \"64g\"");
        uint64_t n = tv.is_string() ? parse_size(tv.get<std::string>(), at + ".total." + tk)
                                    : tv.get<uint64_t>();
        (tk == "memory" ? r.total_memory : r.total_disk) = n;
      }
    } else if (k == "pool_reserve") {
      if (!v.is_string() && !v.is_number_unsigned())
        throw_invalid(at + ".pool_reserve must be a size such as \"5g\"");
      r.pool_reserve = v.is_string() ? parse_size(v.get<std::string>(), at + ".pool_reserve")
                                     : v.get<uint64_t>();
    } else if (!(top && k == "per_tenant")) {
      throw_invalid("unknown field '" + at + "." + k +
                    "' (known: images, box, total, pool_reserve" + (top ? ", per_tenant)" : ")"));
    }
  }
  return r;
}

EngineOptions EngineOptions::from_environment() {
  EngineOptions o;
  auto env = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v ? v : "";
  };
  o.home = env("UPSTREAM_HOME");
  if (o.home.empty()) {
    if (::geteuid() == 0) {
      o.home = "/var/lib/upstream";
    } else if (!env("XDG_DATA_HOME").empty()) {
      o.home = env("XDG_DATA_HOME") + "/upstream";
    } else {
      o.home = env("HOME") + "/.local/share/upstream";
    }
  }
  if (o.home.empty() || o.home[0] != '/') throw_invalid("UPSTREAM_HOME must be an absolute path");
  // Symlinks in the state directory's own path would trip the symlink checks of extraction.
  if (char* real = ::realpath(o.home.c_str(), nullptr)) {
    o.home = real;
    std::free(real);
  }
  o.init_path = env("UPSTREAM_INIT");
  if (!env("UPSTREAM_STORAGE").empty()) o.storage = env("UPSTREAM_STORAGE");
  if (!env("UPSTREAM_POOL_SIZE").empty())
    o.pool_size = parse_size(env("UPSTREAM_POOL_SIZE"), "UPSTREAM_POOL_SIZE");
  if (!env("UPSTREAM_SLOTS_DIR").empty()) o.slots_dir = env("UPSTREAM_SLOTS_DIR");
  // Defaults a box gets unless it asks for something else: enough for real work, bounded so
  // that one box cannot take the host down.
  o.default_limits.memory = 2ull << 30;
  o.default_limits.pids = 4096;
  o.default_limits.disk = 10ull << 30;
  if (!env("UPSTREAM_DEFAULT_MEMORY").empty())
    o.default_limits.memory = parse_size(env("UPSTREAM_DEFAULT_MEMORY"), "UPSTREAM_DEFAULT_MEMORY");
  if (!env("UPSTREAM_DEFAULT_DISK").empty())
    o.default_limits.disk = parse_size(env("UPSTREAM_DEFAULT_DISK"), "UPSTREAM_DEFAULT_DISK");
  o.load_config(env("UPSTREAM_CONFIG").empty() ? o.home + "/config.json" : env("UPSTREAM_CONFIG"));
  return o;
}

namespace {

struct NetworkSettings {
  std::vector<std::string> open, resolvers;
  std::string trust_ca, expose_address = "127.0.0.1";
};

// The configuration's "network" (see EngineOptions).
NetworkSettings network_from_json(const nlohmann::json& n) {
  NetworkSettings s;
  if (!n.is_object()) throw_invalid("network must be an object");
  for (const auto& [k, v] : n.items()) {
    if (k == "resolvers") {
      if (!v.is_array()) throw_invalid("network.resolvers must be a list of IPv4 addresses");
      for (size_t i = 0; i < v.size(); i++) {
        std::string at = "network.resolvers[" + std::to_string(i) + "]";
        std::string addr = v[i].is_string() ? v[i].get<std::string>() : "";
        std::string host = addr.substr(0, addr.find(':'));
        std::string port =
            addr.find(':') == std::string::npos ? "53" : addr.substr(addr.find(':') + 1);
        if (!egress::parse_ipv4(host) || port.empty() || port.size() > 5 ||
            port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) > 65535 ||
            std::stoi(port) == 0)
          throw_invalid(
              at + " must be an IPv4 address (with an optional :port), such as \"192.0.2.53\"");
        s.resolvers.push_back(addr);
      }
      continue;
    }
    if (k == "expose_address") {
      if (!v.is_string() || !egress::parse_ipv4(v.get<std::string>()))
        throw_invalid(
            "network.expose_address must be an IPv4 address of this host, such as "
            "\"127.0.0.1\" or \"0.0.0.0\"");
      s.expose_address = v.get<std::string>();
      continue;
    }
    if (k == "trust_ca") {
      if (!v.is_string() || v.get<std::string>().empty() || v.get<std::string>()[0] != '/')
        throw_invalid(
            "network.trust_ca must be the absolute path of a PEM file of CA certificates");
      if (::access(v.get<std::string>().c_str(), R_OK) != 0)
        throw_invalid("network.trust_ca: cannot read " + v.get<std::string>());
      s.trust_ca = v.get<std::string>();
      continue;
    }
    if (k != "open_private")
      throw_invalid("unknown field 'network." + k +
                    "' (known: open_private, resolvers, trust_ca, "
                    "expose_address)");
    if (!v.is_array()) throw_invalid("network.open_private must be a list of CIDRs");
    for (size_t i = 0; i < v.size(); i++) {
      std::string at = "network.open_private[" + std::to_string(i) + "]";
      if (!v[i].is_string()) throw_invalid(at + " must be a string such as \"10.5.0.0/16\"");
      s.open.push_back(egress::parse_cidr(v[i].get<std::string>(), at));
    }
  }
  return s;
}

// The configuration's "warm_pool": the shapes kept ready.
std::vector<PoolShape> warm_pool_from_json(const nlohmann::json& list) {
  std::vector<PoolShape> shapes;
  if (!list.is_array()) throw_invalid("warm_pool must be a list of shapes");
  for (size_t i = 0; i < list.size(); i++) {
    std::string at = "warm_pool[" + std::to_string(i) + "]";
    const auto& s = list[i];
    if (!s.is_object())
      throw_invalid(at + " must be an object such as {\"image\": \"host\", \"size\": 4}");
    PoolShape shape;
    bool sized = false;
    nlohmann::json limits = nlohmann::json::object();
    for (const auto& [k, v] : s.items()) {
      if (k == "image") {
        if (!v.is_string() || v.get<std::string>().empty())
          throw_invalid(at + ".image must be a string");
        shape.image = v.get<std::string>();
      } else if (k == "size") {
        if (!v.is_number_unsigned() || v.get<uint64_t>() > 1000)
          throw_invalid(at + ".size must be a whole number from 0 to 1000");
        shape.size = v.get<size_t>();
        sized = true;
      } else if (k == "cpus" || k == "memory" || k == "pids" || k == "disk") {
        limits[k] = v;
      } else {
        throw_invalid("unknown field '" + at + "." + k +
                      "' (known: image, size, cpus, memory, pids, disk)");
      }
    }
    if (!sized) throw_invalid(at + " has no size (how many ready boxes to keep)");
    shape.limits = limits_from_json(limits, at);
    BoxSpec probe;
    probe.image = shape.image;
    probe.limits = shape.limits;
    validate_box_spec(probe);
    shapes.push_back(shape);
  }
  return shapes;
}

// The configuration's "prices".
Prices prices_from_json(const nlohmann::json& pr) {
  Prices p;
  if (!pr.is_object()) throw_invalid("prices must be an object");
  for (const auto& [k, v] : pr.items()) {
    if (k == "currency") {
      if (!v.is_string() || v.get<std::string>().empty() || v.get<std::string>().size() > 8)
        throw_invalid("prices.currency must be a short string such as \"USD\"");
      p.currency = v.get<std::string>();
      continue;
    }
    std::optional<double>* slot = k == "cpu_core_hour"      ? &p.cpu_core_hour
                                  : k == "storage_gb_month" ? &p.storage_gb_month
                                  : k == "wall_core_hour"   ? &p.wall_core_hour
                                                            : nullptr;
    if (!slot)
      throw_invalid("unknown field 'prices." + k +
                    "' (known: currency, cpu_core_hour, storage_gb_month, wall_core_hour)");
    if (!v.is_number() || v.get<double>() < 0)
      throw_invalid("prices." + k + " must be a number of at least 0");
    *slot = v.get<double>();
  }
  return p;
}

}  // namespace

void EngineOptions::load_config(const std::string& path) {
  config_path = path;
  std::ifstream in(path);
  if (!in) {
    if (errno == ENOENT) return;  // no configuration: nothing pooled, no prices
    throw_invalid("cannot read the configuration file " + path + ": " + std::strerror(errno));
  }
  std::stringstream text;
  text << in.rdbuf();
  auto fail = [&](const std::string& what) {
    throw_invalid("configuration file " + path + ": " + what);
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::parse_error& e) {
    std::string what = e.what();
    auto p = what.find("parse error");
    fail("not valid JSON (" + (p == std::string::npos ? what : what.substr(p)) + ")");
  }
  if (!j.is_object()) fail("must hold a JSON object");
  for (const auto& [k, v] : j.items())
    if (k != "warm_pool" && k != "prices" && k != "network" && k != "tenants" && k != "proc_view")
      fail("unknown field '" + k + "' (known: warm_pool, prices, network, tenants, proc_view)");
  bool view = true;
  if (j.contains("proc_view")) {
    if (!j["proc_view"].is_boolean())
      fail("proc_view must be true (boxes see their own limits in /proc) or false");
    view = j["proc_view"].get<bool>();
  }
  NetworkSettings net;
  std::vector<PoolShape> shapes;
  Prices p;
  try {
    if (j.contains("network")) net = network_from_json(j["network"]);
    if (j.contains("warm_pool")) shapes = warm_pool_from_json(j["warm_pool"]);
    if (j.contains("prices")) p = prices_from_json(j["prices"]);
  } catch (const Error& e) {
    fail(e.what());
  }
  TenantRules all;
  std::map<std::string, TenantRules> each;
  if (j.contains("tenants")) {
    try {
      all = tenant_rules_from_json(j["tenants"], "tenants", true);
      if (j["tenants"].contains("per_tenant")) {
        const auto& per = j["tenants"]["per_tenant"];
        if (!per.is_object()) throw_invalid("tenants.per_tenant must map tenant names to rules");
        for (const auto& [name, v] : per.items())
          each[name] = tenant_rules_from_json(v, "tenants.per_tenant." + name, false);
      }
    } catch (const Error& e) {
      fail(e.what());
    }
  }
  warm_pool = shapes;
  prices = p;
  tenants = all;
  tenant_overrides = each;
  open_private = net.open;
  resolvers = net.resolvers;
  trust_ca = net.trust_ca;
  expose_address = net.expose_address;
  proc_view = view;
}

}  // namespace upstream
