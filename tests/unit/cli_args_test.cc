#include <csignal>

#include <gtest/gtest.h>

#include "cli/cli.h"
#include "common/error.h"

namespace upstream::cli {
namespace {

TEST(CliArgs, Limits) {
  Limits l = parse_limits("0.5", "512m", "100", "2g");
  EXPECT_EQ(*l.cpu_milli, 500u);
  EXPECT_EQ(*l.memory, 512ull << 20);
  EXPECT_EQ(*l.pids, 100u);
  EXPECT_EQ(*l.disk, 2ull << 30);
  Limits none = parse_limits("", "", "", "");
  EXPECT_FALSE(none.memory || none.cpu_milli || none.pids || none.disk);
  EXPECT_THROW(parse_limits("", "", "ten", ""), Error);
  EXPECT_THROW(parse_limits("", "", "-5", ""), Error);
  EXPECT_THROW(parse_limits("", "lots", "", ""), Error);
}

TEST(CliArgs, Signals) {
  EXPECT_EQ(parse_signal("KILL"), SIGKILL);
  EXPECT_EQ(parse_signal("sigterm"), SIGTERM);
  EXPECT_EQ(parse_signal("9"), 9);
  EXPECT_EQ(parse_signal("INT"), SIGINT);
  EXPECT_THROW(parse_signal("NOPE"), Error);
  EXPECT_THROW(parse_signal("0"), Error);
  EXPECT_THROW(parse_signal("999"), Error);
}

TEST(CliArgs, EnvAndLabels) {
  EXPECT_EQ(parse_env_list({"A=1", "B=x=y"}), (std::vector<std::string>{"A=1", "B=x=y"}));
  EXPECT_THROW(parse_env_list({"A"}), Error);
  auto labels = parse_labels({"a=1", "b=2", "a=3"});
  EXPECT_EQ(labels.size(), 2u);
  EXPECT_EQ(labels["a"], "3");
}

TEST(CliOutput, BoxJsonHasTheFields) {
  BoxRecord b;
  b.id = "0123456789ab";
  b.name = "x";
  b.state = "running";
  b.spec.limits.cpu_milli = 1500;
  b.slot = 2;
  auto j = box_json(b);
  EXPECT_EQ(j["limits"]["cpus"], 1.5);
  EXPECT_EQ(j["host_uid_base"], 268435456u + 2 * 65536u);
  EXPECT_EQ(limits_text(b.spec.limits), "cpus=1.5");
}

}  // namespace
}  // namespace upstream::cli
