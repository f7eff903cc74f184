// The host side of box networks: netd running, the host firewall's table made for netd's ports,
// and each network slot's rules applied and recorded (so that a rebuild of the table puts every
// live box's rules back in the same transaction). One per engine; its callers serialise ensure()
// and rebuild() (the engine's mutex); set() and clear() may run beside them (they take the
// firewall's own file lock, shared by every installation on the host).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "firewall/ruleset.h"
#include "model/box.h"
#include "netd/netd.h"
#include "runtime/slots.h"

namespace upstream {

class HostFirewall {
 public:
  // open_private: the private ranges the configuration opens; netd_exe: the program that runs
  // netd (empty: this one); slots: which network slots hold a box now.
  HostFirewall(std::vector<std::string> open_private, std::string netd_exe,
               const runtime::SlotAllocator& slots);

  // netd running and the table made for its ports (once per set of ports: cheap after that);
  // policy files of boxes that are gone are cleared. True if the ports changed since last time
  // (netd was replaced).
  bool ensure();
  // The table made again for netd's ports (`always`: even if it already is), with every live
  // slot's rules; stale slots' rules removed.
  void rebuild(bool always);
  // A slot's rules for a box spec (see firewall/ruleset.h).
  firewall::SlotRules rules_for(uint32_t slot, const BoxSpec& spec) const;
  // The slot's rules for the spec, replacing what it had (none for a box that needs none).
  void set(uint32_t slot, const BoxSpec& spec);
  void clear(uint32_t slot);
  // Whether ensure() has made the table for some ports yet.
  bool ready() const { return ports_[0] != 0; }

 private:
  void rebuild(const netd::Ports& ports, bool always);
  std::string netd_exe() const;

  std::vector<std::string> open_private_;
  std::string netd_exe_;
  const runtime::SlotAllocator& slots_;
  uint16_t ports_[2] = {0, 0};  // netd's proxy and DNS ports the table was made for
};

}  // namespace upstream
