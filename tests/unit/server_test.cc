// The HTTP API's logic pieces: API keys on a real SQLite database, metrics, UTF-8 handling,
// the wire shapes' round trips, listen addresses, and where host copies land.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "common/error.h"
#include "common/time.h"
#include "common/utf8.h"
#include "engine/host_tree.h"
#include "engine/wire.h"
#include "server/api.h"
#include "server/keys.h"
#include "server/metrics.h"
#include "server/request_guard.h"
#include "server/server.h"
#include "store/db.h"

using namespace upstream;
using namespace upstream::server;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char t[] = "/tmp/upstream-unit-XXXXXX";
    path = ::mkdtemp(t);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

}  // namespace

TEST(Keys, CreateAuthenticateRevoke) {
  TempDir d;
  store::Db db = store::Db::open(d.path + "/k.db");
  KeyStore ks(db);
  EXPECT_FALSE(ks.any_active());
  auto [key, secret] = ks.create("acme", "ci");
  EXPECT_TRUE(ks.any_active());
  EXPECT_EQ(secret.rfind("up_" + key.id + "_", 0), 0u);
  auto got = ks.authenticate(secret);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->tenant, "acme");
  // One changed character, a truncated key, someone else's id with this secret: all refused.
  std::string bad = secret;
  bad.back() = bad.back() == 'a' ? 'b' : 'a';
  EXPECT_FALSE(ks.authenticate(bad));
  EXPECT_FALSE(ks.authenticate(secret.substr(0, secret.size() - 1)));
  auto [other, other_secret] = ks.create("globex", "");
  EXPECT_FALSE(ks.authenticate("up_" + other.id + secret.substr(15)));
  EXPECT_TRUE(ks.authenticate(other_secret));
  // Only a hash is kept.
  auto s = db.prepare("SELECT hash FROM api_keys WHERE id = ?");
  s.bind(1, key.id);
  ASSERT_TRUE(s.step());
  EXPECT_EQ(s.text(0).find(secret.substr(16)), std::string::npos);
  ks.revoke(key.id);
  EXPECT_FALSE(ks.authenticate(secret));
  EXPECT_EQ(ks.list(false).size(), 1u);
  EXPECT_EQ(ks.list(true).size(), 2u);
  EXPECT_THROW(ks.revoke("000000000000"), Error);
}

TEST(Keys, TenantNamesAndLimits) {
  TempDir d;
  store::Db db = store::Db::open(d.path + "/k.db");
  KeyStore ks(db);
  for (const char* bad : {"Acme", "a b", "-x", "x/y", "a_b", "caf\xc3\xa9", "."})
    EXPECT_THROW(ks.create(bad, ""), Error) << bad;
  EXPECT_TRUE(ks.list(true).empty());  // nothing was created by the refusals
  // No tenant: an operator key.
  auto [op, secret] = ks.create("", "ops");
  auto found = ks.authenticate(secret);
  ASSERT_TRUE(found);
  EXPECT_EQ(found->tenant, "");
  ks.create("acme", "");
  EXPECT_FALSE(ks.tenant("acme").limits.max_boxes);
  ks.set_limits("acme", {5, std::nullopt});
  ks.set_limits("acme", {std::nullopt, 2});
  auto t = ks.tenant("acme");
  EXPECT_EQ(t.limits.max_boxes, 5u);
  EXPECT_EQ(t.limits.max_execs, 2u);
}

TEST(Metrics, HistogramIsCumulative) {
  Histogram h;
  h.observe(0.0005);
  h.observe(0.003);
  h.observe(100);
  std::string out = h.render("x", "a=\"b\"");
  EXPECT_NE(out.find("x_bucket{a=\"b\",le=\"0.001\"} 1\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_bucket{a=\"b\",le=\"0.005\"} 2\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_bucket{a=\"b\",le=\"30\"} 2\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_bucket{a=\"b\",le=\"+Inf\"} 3\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_count{a=\"b\"} 3\n"), std::string::npos) << out;
  Metrics m;
  m.request("/v1/boxes", "GET", 200, 0.01);
  m.error("not_found");
  m.exec_started(true);
  m.exec_started(true);  // a background exec: started, never waited on
  m.exec_started(false);
  m.exec_done(0.004);
  std::string text = m.render({{"running", 2}}, 1);
  EXPECT_NE(text.find("upstream_execs_total{result=\"started\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("upstream_execs_total{result=\"failed\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("upstream_exec_duration_seconds_count 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("upstream_boxes{state=\"running\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("upstream_boxes{state=\"stopped\"} 0\n"), std::string::npos);
  EXPECT_NE(
      text.find(
          "upstream_http_requests_total{route=\"/v1/boxes\",method=\"GET\",status=\"200\"} 1"),
      std::string::npos);
  EXPECT_NE(text.find("upstream_errors_total{code=\"not_found\"} 1"), std::string::npos);
}

TEST(Utf8, Validation) {
  EXPECT_TRUE(valid_utf8("plain"));
  EXPECT_TRUE(valid_utf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(valid_utf8("\xff"));
  EXPECT_FALSE(valid_utf8("\xc3"));              // cut short
  EXPECT_FALSE(valid_utf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(valid_utf8("\xed\xa0\x80"));      // a surrogate
  EXPECT_FALSE(valid_utf8("\xf4\x90\x80\x80"));  // past U+10FFFF
}

TEST(Utf8, JoinerNeverSplitsACharacter) {
  std::string text =
      "a\xe2\x82\xac"
      "b\xf0\x9f\x98\x80";
  // Every way of cutting the text in two gives back whole characters only.
  for (size_t cut = 0; cut <= text.size(); cut++) {
    Utf8Joiner j;
    std::string a = j.take(text.substr(0, cut));
    std::string b = j.take(text.substr(cut));
    EXPECT_TRUE(valid_utf8(a)) << cut;
    EXPECT_TRUE(valid_utf8(b)) << cut;
    EXPECT_EQ(a + b + j.rest(), text) << cut;
  }
  Utf8Joiner j;
  EXPECT_EQ(j.take("x\xe2\x82"), "x");
  EXPECT_EQ(j.rest(), "\xe2\x82");  // what is left at the end is given back as it is
}

TEST(Wire, RoundTrips) {
  EXPECT_EQ(parse_time(format_time(1764643200123)), 1764643200123);
  EXPECT_EQ(parse_time(""), 0);
  EXPECT_EQ(parse_time("yesterday"), 0);
  BoxRecord b;
  b.id = "0123456789ab";
  b.name = "web";
  b.state = "running";
  b.state_reason = "created";
  b.spec.image = "host";
  b.spec.labels = {{"team", "a"}};
  b.spec.env = {"A=1"};
  b.spec.limits.cpu_milli = 1500;
  b.spec.limits.memory = 1 << 30;
  b.spec.limits.pids = 100;
  b.created_at = 1764643200123;
  b.started_at = 1764643200456;
  b.init_pid = 42;
  b.slot = 3;
  BoxUsage u;
  u.cpu_us = 2500000;
  u.memory = 4096;
  u.disk_bytes = 8192;
  std::vector<BoxEvent> ev{{1764643200123, "running", "created"}};
  BoxUsage u2;
  std::vector<BoxEvent> ev2;
  BoxRecord back = box_from_json(box_json(b, &u, &ev), &u2, &ev2);
  EXPECT_EQ(box_json(back, &u2, &ev2), box_json(b, &u, &ev));
  ExecRecord e;
  e.box_id = b.id;
  e.seq = 7;
  e.argv = {"sh", "-c", "exit 3"};
  e.state = "exited";
  e.exit_code = 3;
  e.started_at = 1764643200000;
  e.ended_at = 1764643200100;
  e.cpu_us = 1000;
  e.max_rss_kb = 2048;
  EXPECT_EQ(exec_json(exec_from_json(exec_json(e))), exec_json(e));
  EXPECT_THROW(box_from_json(nlohmann::json{{"name", "no id"}}), Error);
}

TEST(Listen, Addresses) {
  EXPECT_EQ(parse_listen("127.0.0.1:8420"),
            std::make_pair(std::string("127.0.0.1"), uint16_t{8420}));
  EXPECT_EQ(parse_listen("[::1]:80").first, "::1");
  EXPECT_EQ(parse_listen(":9000").first, "0.0.0.0");
  for (const char* bad : {"8420", "localhost:80", "1.2.3.4:", "1.2.3.4:99999", "1.2.3.4:x"})
    EXPECT_THROW(parse_listen(bad), Error) << bad;
  EXPECT_TRUE(is_loopback("127.0.0.1"));
  EXPECT_TRUE(is_loopback("::1"));
  EXPECT_FALSE(is_loopback("0.0.0.0"));
  EXPECT_FALSE(is_loopback("10.1.2.3"));
}

TEST(HostTree, WhereCopiesLand) {
  TempDir d;
  std::filesystem::create_directories(d.path + "/into");
  // Into an existing directory: the source keeps its name.
  auto p = plan_copy_out(d.path + "/into", true);
  EXPECT_EQ(p.root_dir, d.path + "/into");
  EXPECT_EQ(p.map("src/a/b"), "src/a/b");
  EXPECT_EQ(p.map("src"), "src");
  // A directory to a new name: the destination is made and stands for the source's top.
  p = plan_copy_out(d.path + "/renamed", true);
  EXPECT_TRUE(std::filesystem::is_directory(d.path + "/renamed"));
  EXPECT_EQ(p.map("src"), std::nullopt);
  EXPECT_EQ(p.map("src/a"), "a");
  // A file to a new name.
  p = plan_copy_out(d.path + "/f.txt", false);
  EXPECT_EQ(p.root_dir, d.path);
  EXPECT_EQ(p.map("orig.txt"), "f.txt");
  EXPECT_THROW(plan_copy_out(d.path + "/missing/f.txt", false), Error);
  EXPECT_TRUE(plain_relative("a/b"));
  for (const char* bad : {"", "/a", "a/../b", "./a", "a//b"})
    EXPECT_FALSE(plain_relative(bad)) << bad;
}

TEST(HostTree, EntriesNeverFollowLinksOrKeepSetId) {
  TempDir d;
  std::filesystem::create_directories(d.path + "/root");
  std::filesystem::create_directories(d.path + "/outside");
  ::symlink((d.path + "/outside").c_str(), (d.path + "/root/link").c_str());
  int root = ::open((d.path + "/root").c_str(), O_RDONLY | O_DIRECTORY);
  ASSERT_GE(root, 0);
  bool drained = false;
  auto pump = [&](const std::function<void(const char*, size_t)>& sink) {
    sink("x", 1);
    drained = true;
  };
  EXPECT_THROW(write_host_entry(root, "link/evil", {"file", 0644, ""}, pump), Error);
  EXPECT_TRUE(drained);  // the data was consumed even though the entry was refused
  EXPECT_FALSE(std::filesystem::exists(d.path + "/outside/evil"));
  write_host_entry(root, "suid", {"file", 04755, ""}, pump);
  struct stat st;
  ASSERT_EQ(::stat((d.path + "/root/suid").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  ::close(root);
}

TEST(RequestGuard, AnswersOnlyToItsOwnNames) {
  GuardOptions o;
  o.host_names = {"api.example.com", "*.sandbox.example.com"};
  for (const char* ok : {"127.0.0.1:8420", "127.0.0.1", "[::1]:8420", "localhost:8420", "LOCALHOST",
                         "ui.localhost:1", "10.1.2.3:80", "api.example.com", "API.Example.com:443",
                         "api.example.com.", "49983-abc.sandbox.example.com", ""})
    EXPECT_TRUE(host_allowed(ok, o)) << ok;
  for (const char* bad : {"rebind.evil.example", "rebind.evil.example:8420", "example.com",
                          "sandbox.example.com", "api.example.com.evil.net", "localhost.evil.net",
                          "[::1", "127.0.0.1:x", "host:123456", "evil.example:8420@127.0.0.1"})
    EXPECT_FALSE(host_allowed(bad, o)) << bad;
}

TEST(RequestGuard, RefusesOtherSitesAndUnsafeBodies) {
  GuardOptions o;
  o.allowed_origins = {"https://app.example.com"};
  auto check = [&](GuardedRequest r) { return guard_request(r, o); };
  GuardedRequest base{"POST", "127.0.0.1:8420", std::nullopt, "application/json", true, false,
                      false};
  EXPECT_FALSE(check(base));
  // DNS rebinding: the page's own name, resolved to the server.
  auto r = base;
  r.host = "rebind.evil.example:8420";
  ASSERT_TRUE(check(r));
  EXPECT_EQ(check(r)->status, 421);
  r.local_socket = true;  // no browser speaks to the unix socket
  EXPECT_FALSE(check(r));
  // A foreign page, and the server's own.
  r = base;
  for (const char* bad : {"http://evil.example", "null", "http://127.0.0.1:3000",
                          "http://localhost:8420", "file://", "http://127.0.0.1:8420.evil"}) {
    r.origin = bad;
    ASSERT_TRUE(check(r)) << bad;
    EXPECT_EQ(check(r)->status, 403) << bad;
  }
  for (const char* ok :
       {"http://127.0.0.1:8420", "https://app.example.com", "https://APP.example.com/"}) {
    r.origin = ok;
    EXPECT_FALSE(check(r)) << ok;
  }
  // Bodies a page may send without a preflight.
  r = base;
  for (const char* bad : {"text/plain", "", "application/x-www-form-urlencoded",
                          "multipart/form-data; boundary=x", "application/octet-stream"}) {
    r.content_type = bad;
    ASSERT_TRUE(check(r)) << bad;
    EXPECT_EQ(check(r)->status, 415) << bad;
  }
  for (const char* ok :
       {"application/json", "Application/JSON; charset=utf-8", "application/merge-patch+json"}) {
    r.content_type = ok;
    EXPECT_FALSE(check(r)) << ok;
  }
  r.has_body = false;
  r.content_type = "text/plain";
  EXPECT_FALSE(check(r));  // no body, nothing to read as JSON
  // Raw routes take any type but those, on POST.
  r = base;
  r.raw_body = true;
  r.content_type = "application/octet-stream";
  EXPECT_FALSE(check(r));
  r.content_type = "text/plain";
  EXPECT_TRUE(check(r));
  r.method = "PUT";  // never sent cross-site without a preflight
  EXPECT_FALSE(check(r));
}

// An exec request is parsed and checked without an engine: every refusal names the field.
TEST(ExecRequest, ParsedAndCheckedWithoutAnEngine) {
  ExecRequest q = parse_exec_request(
      R"({"cmd": ["sh", "-c", "echo hi"], "env": {"A": "1"}, "timeout_ms": 500, "stream": true,
          "stdin_stream": true})",
      "application/json");
  EXPECT_EQ(q.spec.argv, (std::vector<std::string>{"sh", "-c", "echo hi"}));
  EXPECT_EQ(q.spec.env, (std::vector<std::string>{"A=1"}));
  EXPECT_EQ(q.spec.timeout_ms, 500u);
  EXPECT_TRUE(q.stream && q.stdin_stream && q.spec.stdin && !q.sse);
  EXPECT_TRUE(parse_exec_request(R"({"shell": "true"})", "text/event-stream").sse);
  auto refused = [](const std::string& body) -> std::string {
    try {
      parse_exec_request(body, "");
    } catch (const std::exception& e) {
      EXPECT_EQ(Api::error_body(e).first, 400) << body;
      return e.what();
    }
    return "accepted";
  };
  EXPECT_NE(refused(R"({"cmd": ["a"], "shell": "b"})").find("exactly one of"), std::string::npos);
  EXPECT_NE(refused(R"({"cmd": ["a"], "env": {"1X": "v"}})").find("'1X'"), std::string::npos);
  EXPECT_NE(refused(R"({"cmd": ["a"], "background": true, "stdin": "x"})").find("background"),
            std::string::npos);
  EXPECT_NE(refused(R"({"cmd": ["a"], "stdin_stream": true})").find("stdin_stream"),
            std::string::npos);
  EXPECT_NE(refused(R"({"cmd": ["a"], "frobnicate": 1})").find("frobnicate"), std::string::npos);
  EXPECT_NE(refused(R"({"cmd": "a"})").find("cmd"), std::string::npos);
}
