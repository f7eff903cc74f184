#include <gtest/gtest.h>

#include "common/error.h"
#include "engine/engine.h"
#include "runtime/net.h"

namespace upstream {
namespace {

TEST(BoxSpec, AcceptsAReasonableSpec) {
  BoxSpec s;
  s.name = "dev-1";
  s.env = {"A=1"};
  s.labels = {{"team", "ml"}};
  s.limits.memory = 256ull << 20;
  s.limits.pids = 100;
  s.limits.disk = 1ull << 30;
  s.limits.cpu_milli = 500;
  s.user = "user";
  EXPECT_NO_THROW(validate_box_spec(s));
}

TEST(BoxSpec, RejectsEachBadField) {
  auto bad = [](auto mutate) {
    BoxSpec s;
    mutate(s);
    EXPECT_THROW(validate_box_spec(s), Error);
  };
  bad([](BoxSpec& s) { s.name = "bad name"; });
  bad([](BoxSpec& s) { s.name = "0123456789ab"; });  // looks like an id
  bad([](BoxSpec& s) { s.env = {"1X=y"}; });
  bad([](BoxSpec& s) { s.labels = {{"-k", "v"}}; });
  bad([](BoxSpec& s) { s.limits.memory = 1 << 20; });
  bad([](BoxSpec& s) { s.limits.pids = 3; });
  bad([](BoxSpec& s) { s.limits.disk = 1 << 20; });
  bad([](BoxSpec& s) { s.user = "root;rm -rf /"; });
  bad([](BoxSpec& s) { s.workdir = "relative"; });
  bad([](BoxSpec& s) {
    s.network = NetworkMode::custom;
    s.egress.allow_cidrs = {"10.0.0.0/33"};
  });
  bad([](BoxSpec& s) { s.egress.allow_domains = {"example.com"}; });  // network none
  bad([](BoxSpec& s) {
    s.network = NetworkMode::allow_all;
    s.egress.headers["api.example.com"]["Bad Name"] = "x";
  });
  EXPECT_THROW(parse_network_mode("bridge"), Error);
  BoxSpec net;
  net.network = NetworkMode::allow_all;
  EXPECT_NO_THROW(validate_box_spec(net));
}

TEST(BoxNetwork, AddressesPerSlotAndCidrs) {
  auto a = egress::net_addrs(0);
  EXPECT_EQ(a.host_if, "upv0");
  EXPECT_EQ(a.host_ip, "10.200.0.1");
  EXPECT_EQ(a.box_ip, "10.200.0.2");
  auto b = egress::net_addrs(59999);  // the last uid slot still has an address of its own
  EXPECT_EQ(b.host_ip, "10.203.169.125");
  EXPECT_EQ(b.box_ip, "10.203.169.126");
  EXPECT_EQ(b.host_if.size(), 8u);  // interface names stay under 16 characters
  EXPECT_THROW(egress::net_addrs(egress::kMaxNetSlots), Error);
  EXPECT_EQ(egress::parse_cidr("10.77.3.9/24", "x"), "10.77.3.0/24");
  EXPECT_EQ(egress::parse_cidr("192.0.2.7", "x"), "192.0.2.7/32");
  EXPECT_EQ(egress::parse_cidr("0.0.0.0/0", "x"), "0.0.0.0/0");
  for (const char* bad :
       {"10.0.0.0/33", "10.0.0.0/", "10.0.0/8", "::1/128", "host", "10.0.0.0/8/8", "10.0.0.0/-1"}) {
    try {
      egress::parse_cidr(bad, "open range");
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::invalid_argument) << bad;
      EXPECT_NE(std::string(e.what()).find("open range"), std::string::npos);
    }
  }
}

TEST(ExecSpec, Rules) {
  ExecSpec s;
  EXPECT_THROW(validate_exec_spec(s), Error);  // nothing to run
  s.argv = {"true"};
  EXPECT_NO_THROW(validate_exec_spec(s));
  s.shell = "true";
  EXPECT_THROW(validate_exec_spec(s), Error);  // both
  s.shell.clear();
  s.background = true;
  s.tty = true;
  EXPECT_THROW(validate_exec_spec(s), Error);
  s.tty = false;
  s.stdin = true;
  EXPECT_THROW(validate_exec_spec(s), Error);
  s.stdin = false;
  s.cwd = "rel";
  EXPECT_THROW(validate_exec_spec(s), Error);
  s.cwd = "/tmp";
  s.env = {"BAD"};
  EXPECT_THROW(validate_exec_spec(s), Error);
  s.env.clear();
  s.argv = {""};
  EXPECT_THROW(validate_exec_spec(s), Error);
}

TEST(BoxPath, NormalisesInsideTheBox) {
  EXPECT_EQ(box_path("notes.txt", "/home/user"), "/home/user/notes.txt");
  EXPECT_EQ(box_path("/etc/../etc/./hosts", "/home/user"), "/etc/hosts");
  EXPECT_EQ(box_path("../../../../etc/shadow", "/home/user"),
            "/etc/shadow");  // stays at the box root
  EXPECT_EQ(box_path("/", "/x"), "/");
  EXPECT_EQ(box_path("a//b/", "/"), "/a/b");
  EXPECT_THROW(box_path("", "/"), Error);
  EXPECT_THROW(box_path(std::string("a\0b", 3), "/"), Error);
}

}  // namespace
}  // namespace upstream
