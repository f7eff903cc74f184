// A thin RAII wrapper over SQLite: one connection, prepared statements, transactions that roll
// back on exceptions. WAL mode, so readers never block the writer; a busy timeout, so concurrent
// CLI processes and the server queue instead of failing.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace upstream::store {

class Stmt {
 public:
  Stmt(sqlite3* db, const std::string& sql);
  Stmt(Stmt&& o) noexcept;
  Stmt(const Stmt&) = delete;
  ~Stmt();

  Stmt& bind(int i, const std::string& v);
  Stmt& bind(int i, const char* v) { return bind(i, std::string(v)); }
  Stmt& bind(int i, int64_t v);
  Stmt& bind(int i, int v) { return bind(i, static_cast<int64_t>(v)); }
  Stmt& bind(int i, uint64_t v) { return bind(i, static_cast<int64_t>(v)); }
  Stmt& bind(int i, bool v) { return bind(i, static_cast<int64_t>(v)); }
  Stmt& bind(int i, double v);
  Stmt& bind_null(int i);
  Stmt& bind_blob(int i, const std::string& v);
  template <typename T>
  Stmt& bind(int i, const std::optional<T>& v) {
    return v ? bind(i, *v) : bind_null(i);
  }

  bool step();  // true while there is a row
  void run();   // step to completion
  std::string text(int col) const;
  int64_t i64(int col) const;
  double f64(int col) const;
  std::optional<int64_t> opt_i64(int col) const;
  bool is_null(int col) const;
  std::string blob(int col) const;
  void reset();

 private:
  sqlite3* db_;
  sqlite3_stmt* st_ = nullptr;
};

class Db {
 public:
  static Db open(const std::string& path);
  Db(Db&& o) noexcept;
  Db(const Db&) = delete;
  ~Db();

  void exec(const std::string& sql);
  Stmt prepare(const std::string& sql) { return Stmt(db_, sql); }
  int64_t changes() const { return sqlite3_changes64(db_); }
  // BEGIN IMMEDIATE; f(); COMMIT - or ROLLBACK if f throws.
  void transaction(const std::function<void()>& f);
  sqlite3* raw() { return db_; }

 private:
  explicit Db(sqlite3* db) : db_(db) {}
  sqlite3* db_;
};

}  // namespace upstream::store
