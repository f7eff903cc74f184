#include "store/box_store.h"

#include "model/egress.h"

#include "common/error.h"
#include "common/strings.h"
#include "common/time.h"

namespace upstream {

using nlohmann::json;

}  // namespace upstream

namespace upstream::store {

namespace {

const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS boxes(
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  state TEXT NOT NULL,
  state_reason TEXT NOT NULL DEFAULT '',
  spec TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  started_at INTEGER NOT NULL DEFAULT 0,
  stopped_at INTEGER NOT NULL DEFAULT 0,
  init_pid INTEGER NOT NULL DEFAULT 0,
  init_start INTEGER NOT NULL DEFAULT 0,
  slot INTEGER,
  host_generation TEXT NOT NULL DEFAULT '',
  owner_pid INTEGER NOT NULL DEFAULT 0,
  owner_start INTEGER NOT NULL DEFAULT 0,
  next_exec INTEGER NOT NULL DEFAULT 1,
  cpu_us_total INTEGER NOT NULL DEFAULT 0,
  memory_peak INTEGER NOT NULL DEFAULT 0,
  oom_kills_total INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS labels(
  box_id TEXT NOT NULL REFERENCES boxes(id) ON DELETE CASCADE,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY(box_id, key)
);
CREATE INDEX IF NOT EXISTS labels_kv ON labels(key, value);
CREATE TABLE IF NOT EXISTS events(
  box_id TEXT NOT NULL REFERENCES boxes(id) ON DELETE CASCADE,
  at INTEGER NOT NULL,
  state TEXT NOT NULL,
  reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_box ON events(box_id, at);
CREATE TABLE IF NOT EXISTS execs(
  box_id TEXT NOT NULL REFERENCES boxes(id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  argv TEXT NOT NULL,
  user TEXT NOT NULL DEFAULT '',
  cwd TEXT NOT NULL DEFAULT '',
  background INTEGER NOT NULL DEFAULT 0,
  tty INTEGER NOT NULL DEFAULT 0,
  state TEXT NOT NULL,
  pid INTEGER NOT NULL DEFAULT 0,
  started_at INTEGER NOT NULL,
  ended_at INTEGER NOT NULL DEFAULT 0,
  exit_code INTEGER,
  signal INTEGER NOT NULL DEFAULT 0,
  reason TEXT NOT NULL DEFAULT '',
  timed_out INTEGER NOT NULL DEFAULT 0,
  oom_killed INTEGER NOT NULL DEFAULT 0,
  cpu_us INTEGER NOT NULL DEFAULT 0,
  max_rss_kb INTEGER NOT NULL DEFAULT 0,
  stdout_bytes INTEGER NOT NULL DEFAULT 0,
  stderr_bytes INTEGER NOT NULL DEFAULT 0,
  stdout_tail BLOB,
  stderr_tail BLOB,
  PRIMARY KEY(box_id, seq)
);
CREATE INDEX IF NOT EXISTS execs_running ON execs(state) WHERE state = 'running';
)sql";

// Version 2: snapshots and the layers they are made of.
const char* kSchema2 = R"sql(
CREATE TABLE IF NOT EXISTS snapshots(
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL,
  source_box TEXT NOT NULL DEFAULT '',
  parent TEXT NOT NULL DEFAULT '',
  base_image TEXT NOT NULL,
  layers TEXT NOT NULL,
  config TEXT NOT NULL,
  labels TEXT NOT NULL DEFAULT '{}',
  bytes INTEGER NOT NULL DEFAULT 0,
  total_bytes INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  ephemeral INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS layers(
  digest TEXT PRIMARY KEY,
  bytes INTEGER NOT NULL,
  files INTEGER NOT NULL,
  created_at INTEGER NOT NULL
);
)sql";

// Version 5: metered usage, kept after its box or snapshot is gone.
const char* kSchemaUsage = R"sql(
CREATE TABLE IF NOT EXISTS usage(
  kind TEXT NOT NULL,
  subject TEXT NOT NULL,
  name TEXT NOT NULL,
  labels TEXT NOT NULL DEFAULT '{}',
  start_at INTEGER NOT NULL,
  end_at INTEGER NOT NULL,
  cpu_us INTEGER NOT NULL DEFAULT 0,
  running_ms INTEGER NOT NULL DEFAULT 0,
  cpus_milli INTEGER NOT NULL DEFAULT 0,
  memory_peak INTEGER NOT NULL DEFAULT 0,
  bytes INTEGER NOT NULL DEFAULT 0,
  byte_ms REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS usage_end ON usage(end_at);
)sql";

const char* kBoxColumns =
    "id, name, state, state_reason, spec, created_at, started_at, stopped_at, init_pid, "
    "init_start, slot, "
    "host_generation, owner_pid, owner_start, cpu_us_total, memory_peak, oom_kills_total, "
    "MAX(last_active_at, IFNULL((SELECT started_at FROM execs x WHERE x.box_id = boxes.id AND "
    "x.state != 'failed' ORDER BY seq DESC LIMIT 1), 0)), "
    "(SELECT MAX(at) FROM events e WHERE e.box_id = boxes.id), archive_layer, pool";

const char* kExecColumns =
    "box_id, seq, argv, user, cwd, background, tty, state, pid, started_at, ended_at, exit_code, "
    "signal, "
    "reason, timed_out, oom_killed, cpu_us, max_rss_kb, stdout_bytes, stderr_bytes, stdout_tail, "
    "stderr_tail";

}  // namespace

void BoxStore::migrate() {
  int64_t version = 0;
  {
    auto s = db_.prepare("PRAGMA user_version");
    if (s.step()) version = s.i64(0);
  }
  if (version > 6)
    throw Error(Errc::failed_precondition,
                "the state directory was written by a newer upstream (schema " +
                    std::to_string(version) + ")");
  if (version == 6) return;
  auto add_column = [&](const char* name, const char* decl) {
    auto s = db_.prepare("SELECT 1 FROM pragma_table_info('boxes') WHERE name = ?");
    s.bind(1, std::string(name));
    if (!s.step()) db_.exec(std::string("ALTER TABLE boxes ADD COLUMN ") + name + " " + decl);
  };
  db_.transaction([&] {
    if (version < 1) db_.exec(kSchema);
    if (version < 2) db_.exec(kSchema2);
    // Version 3: when a box was last used, for idle policies. Version 4: archived boxes.
    // Version 5: the warm pool.
    add_column("last_active_at", "INTEGER NOT NULL DEFAULT 0");
    add_column("archive_layer", "TEXT NOT NULL DEFAULT ''");
    add_column("pool", "TEXT NOT NULL DEFAULT ''");
    db_.exec("CREATE INDEX IF NOT EXISTS boxes_pool ON boxes(pool, state) WHERE pool != ''");
    // ...and metering.
    add_column("metered_at", "INTEGER NOT NULL DEFAULT 0");
    add_column("metered_cpu_us", "INTEGER NOT NULL DEFAULT 0");
    {
      auto s =
          db_.prepare("SELECT 1 FROM pragma_table_info('snapshots') WHERE name = 'metered_at'");
      if (!s.step())
        db_.exec("ALTER TABLE snapshots ADD COLUMN metered_at INTEGER NOT NULL DEFAULT 0");
    }
    db_.exec(kSchemaUsage);
    // Version 6: specs in their one encoding (model/box.h): limits in "cpus", env as an object.
    if (version < 6) {
      for (const char* t : {"boxes:id:spec", "snapshots:id:config"}) {
        auto parts = split(t, ':');
        std::vector<std::pair<std::string, std::string>> rows;
        {
          auto q = db_.prepare("SELECT " + parts[1] + ", " + parts[2] + " FROM " + parts[0]);
          while (q.step()) rows.emplace_back(q.text(0), q.text(1));
        }
        for (const auto& [id, text] : rows)
          db_.prepare("UPDATE " + parts[0] + " SET " + parts[2] + " = ? WHERE " + parts[1] + " = ?")
              .bind(1, upgrade_spec_v1(json::parse(text)).dump())
              .bind(2, id)
              .run();
      }
    }
    db_.exec("PRAGMA user_version = 6");
  });
}

std::string BoxStore::meta(const std::string& key, const std::string& fallback) {
  auto s = db_.prepare("SELECT value FROM meta WHERE key = ?");
  s.bind(1, key);
  return s.step() ? s.text(0) : fallback;
}

void BoxStore::set_meta(const std::string& key, const std::string& value) {
  db_.prepare(
         "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = "
         "excluded.value")
      .bind(1, key)
      .bind(2, value)
      .run();
}

void BoxStore::insert_box(const BoxRecord& b) {
  db_.transaction([&] {
    {
      auto s = db_.prepare("SELECT 1 FROM boxes WHERE name = ?");
      s.bind(1, b.name);
      if (s.step())
        throw Error(Errc::already_exists, "a box named '" + b.name + "' already exists");
    }
    db_.prepare(
           "INSERT INTO boxes(id, name, state, state_reason, spec, created_at, owner_pid, "
           "owner_start, pool) "
           "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)")
        .bind(1, b.id)
        .bind(2, b.name)
        .bind(3, b.state)
        .bind(4, b.state_reason)
        .bind(5, spec_to_json(b.spec, Secrets::kept).dump())
        .bind(6, b.created_at)
        .bind(7, static_cast<int64_t>(b.owner_pid))
        .bind(8, b.owner_start)
        .bind(9, b.pool)
        .run();
    add_labels(b.id, b.spec.labels);
    add_event(b.id, b.created_at, b.state, b.state_reason);
  });
}

BoxRecord BoxStore::read_box(Stmt& s) {
  BoxRecord b;
  b.id = s.text(0);
  b.name = s.text(1);
  b.state = s.text(2);
  b.state_reason = s.text(3);
  b.spec = spec_from_json(json::parse(s.text(4)));
  b.created_at = s.i64(5);
  b.started_at = s.i64(6);
  b.stopped_at = s.i64(7);
  b.init_pid = static_cast<pid_t>(s.i64(8));
  b.init_start = static_cast<uint64_t>(s.i64(9));
  if (!s.is_null(10)) b.slot = static_cast<uint32_t>(s.i64(10));
  b.host_generation = s.text(11);
  b.owner_pid = static_cast<pid_t>(s.i64(12));
  b.owner_start = static_cast<uint64_t>(s.i64(13));
  b.cpu_us_total = static_cast<uint64_t>(s.i64(14));
  b.memory_peak = static_cast<uint64_t>(s.i64(15));
  b.oom_kills_total = static_cast<uint64_t>(s.i64(16));
  b.last_active_at = s.i64(17);
  b.state_since = s.i64(18);
  b.archive_layer = s.text(19);
  b.pool = s.text(20);
  return b;
}

std::optional<BoxRecord> BoxStore::find_id(const std::string& id) {
  auto s = db_.prepare(std::string("SELECT ") + kBoxColumns + " FROM boxes WHERE id = ?");
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return read_box(s);
}

// Finds a row by id, name, or unique id prefix (4+ hex characters) in `table`.
template <typename R>
std::optional<R> BoxStore::find_by_ref(const char* table, const char* columns,
                                       const std::string& ref, const char* what,
                                       R (BoxStore::*read)(Stmt&)) {
  std::string select = std::string("SELECT ") + columns + " FROM " + table;
  {
    auto s = db_.prepare(select + " WHERE id = ? OR name = ?");
    s.bind(1, ref).bind(2, ref);
    if (s.step()) return (this->*read)(s);
  }
  bool hex = ref.size() >= 4;
  for (char c : ref)
    if (!std::isxdigit(static_cast<unsigned char>(c))) hex = false;
  if (!hex) return std::nullopt;
  auto s = db_.prepare(select + " WHERE id >= ? AND id < ? LIMIT 2");
  std::string hi = ref;
  hi.back() = static_cast<char>(hi.back() + 1);
  s.bind(1, ref).bind(2, hi);
  if (!s.step()) return std::nullopt;
  R r = (this->*read)(s);
  if (s.step())
    throw_invalid(std::string(what) + " id prefix '" + ref + "' matches more than one " + what);
  return r;
}

BoxRecord BoxStore::resolve(const std::string& ref) {
  if (ref.empty()) throw_invalid("no box given");
  // A box waiting in the warm pool is nobody's yet.
  if (auto b = find_by_ref<BoxRecord>("boxes", kBoxColumns, ref, "box", &BoxStore::read_box))
    if (b->pool.empty()) return *b;
  throw Error(Errc::not_found, "no such box: " + ref);
}

std::vector<BoxRecord> BoxStore::list(const BoxFilter& f) {
  std::string sql = std::string("SELECT ") + kBoxColumns + " FROM boxes WHERE id > ?";
  if (!f.state.empty()) sql += " AND state = ?";
  if (f.pooled == BoxFilter::Pooled::exclude) sql += " AND pool = ''";
  if (f.pooled == BoxFilter::Pooled::only) sql += " AND pool != ''";
  for (size_t i = 0; i < f.labels.size(); i++)
    sql +=
        " AND EXISTS (SELECT 1 FROM labels l WHERE l.box_id = boxes.id AND l.key = ? AND l.value = "
        "?)";
  sql += " ORDER BY id";
  if (f.limit) sql += " LIMIT " + std::to_string(f.limit);
  auto s = db_.prepare(sql);
  int i = 1;
  s.bind(i++, f.after_id);
  if (!f.state.empty()) s.bind(i++, f.state);
  for (const auto& [k, v] : f.labels) {
    s.bind(i++, k);
    s.bind(i++, v);
  }
  std::vector<BoxRecord> out;
  while (s.step()) out.push_back(read_box(s));
  return out;
}

void BoxStore::update_spec(const std::string& id, const BoxSpec& spec) {
  db_.prepare("UPDATE boxes SET spec = ? WHERE id = ?")
      .bind(1, spec_to_json(spec, Secrets::kept).dump())
      .bind(2, id)
      .run();
}

void BoxStore::add_labels(const std::string& id, const std::map<std::string, std::string>& labels) {
  for (const auto& [k, v] : labels)
    db_.prepare("INSERT INTO labels(box_id, key, value) VALUES(?, ?, ?)")
        .bind(1, id)
        .bind(2, k)
        .bind(3, v)
        .run();
}

void BoxStore::add_event(const std::string& id, int64_t at, const std::string& state,
                         const std::string& reason) {
  db_.prepare("INSERT INTO events(box_id, at, state, reason) VALUES(?, ?, ?, ?)")
      .bind(1, id)
      .bind(2, at)
      .bind(3, state)
      .bind(4, reason)
      .run();
}

bool BoxStore::name_taken(const std::string& name) {
  auto s = db_.prepare("SELECT 1 FROM boxes WHERE name = ?");
  s.bind(1, name);
  return s.step();
}

std::optional<std::string> BoxStore::claim_pooled(const std::string& key, const BoxRecord& as) {
  {
    // Most creates match no shape: a read on the pool index spares them a write transaction.
    auto probe = db_.prepare("SELECT 1 FROM boxes WHERE pool = ? AND state = 'running' LIMIT 1");
    probe.bind(1, key);
    if (!probe.step()) return std::nullopt;
  }
  std::optional<std::string> id;
  db_.transaction([&] {
    auto pick = db_.prepare(
        "SELECT id, name FROM boxes WHERE pool = ? AND state = 'running' ORDER BY created_at "
        "LIMIT 1");
    pick.bind(1, key);
    if (!pick.step()) return;
    std::string found = pick.text(0);
    std::string name = as.name.empty() ? pick.text(1) : as.name;
    if (name != pick.text(1) && name_taken(name))
      throw Error(Errc::already_exists, "a box named '" + name + "' already exists");
    BoxSpec spec = as.spec;
    spec.name = name;
    int64_t now = now_ms();
    db_.prepare(
           "UPDATE boxes SET pool = '', name = ?, spec = ?, created_at = ?, started_at = ?, "
           "state_reason = ? WHERE id = ? AND pool = ?")
        .bind(1, name)
        .bind(2, spec_to_json(spec, Secrets::kept).dump())
        .bind(3, now)
        .bind(4, now)
        .bind(5, as.state_reason)
        .bind(6, found)
        .bind(7, key)
        .run();
    add_labels(found, spec.labels);
    add_event(found, now, "running", as.state_reason);
    id = found;
  });
  return id;
}

void BoxStore::record_usage(const UsageRow& r, uint64_t cpu_counter) {
  db_.transaction([&] {
    db_.prepare(
           "INSERT INTO usage(kind, subject, name, labels, start_at, end_at, cpu_us, running_ms, "
           "cpus_milli, memory_peak, bytes, byte_ms) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        .bind(1, r.kind)
        .bind(2, r.subject)
        .bind(3, r.name)
        .bind(4, json(r.labels).dump())
        .bind(5, r.start_at)
        .bind(6, r.end_at)
        .bind(7, r.cpu_us)
        .bind(8, r.running_ms)
        .bind(9, r.cpus_milli)
        .bind(10, r.memory_peak)
        .bind(11, r.bytes)
        .bind(12, r.byte_ms)
        .run();
    if (r.kind == "box")
      db_.prepare(
             "UPDATE boxes SET metered_at = ?, metered_cpu_us = MAX(metered_cpu_us, ?) WHERE id = "
             "?")
          .bind(1, r.end_at)
          .bind(2, cpu_counter)
          .bind(3, r.subject)
          .run();
    else
      db_.prepare("UPDATE snapshots SET metered_at = ? WHERE id = ?")
          .bind(1, r.end_at)
          .bind(2, r.subject)
          .run();
  });
}

BoxStore::Metered BoxStore::metered(const std::string& kind, const std::string& id) {
  auto s = db_.prepare(kind == "box" ? "SELECT metered_at, metered_cpu_us FROM boxes WHERE id = ?"
                                     : "SELECT metered_at, 0 FROM snapshots WHERE id = ?");
  s.bind(1, id);
  Metered m;
  if (s.step()) {
    m.at = s.i64(0);
    m.cpu_us = static_cast<uint64_t>(s.i64(1));
  }
  return m;
}

std::vector<UsageRow> BoxStore::usage_rows(int64_t since, int64_t until) {
  auto s = db_.prepare(
      "SELECT kind, subject, name, labels, start_at, end_at, cpu_us, running_ms, cpus_milli, "
      "memory_peak, bytes, byte_ms FROM usage WHERE end_at > ? AND start_at < ? ORDER BY start_at");
  s.bind(1, since).bind(2, until);
  std::vector<UsageRow> out;
  while (s.step()) {
    UsageRow r;
    r.kind = s.text(0);
    r.subject = s.text(1);
    r.name = s.text(2);
    r.labels = json::parse(s.text(3)).get<std::map<std::string, std::string>>();
    r.start_at = s.i64(4);
    r.end_at = s.i64(5);
    r.cpu_us = static_cast<uint64_t>(s.i64(6));
    r.running_ms = s.i64(7);
    r.cpus_milli = static_cast<uint64_t>(s.i64(8));
    r.memory_peak = static_cast<uint64_t>(s.i64(9));
    r.bytes = static_cast<uint64_t>(s.i64(10));
    r.byte_ms = s.f64(11);
    out.push_back(std::move(r));
  }
  return out;
}

int64_t BoxStore::running_ms(const std::string& box_id, int64_t from, int64_t to) {
  // The state in force at `from`, then every transition up to `to`.
  std::string state;
  {
    auto s = db_.prepare(
        "SELECT state FROM events WHERE box_id = ? AND at <= ? ORDER BY at DESC, rowid DESC "
        "LIMIT 1");
    s.bind(1, box_id).bind(2, from);
    if (s.step()) state = s.text(0);
  }
  int64_t total = 0, since = from;
  auto s = db_.prepare(
      "SELECT at, state FROM events WHERE box_id = ? AND at > ? AND at < ? ORDER BY at, rowid");
  s.bind(1, box_id).bind(2, from).bind(3, to);
  while (s.step()) {
    if (state == "running") total += s.i64(0) - since;
    since = s.i64(0);
    state = s.text(1);
  }
  if (state == "running") total += to - since;
  return total;
}

std::pair<size_t, uint64_t> BoxStore::snapshots_of(const std::string& box_id) {
  auto s =
      db_.prepare("SELECT COUNT(*), IFNULL(SUM(bytes), 0) FROM snapshots WHERE source_box = ?");
  s.bind(1, box_id);
  s.step();
  return {static_cast<size_t>(s.i64(0)), static_cast<uint64_t>(s.i64(1))};
}

bool BoxStore::retire_pooled(const std::string& id, const std::string& reason) {
  bool done = false;
  db_.transaction([&] {
    db_.prepare("UPDATE boxes SET state = 'removing', state_reason = ? WHERE id = ? AND pool != ''")
        .bind(1, reason)
        .bind(2, id)
        .run();
    done = db_.changes() == 1;
  });
  return done;
}

void BoxStore::set_state(const std::string& id, const std::string& state,
                         const std::string& reason) {
  db_.transaction([&] {
    db_.prepare("UPDATE boxes SET state = ?, state_reason = ? WHERE id = ?")
        .bind(1, state)
        .bind(2, reason)
        .bind(3, id)
        .run();
    add_event(id, now_ms(), state, reason);
  });
}

void BoxStore::set_owner(const std::string& id, pid_t pid, uint64_t start) {
  db_.prepare("UPDATE boxes SET owner_pid = ?, owner_start = ? WHERE id = ?")
      .bind(1, static_cast<int64_t>(pid))
      .bind(2, start)
      .bind(3, id)
      .run();
}

void BoxStore::mark_running(const std::string& id, pid_t pid, uint64_t start, uint32_t slot,
                            const std::string& gen, const std::string& reason) {
  db_.transaction([&] {
    int64_t now = now_ms();
    db_.prepare(
           "UPDATE boxes SET state = 'running', state_reason = ?, started_at = ?, init_pid = ?, "
           "init_start = ?, "
           "slot = ?, host_generation = ?, owner_pid = 0, owner_start = 0 WHERE id = ?")
        .bind(1, reason)
        .bind(2, now)
        .bind(3, static_cast<int64_t>(pid))
        .bind(4, start)
        .bind(5, static_cast<int64_t>(slot))
        .bind(6, gen)
        .bind(7, id)
        .run();
    add_event(id, now, "running", reason);
  });
}

void BoxStore::mark_stopped(const std::string& id, const std::string& reason, uint64_t cpu_us,
                            uint64_t mem_peak, uint64_t oom_kills) {
  db_.transaction([&] {
    int64_t now = now_ms();
    db_.prepare(
           "UPDATE boxes SET state = 'stopped', state_reason = ?, stopped_at = ?, init_pid = 0, "
           "init_start = 0, "
           "slot = NULL, owner_pid = 0, owner_start = 0, cpu_us_total = cpu_us_total + ?, "
           "memory_peak = MAX(memory_peak, ?), oom_kills_total = oom_kills_total + ? WHERE id = ?")
        .bind(1, reason)
        .bind(2, now)
        .bind(3, cpu_us)
        .bind(4, mem_peak)
        .bind(5, oom_kills)
        .bind(6, id)
        .run();
    add_event(id, now, "stopped", reason);
    // Whatever was still running died with the box.
    db_.prepare(
           "UPDATE execs SET state = 'lost', reason = 'box-stopped', ended_at = ? WHERE box_id = ? "
           "AND state = "
           "'running'")
        .bind(1, now)
        .bind(2, id)
        .run();
  });
}

void BoxStore::delete_box(const std::string& id) {
  db_.prepare("DELETE FROM boxes WHERE id = ?").bind(1, id).run();
}

std::vector<BoxEvent> BoxStore::events(const std::string& id, size_t limit) {
  auto s = db_.prepare(
      "SELECT at, state, reason FROM (SELECT rowid, at, state, reason FROM events WHERE box_id = ? "
      "ORDER BY rowid DESC LIMIT ?) ORDER BY rowid");
  s.bind(1, id).bind(2, static_cast<int64_t>(limit));
  std::vector<BoxEvent> out;
  while (s.step()) out.push_back({s.i64(0), s.text(1), s.text(2)});
  return out;
}

uint64_t BoxStore::next_exec_seq(const std::string& box_id) {
  uint64_t seq = 0;
  auto s = db_.prepare(
      "UPDATE boxes SET next_exec = next_exec + 1 WHERE id = ? RETURNING next_exec - 1");
  s.bind(1, box_id);
  if (!s.step()) throw Error(Errc::not_found, "no such box: " + box_id);
  seq = static_cast<uint64_t>(s.i64(0));
  s.run();
  return seq;
}

void BoxStore::insert_exec(const ExecRecord& e) {
  db_.prepare(
         "INSERT INTO execs(box_id, seq, argv, user, cwd, background, tty, state, pid, started_at) "
         "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
      .bind(1, e.box_id)
      .bind(2, e.seq)
      .bind(3, json(e.argv).dump())
      .bind(4, e.user)
      .bind(5, e.cwd)
      .bind(6, e.background)
      .bind(7, e.tty)
      .bind(8, e.state)
      .bind(9, static_cast<int64_t>(e.pid))
      .bind(10, e.started_at)
      .run();
}

void BoxStore::finish_exec(const ExecRecord& e) {
  db_.prepare(
         "UPDATE execs SET state = ?, pid = ?, ended_at = ?, exit_code = ?, signal = ?, reason = "
         "?, timed_out = ?, "
         "oom_killed = ?, cpu_us = ?, max_rss_kb = ?, stdout_bytes = ?, stderr_bytes = ?, "
         "stdout_tail = ?, "
         "stderr_tail = ?, started_at = ?, argv = ? WHERE box_id = ? AND seq = ?")
      .bind(1, e.state)
      .bind(2, static_cast<int64_t>(e.pid))
      .bind(3, e.ended_at)
      .bind(4, e.exit_code)
      .bind(5, e.signal)
      .bind(6, e.reason)
      .bind(7, e.timed_out)
      .bind(8, e.oom_killed)
      .bind(9, e.cpu_us)
      .bind(10, e.max_rss_kb)
      .bind(11, e.stdout_bytes)
      .bind(12, e.stderr_bytes)
      .bind_blob(13, e.stdout_tail)
      .bind_blob(14, e.stderr_tail)
      .bind(15, e.started_at)
      .bind(16, json(e.argv).dump())
      .bind(17, e.box_id)
      .bind(18, e.seq)
      .run();
}

ExecRecord BoxStore::read_exec(Stmt& s) {
  ExecRecord e;
  e.box_id = s.text(0);
  e.seq = static_cast<uint64_t>(s.i64(1));
  e.argv = json::parse(s.text(2)).get<std::vector<std::string>>();
  e.user = s.text(3);
  e.cwd = s.text(4);
  e.background = s.i64(5) != 0;
  e.tty = s.i64(6) != 0;
  e.state = s.text(7);
  e.pid = static_cast<pid_t>(s.i64(8));
  e.started_at = s.i64(9);
  e.ended_at = s.i64(10);
  if (auto c = s.opt_i64(11)) e.exit_code = static_cast<int>(*c);
  e.signal = static_cast<int>(s.i64(12));
  e.reason = s.text(13);
  e.timed_out = s.i64(14) != 0;
  e.oom_killed = s.i64(15) != 0;
  e.cpu_us = static_cast<uint64_t>(s.i64(16));
  e.max_rss_kb = static_cast<uint64_t>(s.i64(17));
  e.stdout_bytes = static_cast<uint64_t>(s.i64(18));
  e.stderr_bytes = static_cast<uint64_t>(s.i64(19));
  e.stdout_tail = s.blob(20);
  e.stderr_tail = s.blob(21);
  return e;
}

std::optional<ExecRecord> BoxStore::get_exec(const std::string& box_id, uint64_t seq) {
  auto s = db_.prepare(std::string("SELECT ") + kExecColumns +
                       " FROM execs WHERE box_id = ? AND seq = ?");
  s.bind(1, box_id).bind(2, seq);
  if (!s.step()) return std::nullopt;
  return read_exec(s);
}

std::vector<ExecRecord> BoxStore::list_execs(const std::string& box_id, bool running_only,
                                             size_t limit) {
  std::string sql =
      std::string("SELECT ") + kExecColumns + " FROM (SELECT * FROM execs WHERE box_id = ?";
  if (running_only) sql += " AND state = 'running'";
  sql += " ORDER BY seq DESC";
  if (limit) sql += " LIMIT " + std::to_string(limit);
  sql += ") ORDER BY seq";
  auto s = db_.prepare(sql);
  s.bind(1, box_id);
  std::vector<ExecRecord> out;
  while (s.step()) out.push_back(read_exec(s));
  return out;
}

std::vector<ExecRecord> BoxStore::running_execs() {
  auto s =
      db_.prepare(std::string("SELECT ") + kExecColumns + " FROM execs WHERE state = 'running'");
  std::vector<ExecRecord> out;
  while (s.step()) out.push_back(read_exec(s));
  return out;
}

std::vector<uint64_t> BoxStore::prune_execs(const std::string& box_id, size_t keep) {
  std::vector<uint64_t> seqs;
  auto s = db_.prepare(
      "SELECT seq FROM execs WHERE box_id = ? AND state != 'running' AND seq <= "
      "(SELECT MAX(seq) FROM execs WHERE box_id = ?) - ?");
  s.bind(1, box_id).bind(2, box_id).bind(3, static_cast<int64_t>(keep));
  while (s.step()) seqs.push_back(static_cast<uint64_t>(s.i64(0)));
  if (!seqs.empty())
    db_.prepare(
           "DELETE FROM execs WHERE box_id = ? AND state != 'running' AND seq <= "
           "(SELECT MAX(seq) FROM execs WHERE box_id = ?) - ?")
        .bind(1, box_id)
        .bind(2, box_id)
        .bind(3, static_cast<int64_t>(keep))
        .run();
  return seqs;
}

namespace {

const char* kSnapColumns =
    "id, name, kind, source_box, parent, base_image, layers, config, labels, bytes, total_bytes, "
    "created_at, ephemeral";

}  // namespace

SnapshotRecord BoxStore::read_snapshot(Stmt& s) {
  SnapshotRecord r;
  r.id = s.text(0);
  r.name = s.text(1);
  r.kind = s.text(2);
  r.source_box = s.text(3);
  r.parent = s.text(4);
  r.base_image = s.text(5);
  r.layers = json::parse(s.text(6)).get<std::vector<std::string>>();
  r.config = spec_from_json(json::parse(s.text(7)));
  r.labels = json::parse(s.text(8)).get<std::map<std::string, std::string>>();
  r.bytes = static_cast<uint64_t>(s.i64(9));
  r.total_bytes = static_cast<uint64_t>(s.i64(10));
  r.created_at = s.i64(11);
  r.ephemeral = s.i64(12) != 0;
  return r;
}

void BoxStore::insert_snapshot(const SnapshotRecord& r,
                               const std::vector<storage_layer>& new_layers) {
  db_.transaction([&] {
    if (snapshot_name_taken(r.name))
      throw Error(Errc::already_exists,
                  "a snapshot or image named '" + r.name + "' already exists");
    for (const auto& l : new_layers) insert_layer(l);
    db_.prepare(std::string("INSERT INTO snapshots(") + kSnapColumns +
                ") VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        .bind(1, r.id)
        .bind(2, r.name)
        .bind(3, r.kind)
        .bind(4, r.source_box)
        .bind(5, r.parent)
        .bind(6, r.base_image)
        .bind(7, json(r.layers).dump())
        .bind(8, spec_to_json(r.config, Secrets::kept).dump())
        .bind(9, json(r.labels).dump())
        .bind(10, static_cast<int64_t>(r.bytes))
        .bind(11, static_cast<int64_t>(r.total_bytes))
        .bind(12, r.created_at)
        .bind(13, int64_t{r.ephemeral ? 1 : 0})
        .run();
  });
}

std::optional<SnapshotRecord> BoxStore::find_snapshot(const std::string& ref) {
  if (ref.empty()) return std::nullopt;
  return find_by_ref<SnapshotRecord>("snapshots", kSnapColumns, ref, "snapshot",
                                     &BoxStore::read_snapshot);
}

SnapshotRecord BoxStore::resolve_snapshot(const std::string& ref) {
  if (ref.empty()) throw_invalid("no snapshot given");
  auto r = find_snapshot(ref);
  if (!r) throw Error(Errc::not_found, "no such snapshot or image: " + ref);
  return *r;
}

std::vector<SnapshotRecord> BoxStore::list_snapshots(const std::string& kind) {
  std::string sql = std::string("SELECT ") + kSnapColumns + " FROM snapshots";
  if (!kind.empty()) sql += " WHERE kind = ?";
  sql += " ORDER BY created_at, id";
  auto s = db_.prepare(sql);
  if (!kind.empty()) s.bind(1, kind);
  std::vector<SnapshotRecord> out;
  while (s.step()) out.push_back(read_snapshot(s));
  return out;
}

bool BoxStore::snapshot_name_taken(const std::string& name) {
  auto s = db_.prepare("SELECT 1 FROM snapshots WHERE name = ?");
  s.bind(1, name);
  return s.step();
}

void BoxStore::touch(const std::string& id, int64_t at) {
  db_.prepare("UPDATE boxes SET last_active_at = MAX(last_active_at, ?) WHERE id = ?")
      .bind(1, at)
      .bind(2, id)
      .run();
}

void BoxStore::delete_snapshot(const std::string& id) {
  db_.prepare("DELETE FROM snapshots WHERE id = ?").bind(1, id).run();
}

std::vector<std::string> BoxStore::boxes_using(const std::string& snapshot_name) {
  auto s = db_.prepare("SELECT id FROM boxes WHERE json_extract(spec, '$.image') = ?");
  s.bind(1, snapshot_name);
  std::vector<std::string> out;
  while (s.step()) out.push_back(s.text(0));
  return out;
}

std::set<std::string> BoxStore::referenced_layers() {
  std::set<std::string> out;
  auto s = db_.prepare("SELECT layers FROM snapshots");
  while (s.step())
    for (const auto& d : json::parse(s.text(0))) out.insert(d.get<std::string>());
  auto a = db_.prepare("SELECT archive_layer FROM boxes WHERE archive_layer != ''");
  while (a.step()) out.insert(a.text(0));
  return out;
}

void BoxStore::set_archived(const std::string& id, const std::string& layer,
                            const std::string& state, const std::string& reason) {
  db_.transaction([&] {
    db_.prepare("UPDATE boxes SET archive_layer = ?, state = ?, state_reason = ? WHERE id = ?")
        .bind(1, layer)
        .bind(2, state)
        .bind(3, reason)
        .bind(4, id)
        .run();
    add_event(id, now_ms(), state, reason);
  });
}

void BoxStore::insert_layer(const storage_layer& l) {
  db_.prepare(
         "INSERT INTO layers(digest, bytes, files, created_at) VALUES(?, ?, ?, ?) ON "
         "CONFLICT(digest) DO NOTHING")
      .bind(1, l.digest)
      .bind(2, static_cast<int64_t>(l.bytes))
      .bind(3, static_cast<int64_t>(l.files))
      .bind(4, now_ms())
      .run();
}

void BoxStore::delete_layer(const std::string& digest) {
  db_.prepare("DELETE FROM layers WHERE digest = ?").bind(1, digest).run();
}

std::optional<storage_layer> BoxStore::find_layer(const std::string& digest) {
  auto s = db_.prepare("SELECT digest, bytes, files FROM layers WHERE digest = ?");
  s.bind(1, digest);
  if (!s.step()) return std::nullopt;
  return storage_layer{s.text(0), static_cast<uint64_t>(s.i64(1)), static_cast<uint64_t>(s.i64(2))};
}

}  // namespace upstream::store
