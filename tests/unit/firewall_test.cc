// The host firewall's rulesets: golden files (tests/golden/firewall/*.nft; regenerate with
// UPSTREAM_UPDATE_GOLDEN=1), and nftables itself accepting them (`nft -c`, which checks a ruleset
// against the kernel without applying it).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>

#include "common/error.h"
#include "common/fd.h"
#include "common/fs.h"
#include "common/proc.h"
#include "firewall/ruleset.h"
#include "runtime/net.h"

using namespace upstream;
using namespace upstream::firewall;

namespace {

const std::string kGolden = std::string(UPSTREAM_SOURCE_DIR) + "/tests/golden/firewall/";

TableSpec spec() {
  return {40001, 40002, "10.200.0.0/14", {"10.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16"}};
}

std::vector<SlotRules> slots() {
  SlotRules custom{5, "10.200.0.22", true, true, {"198.18.0.0/15"}, {"198.18.7.0/24"}, {}};
  SlotRules allow_all_opened{9, "10.200.0.38", false, false, {}, {}, {"10.5.0.0/16"}};
  SlotRules plain{12, "10.200.0.50", false, false, {}, {}, {}};
  return {custom, allow_all_opened, plain};
}

void golden(const std::string& name, const std::string& text) {
  std::string path = kGolden + name;
  if (std::getenv("UPSTREAM_UPDATE_GOLDEN")) write_file_atomic(path, text, 0644);
  EXPECT_EQ(text, read_file(path)) << "differs from " << path;
}

bool nft_accepts(const std::string& text, std::string& why) {
  if (::geteuid() != 0 || ::access("/usr/sbin/nft", X_OK) != 0) return true;
  try {
    run_tool({"nft", "-c", "-f", "-"}, text);
    return true;
  } catch (const Error& e) {
    why = e.what();
    return false;
  }
}

}  // namespace

TEST(Firewall, TableHoldsEveryLiveSlotsRules) {
  std::string t = table_ruleset(spec(), slots());
  golden("table.nft", t);
  // One transaction that replaces the table: nothing in between has no rules.
  EXPECT_EQ(t.rfind("table inet upstream\ndelete table inet upstream\n", 0), 0u);
  EXPECT_NE(t.find("chain s5 {"), std::string::npos);
  EXPECT_NE(t.find("chain s9 {"), std::string::npos);
  EXPECT_EQ(t.find("chain s12 {"), std::string::npos);  // needs no rules of its own
  std::string why;
  EXPECT_TRUE(nft_accepts(t, why)) << why;
}

TEST(Firewall, SignatureIsTheSameForEveryInstallation) {
  // What differs between installations (their open ranges) is per box, not in the table.
  EXPECT_EQ(signature(spec()), "upstream v2 proxy=40001 dns=40002 pool=10.200.0.0/14");
  TableSpec other = spec();
  other.proxy_port = 40003;
  EXPECT_NE(signature(spec()), signature(other));
}

TEST(Firewall, SlotRulesReplaceInOneTransaction) {
  auto s = slots();
  golden("slot-custom.nft", slot_ruleset(s[0]));
  golden("slot-opened.nft", slot_ruleset(s[1]));
  golden("slot-clear.nft", clear_slot_ruleset(12, "10.200.0.50"));
  EXPECT_EQ(slot_ruleset(s[2]), clear_slot_ruleset(12, "10.200.0.50"));
  EXPECT_FALSE(has_rules(s[2]));
  EXPECT_TRUE(has_rules(s[1]));
  // Replacing flushes and refills the chain in the same batch.
  std::string r = slot_ruleset(s[0]);
  EXPECT_LT(r.find("flush chain inet upstream s5"), r.find("add rule inet upstream s5"));
  // Checked against a table that has them (nft -c of the table, then the change, in one run).
  std::string why;
  EXPECT_TRUE(nft_accepts(table_ruleset(spec(), {}) + slot_ruleset(s[0]) + slot_ruleset(s[1]) +
                              clear_slot_ruleset(12, "10.200.0.50"),
                          why))
      << why;
  EXPECT_TRUE(nft_accepts(
      table_ruleset(spec(), s) + slot_ruleset(s[0]) + clear_slot_ruleset(5, "10.200.0.22"), why))
      << why;
}

// Rulesets are applied in-process through libnftables where the host has it, all or nothing, and
// a refused ruleset is reported with nftables' own message.
TEST(Firewall, AppliedInProcessAsOneTransaction) {
  if (::geteuid() != 0 || ::access("/usr/sbin/nft", X_OK) != 0) {
    GTEST_SKIP() << "needs root and nft";
  }
  if (!std::getenv("UPSTREAM_NFT")) {
    EXPECT_TRUE(runtime::nft_in_process());
  }
  std::string t = "upstream_unit_" + std::to_string(::getpid());
  runtime::apply_nft("add table inet " + t + "\nadd chain inet " + t + " c\nadd rule inet " + t +
                     " c ip daddr 192.0.2.1 drop\n");
  // A batch that fails part-way changes nothing: the new table in it is not there afterwards.
  try {
    runtime::apply_nft("add table inet " + t + "_b\nadd rule inet " + t + " nochain drop\n");
    ADD_FAILURE() << "a rule for a missing chain was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Could not process rule"), std::string::npos) << e.what();
  }
  EXPECT_THROW(runtime::apply_nft("delete table inet " + t + "_b\n"), Error);
  try {
    runtime::apply_nft("add rule inet " + t + " c ip daddr 192.0.2.1 frobnicate\n");
    ADD_FAILURE() << "a syntax error was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("syntax error"), std::string::npos) << e.what();
  }
  runtime::apply_nft("delete table inet " + t + "\n");
  // The library's netlink socket is not inherited by what upstream runs next.
  for (const auto& e : Dir("/proc/self/fd").entries()) {
    int fd = std::atoi(e.name.c_str()), domain = 0;
    socklen_t len = sizeof domain;
    if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain == AF_NETLINK) {
      EXPECT_TRUE(::fcntl(fd, F_GETFD) & FD_CLOEXEC) << "netlink socket " << fd;
    }
  }
  EXPECT_THROW(runtime::apply_nft("delete table inet " + t + "\n"), Error);
}
