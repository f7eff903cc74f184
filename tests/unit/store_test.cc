#include "store/box_store.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include "common/error.h"
#include "common/time.h"

namespace upstream::store {
namespace {

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = "/tmp/upstream-store-test-" + std::to_string(::getpid()) + ".db";
    ::unlink(path_.c_str());
    db_ = std::make_unique<Db>(Db::open(path_));
    store_ = std::make_unique<BoxStore>(*db_);
    store_->migrate();
  }
  void TearDown() override {
    store_.reset();
    db_.reset();
    for (const char* ext : {"", "-wal", "-shm"}) ::unlink((path_ + ext).c_str());
  }
  BoxRecord make(const std::string& id, const std::string& name,
                 std::map<std::string, std::string> labels = {}) {
    BoxRecord b;
    b.id = id;
    b.name = name;
    b.state = "running";
    b.created_at = now_ms();
    b.spec.name = name;
    b.spec.labels = std::move(labels);
    b.spec.limits.memory = 1 << 30;
    store_->insert_box(b);
    return b;
  }
  std::string path_;
  std::unique_ptr<Db> db_;
  std::unique_ptr<BoxStore> store_;
};

TEST_F(StoreTest, WarmPoolClaimsTheOldestReadyBoxOnce) {
  auto pooled = [&](const std::string& id, const std::string& name, const std::string& state,
                    int64_t at) {
    BoxRecord b;
    b.id = id;
    b.name = name;
    b.state = state;
    b.created_at = at;
    b.spec.name = name;
    b.pool = "shape-a";
    store_->insert_box(b);
  };
  pooled("aaaa00000001", "box-aaaa01", "running", 200);
  pooled("aaaa00000002", "box-aaaa02", "running", 100);
  pooled("aaaa00000003", "box-aaaa03", "creating", 50);  // not ready yet
  make("bbbb00000001", "taken");
  // Nobody's: not listed (unless asked), not resolvable.
  BoxFilter mine;
  mine.pooled = BoxFilter::Pooled::exclude;
  EXPECT_EQ(store_->list(mine).size(), 1u);
  EXPECT_THROW(store_->resolve("box-aaaa01"), Error);

  BoxRecord as;
  as.spec.labels = {{"team", "x"}};
  as.spec.env = {"A=1"};
  as.state_reason = "created (from the warm pool)";
  as.name = "taken";
  EXPECT_THROW(store_->claim_pooled("shape-a", as), Error);  // a taken name changes nothing
  EXPECT_EQ(store_->list(mine).size(), 1u);
  as.name = "mine";
  EXPECT_EQ(store_->claim_pooled("shape-b", as), std::nullopt);
  auto id = store_->claim_pooled("shape-a", as);
  ASSERT_TRUE(id);
  EXPECT_EQ(*id, "aaaa00000002");  // the oldest ready one
  BoxRecord got = store_->resolve("mine");
  EXPECT_EQ(got.pool, "");
  EXPECT_EQ(got.spec.env, std::vector<std::string>{"A=1"});
  BoxFilter team;
  team.labels = {{"team", "x"}};
  EXPECT_EQ(store_->list(team).size(), 1u);
  // A handed-out box cannot be retired by the pool; a waiting one can.
  EXPECT_FALSE(store_->retire_pooled("aaaa00000002", "surplus"));
  EXPECT_TRUE(store_->retire_pooled("aaaa00000001", "surplus"));
  as.name = "";
  EXPECT_EQ(store_->claim_pooled("shape-a", as), std::nullopt);  // removing / creating only
}

TEST_F(StoreTest, ResolveByIdPrefixAndName) {
  make("abcdef012345", "alpha");
  make("abcd99999999", "beta");
  EXPECT_EQ(store_->resolve("abcdef012345").name, "alpha");
  EXPECT_EQ(store_->resolve("beta").id, "abcd99999999");
  EXPECT_EQ(store_->resolve("abcde").name, "alpha");
  // Ambiguous and too-short prefixes are refused rather than guessed.
  EXPECT_THROW(store_->resolve("abcd"), Error);
  EXPECT_THROW(store_->resolve("abc"), Error);
  try {
    store_->resolve("gamma");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::not_found);
  }
}

TEST_F(StoreTest, NamesAreUnique) {
  make("111111111111", "same");
  try {
    make("222222222222", "same");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::already_exists);
  }
  EXPECT_EQ(store_->list().size(), 1u);
}

TEST_F(StoreTest, SpecRoundTrips) {
  BoxRecord b = make("333333333333", "spec", {{"team", "ml"}});
  BoxRecord r = store_->resolve("spec");
  EXPECT_EQ(r.spec.labels.at("team"), "ml");
  EXPECT_EQ(*r.spec.limits.memory, 1u << 30);
  EXPECT_FALSE(r.spec.limits.cpu_milli.has_value());
}

TEST_F(StoreTest, ListFiltersByLabelStateAndPages) {
  make("a00000000000", "a", {{"env", "prod"}, {"team", "x"}});
  make("b00000000000", "b", {{"env", "prod"}});
  make("c00000000000", "c", {{"env", "dev"}});
  store_->set_state("c00000000000", "stopped", "test");
  EXPECT_EQ(store_->list({{{"env", "prod"}}}).size(), 2u);
  EXPECT_EQ(store_->list({{{"env", "prod"}, {"team", "x"}}}).size(), 1u);
  EXPECT_EQ(store_->list({{}, "stopped"}).size(), 1u);
  BoxFilter page{{}, "", 2, ""};
  auto first = store_->list(page);
  ASSERT_EQ(first.size(), 2u);
  page.after_id = first.back().id;
  auto second = store_->list(page);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].id, "c00000000000");
}

TEST_F(StoreTest, TransitionsAreRecorded) {
  make("d00000000000", "d");
  store_->mark_running("d00000000000", 123, 456, 7, "g1", "started");
  store_->mark_stopped("d00000000000", "stopped", 5000, 1 << 20, 1);
  store_->mark_running("d00000000000", 124, 457, 8, "g1", "started");
  store_->mark_stopped("d00000000000", "stopped", 3000, 1 << 19, 0);
  auto b = *store_->find_id("d00000000000");
  EXPECT_EQ(b.state, "stopped");
  EXPECT_EQ(b.cpu_us_total, 8000u);
  EXPECT_EQ(b.memory_peak, 1u << 20);
  EXPECT_EQ(b.oom_kills_total, 1u);
  EXPECT_FALSE(b.slot.has_value());
  auto ev = store_->events("d00000000000");
  ASSERT_EQ(ev.size(), 5u);
  EXPECT_EQ(ev[1].state, "running");
  EXPECT_EQ(ev[4].state, "stopped");
}

TEST_F(StoreTest, ExecSequenceRecordsAndPruning) {
  make("e00000000000", "e");
  for (int i = 0; i < 10; i++) {
    ExecRecord x;
    x.box_id = "e00000000000";
    x.seq = store_->next_exec_seq("e00000000000");
    x.argv = {"echo", std::to_string(i)};
    x.state = "running";
    x.started_at = now_ms();
    store_->insert_exec(x);
    EXPECT_EQ(x.seq, static_cast<uint64_t>(i + 1));
    if (i != 9) {
      x.state = "exited";
      x.exit_code = i;
      x.stdout_tail = std::string("out\0put", 7);
      store_->finish_exec(x);
    }
  }
  auto one = store_->get_exec("e00000000000", 3);
  ASSERT_TRUE(one);
  EXPECT_EQ(one->exit_code, 2);
  EXPECT_EQ(one->stdout_tail, std::string("out\0put", 7));
  EXPECT_EQ(store_->list_execs("e00000000000", true, 0).size(), 1u);
  EXPECT_EQ(store_->list_execs("e00000000000", false, 4).front().seq, 7u);
  auto pruned = store_->prune_execs("e00000000000", 3);
  // Everything older than the newest three, except the running one, is gone.
  EXPECT_EQ(pruned.size(), 7u);
  EXPECT_EQ(store_->list_execs("e00000000000", false, 0).size(), 3u);
  // Stopping a box marks what was still running as lost.
  store_->mark_stopped("e00000000000", "stopped", 0, 0, 0);
  EXPECT_EQ(store_->get_exec("e00000000000", 10)->state, "lost");
  // Removing a box removes its execs and events.
  store_->delete_box("e00000000000");
  EXPECT_FALSE(store_->get_exec("e00000000000", 9).has_value());
  EXPECT_TRUE(store_->events("e00000000000").empty());
}

TEST_F(StoreTest, MetaAndReopen) {
  store_->set_meta("instance", "abc");
  store_->set_meta("instance", "def");
  make("f00000000000", "f");
  store_.reset();
  db_.reset();
  db_ = std::make_unique<Db>(Db::open(path_));
  store_ = std::make_unique<BoxStore>(*db_);
  store_->migrate();
  EXPECT_EQ(store_->meta("instance"), "def");
  EXPECT_EQ(store_->meta("missing", "x"), "x");
  EXPECT_EQ(store_->list().size(), 1u);
}

TEST_F(StoreTest, TransactionRollsBack) {
  make("g00000000000", "g");
  EXPECT_THROW(db_->transaction([&] {
    store_->set_meta("k", "v");
    throw Error("boom");
  }),
               Error);
  EXPECT_EQ(store_->meta("k", "none"), "none");
}

}  // namespace
}  // namespace upstream::store
