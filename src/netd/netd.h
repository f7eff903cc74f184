// netd: the host side of box networks that must see names, one process per host (like the uid
// slots and the firewall table, box networks are host-wide). It serves
//  - the egress proxy: box TCP to ports 80 and 443 is redirected to it by the firewall (boxes in
//    mode custom, and boxes with headers to add); it reads the TLS SNI or HTTP Host, checks the
//    box's policy, resolves the name itself and connects (never to a private address), and
//    either relays the bytes or, for hosts with headers, terminates TLS with a certificate from
//    the installation's CA and adds the headers to each request;
//  - the resolver: every box's DNS (UDP 53) is redirected to it; it answers only names the policy
//    allows, with addresses the box may reach;
//  - per-box counters, kept in each box's stats file.
// Boxes' policies are files in the run directory, one per uid slot (see egress::BoxPolicy).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace upstream::netd {

// /run/upstream/net: netd's lock, its ports, and the policy files.
std::string run_dir();
std::string policy_path(uint32_t slot);
// The slots that have a policy file (of a live box, or left by one that died).
std::vector<uint32_t> policy_slots();

struct Ports {
  int pid = 0;
  uint16_t proxy = 0;
  uint16_t dns = 0;
};

// Starts netd (this binary, `upstream netd`) unless one of this protocol or a newer one runs,
// whichever build it is (a serving netd is never killed for another build; an older protocol is
// handed over from); returns its ports. `exe`: the upstream binary.
Ports ensure_running(const std::string& exe);

// The daemon's main: returns when another netd holds the lock (0), or never. With `take_over`,
// a netd of an older protocol that runs is taken over from: this one binds its ports too
// (SO_REUSEPORT), tells it to retire (SIGUSR2: it stops listening, gives up the lock and ends once
// its connections have), and takes the lock; boxes see no moment without DNS or proxy.
int serve(const std::string& dir, bool take_over = false);

// The name a connection asks for: the SNI of a TLS ClientHello record, the Host header of an
// HTTP request head ("" when there is none or the data is malformed).
std::string tls_sni(const std::string& client_hello);
std::string http_host(const std::string& head);

// A box's counters (its stats file), or an empty shape.
nlohmann::json read_stats(const std::string& path);

}  // namespace upstream::netd
