#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "api/routes.h"
#include "common/error.h"

namespace upstream {
namespace {

using nlohmann::json;

TEST(ApiRoutes, TheTableIsWhatOpenApiDescribes) {
  std::ifstream f(std::string(UPSTREAM_SOURCE_DIR) + "/docs/openapi.json");
  ASSERT_TRUE(f) << "docs/openapi.json";
  json doc = json::parse(f);
  std::set<std::pair<std::string, std::string>> described, table;
  for (const auto& [path, ops] : doc.at("paths").items())
    for (const auto& [method, op] : ops.items())
      if (method == "get" || method == "post" || method == "put" || method == "delete")
        described.insert({method == "delete" ? "DELETE"
                          : method == "get"  ? "GET"
                          : method == "post" ? "POST"
                                             : "PUT",
                          path});
  for (const auto& r : api::routes()) table.insert({r.method, r.path});
  for (const auto& d : described) EXPECT_TRUE(table.count(d)) << d.first << " " << d.second;
  for (const auto& t : table) EXPECT_TRUE(described.count(t)) << t.first << " " << t.second;
}

TEST(ApiRoutes, LabelsAreTemplatesNeverIds) {
  EXPECT_EQ(api::route_label("GET", "/v1/snapshots/18255f1bf05d"), "/v1/snapshots/{snapshot}");
  EXPECT_EQ(api::route_label("DELETE", "/v1/images/py"), "/v1/images/{snapshot}");
  EXPECT_EQ(api::route_label("PUT", "/v1/snapshots/import"), "/v1/snapshots/import");
  EXPECT_EQ(api::route_label("GET", "/v1/boxes/b1/execs/3/logs?stream=stdout"),
            "/v1/boxes/{box}/execs/{exec}/logs");
  EXPECT_EQ(api::route_label("DELETE", "/v1/boxes/b1/expose/8080"),
            "/v1/boxes/{box}/expose/{exposure}");
  EXPECT_EQ(api::route_label("GET", "/v1/sessions/s1/"), "/v1/sessions/{session}");
  // What matches no route is one label, whatever it names.
  EXPECT_EQ(api::route_label("GET", "/v1/boxes/b1/nothing/here/at/all"), "unmatched");
  EXPECT_EQ(api::route_label("GET", "/2f1d9a0c"), "unmatched");
  EXPECT_EQ(api::route_label("GET", "/v1/boxes//stop"), "unmatched");
}

TEST(ApiRoutes, MatchNamesParametersAndTheMethod) {
  auto m = api::match("POST", "/v1/boxes/py-agent/execs/12/kill");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->path, "/v1/boxes/{box}/execs/{exec}/kill");
  EXPECT_EQ(m->params.at("box"), "py-agent");
  EXPECT_EQ(m->params.at("exec"), "12");
  EXPECT_TRUE(m->method_allowed);
  auto get = api::match("GET", "/v1/boxes/py-agent/execs/12/kill");
  ASSERT_TRUE(get);
  EXPECT_FALSE(get->method_allowed);
  auto post = api::match("POST", "/v1/boxes");
  ASSERT_TRUE(post);
  EXPECT_TRUE(post->method_allowed);
  EXPECT_FALSE(api::match("GET", "/v1/nowhere"));
}

TEST(ApiRoutes, PathsAreBuiltEncoded) {
  EXPECT_EQ(api::path("/v1/boxes/{box}/execs/{exec}", {"a b/c", "3"}),
            "/v1/boxes/a%20b%2Fc/execs/3");
  EXPECT_EQ(api::path("/v1/sessions", {}), "/v1/sessions");
  EXPECT_THROW(api::path("/v1/boxes/{box}", {}), Error);
  EXPECT_THROW(api::path("/v1/boxes/{box}", {"a", "b"}), Error);
}

}  // namespace
}  // namespace upstream
