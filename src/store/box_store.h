// Persistent state: boxes, their labels and state transitions, and the execs run in them.
#pragma once

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "model/box.h"
#include "store/db.h"

namespace upstream::store {

// A layer's row: what the layer store holds under its digest.
struct storage_layer {
  std::string digest;
  uint64_t bytes = 0;
  uint64_t files = 0;
};

struct BoxFilter {
  std::map<std::string, std::string> labels;  // all must match
  std::string state;                          // empty: any
  size_t limit = 0;                           // 0: no limit
  std::string after_id;                       // pagination: ids greater than this
  enum class Pooled { any, exclude, only };
  Pooled pooled = Pooled::any;  // boxes waiting in the warm pool belong to nobody yet
};

class BoxStore {
 public:
  explicit BoxStore(Db& db) : db_(db) {}

  void migrate();
  std::string meta(const std::string& key, const std::string& fallback = "");
  void set_meta(const std::string& key, const std::string& value);

  void insert_box(const BoxRecord& b);
  // By id, unique id prefix (4+ characters) or name. Throws not_found / invalid_argument.
  BoxRecord resolve(const std::string& ref);
  std::optional<BoxRecord> find_id(const std::string& id);
  std::vector<BoxRecord> list(const BoxFilter& f = {});
  bool name_taken(const std::string& name);

  // Metering. Records a row and moves the subject's metered mark to its end (and, for a box, its
  // metered CPU counter), in one transaction.
  void record_usage(const UsageRow& r, uint64_t cpu_counter);
  struct Metered {
    int64_t at = 0;
    uint64_t cpu_us = 0;
  };
  Metered metered(const std::string& kind, const std::string& id);
  // Rows that overlap [since, until).
  std::vector<UsageRow> usage_rows(int64_t since, int64_t until);
  // Milliseconds a box spent running within [from, to), from its recorded transitions.
  int64_t running_ms(const std::string& box_id, int64_t from, int64_t to);
  // Snapshots taken of a box that still exist: their count and own bytes.
  std::pair<size_t, uint64_t> snapshots_of(const std::string& box_id);

  // Warm pool. Hands the oldest running box of a shape to `as` (its name, spec and labels), in
  // one transaction; nullopt when the pool has none. A taken name throws already_exists.
  std::optional<std::string> claim_pooled(const std::string& key, const BoxRecord& as);
  // Marks a pooled box `removing`, unless it was handed out meanwhile. True if it was marked.
  bool retire_pooled(const std::string& id, const std::string& reason);

  // Records a transition with its reason; `extra` columns are set in the same statement.
  void set_state(const std::string& id, const std::string& state, const std::string& reason);
  void set_owner(const std::string& id, pid_t pid, uint64_t start);
  void mark_running(const std::string& id, pid_t pid, uint64_t start, uint32_t slot,
                    const std::string& gen, const std::string& reason);
  void mark_stopped(const std::string& id, const std::string& reason, uint64_t cpu_us,
                    uint64_t mem_peak, uint64_t oom_kills);
  void delete_box(const std::string& id);
  // Replaces a box's spec (its name and labels are not changed this way).
  void update_spec(const std::string& id, const BoxSpec& spec);
  // Records activity (a file call, CPU use) at `at` ms. Execs need no call: a box's last
  // activity also reads its latest exec that started.
  void touch(const std::string& id, int64_t at);
  // Sets (or clears) the layer of an archived box together with its new state.
  void set_archived(const std::string& id, const std::string& layer, const std::string& state,
                    const std::string& reason);
  std::vector<BoxEvent> events(const std::string& id, size_t limit = 50);

  uint64_t next_exec_seq(const std::string& box_id);
  void insert_exec(const ExecRecord& e);
  void finish_exec(const ExecRecord& e);
  std::optional<ExecRecord> get_exec(const std::string& box_id, uint64_t seq);
  std::vector<ExecRecord> list_execs(const std::string& box_id, bool running_only, size_t limit);
  std::vector<ExecRecord> running_execs();
  // Deletes exec records (and returns their seqs) beyond the newest `keep` of a box.
  std::vector<uint64_t> prune_execs(const std::string& box_id, size_t keep);

  // Snapshots (and images) by id, unique id prefix or name; not_found names the reference.
  void insert_snapshot(const SnapshotRecord& s, const std::vector<storage_layer>& new_layers);
  std::optional<SnapshotRecord> find_snapshot(const std::string& ref);
  SnapshotRecord resolve_snapshot(const std::string& ref);
  std::vector<SnapshotRecord> list_snapshots(const std::string& kind = "");
  bool snapshot_name_taken(const std::string& name);
  void delete_snapshot(const std::string& id);
  // Boxes whose image is this snapshot (by name), in any state.
  std::vector<std::string> boxes_using(const std::string& snapshot_name);
  // Digests some snapshot lists.
  std::set<std::string> referenced_layers();
  void delete_layer(const std::string& digest);
  void insert_layer(const storage_layer& l);
  std::optional<storage_layer> find_layer(const std::string& digest);

 private:
  void add_labels(const std::string& id, const std::map<std::string, std::string>& labels);
  void add_event(const std::string& id, int64_t at, const std::string& state,
                 const std::string& reason);
  BoxRecord read_box(Stmt& s);
  ExecRecord read_exec(Stmt& s);
  SnapshotRecord read_snapshot(Stmt& s);
  template <typename R>
  std::optional<R> find_by_ref(const char* table, const char* columns, const std::string& ref,
                               const char* what, R (BoxStore::*read)(Stmt&));
  Db& db_;
};

}  // namespace upstream::store
