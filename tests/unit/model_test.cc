// The model's encodings: one per type, round trips, strict decoding with named fields, and the
// upgrade of what earlier versions stored.
#include <gtest/gtest.h>
#include <unistd.h>

#include "common/error.h"
#include "model/box.h"
#include "model/fields.h"
#include "store/box_store.h"

using namespace upstream;
using nlohmann::json;

namespace {

BoxSpec full_spec() {
  BoxSpec s;
  s.image = "py-tools";
  s.name = "web";
  s.labels = {{"team", "a"}};
  s.env = {"A=1", "B=x=y"};
  s.limits.cpu_milli = 1500;
  s.limits.memory = 1ull << 30;
  s.limits.pids = 100;
  s.limits.disk = 2ull << 30;
  s.user = "user";
  s.workdir = "/tmp";
  s.network = NetworkMode::custom;
  s.egress.allow_domains = {"example.com"};
  s.egress.headers["api.example.com"]["Authorization"] = "Bearer secret";
  s.policy.auto_pause_ms = 0;
  s.policy.keep_alive = true;
  return s;
}

std::string message(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Model, SpecRoundTripsInItsOneEncoding) {
  BoxSpec s = full_spec();
  json j = spec_to_json(s, Secrets::kept);
  EXPECT_EQ(j["limits"],
            json({{"cpus", 1.5}, {"memory", 1ull << 30}, {"pids", 100}, {"disk", 2ull << 30}}));
  EXPECT_EQ(j["env"], json({{"A", "1"}, {"B", "x=y"}}));
  EXPECT_EQ(j["network"], "custom");
  BoxSpec back = spec_from_json(j);
  EXPECT_EQ(spec_to_json(back, Secrets::kept), j);
  // What fronts show: header names only.
  json shown = spec_to_json(s, Secrets::names);
  EXPECT_EQ(shown["egress"]["headers"]["api.example.com"], json::array({"Authorization"}));
  EXPECT_EQ(shown.dump().find("secret"), std::string::npos);
  // The enum as JSON is its name, whichever way it gets there.
  EXPECT_EQ(json(NetworkMode::allow_all), "allow-all");
}

TEST(Model, ARecordWithHeadersReadsBack) {
  // A box record names its headers only; read back (as the remote CLI does) the names stay.
  BoxRecord r;
  r.id = "0123456789ab";
  r.name = "web";
  r.state = "running";
  r.spec = full_spec();
  BoxRecord back = box_from_json(box_json(r));
  EXPECT_EQ(back.spec.egress.headers.at("api.example.com").count("Authorization"), 1u);
  EXPECT_EQ(back.spec.egress.headers.at("api.example.com").at("Authorization"), "");
  EXPECT_EQ(back.spec.egress.allow_domains, r.spec.egress.allow_domains);
}

TEST(Model, LimitsTakeSizesAndNumbers) {
  Limits l = limits_from_json({{"cpus", "0.5"}, {"memory", "512m"}, {"disk", 1073741824}});
  EXPECT_EQ(*l.cpu_milli, 500u);
  EXPECT_EQ(*l.memory, 512ull << 20);
  EXPECT_EQ(*l.disk, 1ull << 30);
  EXPECT_EQ(limits_to_json(l),
            json({{"cpus", 0.5}, {"memory", 512ull << 20}, {"disk", 1ull << 30}}));
}

TEST(Model, StrictDecodingNamesTheField) {
  EXPECT_NE(message([] {
              spec_from_json({{"colour", "red"}});
            }).find("unknown field 'colour'"),
            std::string::npos);
  EXPECT_NE(message([] {
              spec_from_json({{"name", 5}});
            }).find("field 'name' must be a string"),
            std::string::npos);
  EXPECT_NE(message([] {
              spec_from_json({{"limits", {{"memory", true}}}});
            }).find("field 'limits.memory'"),
            std::string::npos);
  EXPECT_NE(message([] {
              spec_from_json({{"limits", {{"ram", 1}}}});
            }).find("unknown field 'limits.ram'"),
            std::string::npos);
  EXPECT_NE(message([] {
              spec_from_json({{"policy", {{"auto_stop_ms", -1}}}});
            }).find("field 'policy.auto_stop_ms'"),
            std::string::npos);
  EXPECT_NE(message([] {
              spec_from_json({{"network", "bridge"}});
            }).find("invalid network mode"),
            std::string::npos);
  EXPECT_NE(message([] { spec_from_json(json::array()); }).find("must be an object"),
            std::string::npos);
  // A caller's own keys beside the spec's.
  EXPECT_NO_THROW(spec_from_json({{"count", 3}}, "", {"count"}));
}

TEST(Model, EarlierStoredFormsAreUpgraded) {
  json v1 = {{"image", "host"},
             {"env", {"A=1"}},
             {"limits", {{"cpu_milli", 250}, {"memory", 1 << 30}}},
             {"network", "none"}};
  BoxSpec s = spec_from_json(upgrade_spec_v1(v1));
  EXPECT_EQ(*s.limits.cpu_milli, 250u);
  EXPECT_EQ(*s.limits.memory, 1u << 30);
  EXPECT_EQ(s.env, std::vector<std::string>{"A=1"});
  // A current one is left as it is.
  json now = spec_to_json(full_spec(), Secrets::kept);
  EXPECT_EQ(upgrade_spec_v1(now), now);
}

TEST(Model, StoreMigratesSpecsOfSchema5) {
  std::string path = "/tmp/upstream-model-test-" + std::to_string(::getpid()) + ".db";
  ::unlink(path.c_str());
  {
    store::Db db = store::Db::open(path);
    store::BoxStore st(db);
    st.migrate();
    BoxRecord b;
    b.id = "0123456789ab";
    b.name = "old";
    b.state = "stopped";
    b.spec.name = "old";
    st.insert_box(b);
    // As schema 5 wrote it.
    db.prepare("UPDATE boxes SET spec = ?")
        .bind(1, std::string(R"({"image":"host","name":"old","labels":{},"env":["K=v"],)"
                             R"("limits":{"cpu_milli":500,"memory":268435456},"user":"root",)"
                             R"("workdir":"/home/user","network":"none"})"))
        .run();
    db.exec("PRAGMA user_version = 5");
  }
  store::Db db = store::Db::open(path);
  store::BoxStore st(db);
  st.migrate();
  BoxRecord b = st.resolve("old");
  EXPECT_EQ(*b.spec.limits.cpu_milli, 500u);
  EXPECT_EQ(*b.spec.limits.memory, 268435456u);
  EXPECT_EQ(b.spec.env, std::vector<std::string>{"K=v"});
  for (const char* ext : {"", "-wal", "-shm"}) ::unlink((path + ext).c_str());
}
