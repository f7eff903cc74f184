// The host firewall's rulesets: golden files (tests/golden/firewall/*.nft; regenerate with
// UPSTREAM_UPDATE_GOLDEN=1), and nftables itself accepting them (`nft -c`, which checks a ruleset
// against the kernel without applying it).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>

#include "common/error.h"
#include "common/fd.h"
#include "common/proc.h"
#include "firewall/ruleset.h"

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
