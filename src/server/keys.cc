#include "server/keys.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "common/digest.h"
#include "common/error.h"
#include "common/strings.h"
#include "common/time.h"

namespace upstream::server {

namespace {

const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS api_keys(
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  name TEXT NOT NULL DEFAULT '',
  hash TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  revoked_at INTEGER NOT NULL DEFAULT 0,
  last_used_at INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tenants(
  name TEXT PRIMARY KEY,
  max_boxes INTEGER,
  max_execs INTEGER
);
)sql";

ApiKey read_key(store::Stmt& s) {
  ApiKey k;
  k.id = s.text(0);
  k.tenant = s.text(1);
  k.name = s.text(2);
  k.created_at = s.i64(3);
  k.revoked_at = s.i64(4);
  k.last_used_at = s.i64(5);
  return k;
}

const char* kKeyColumns = "id, tenant, name, created_at, revoked_at, last_used_at";

}  // namespace

void validate_tenant_name(const std::string& name) {
  if (name.empty() || name.size() > 64)
    throw_invalid("tenant name must be 1 to 64 characters, got '" + name + "'");
  for (size_t i = 0; i < name.size(); i++) {
    char c = name[i];
    // No '_': it separates the tenant from the name of its sessions in the context store.
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && (c == '.' || c == '-'));
    if (!ok)
      throw_invalid("tenant name '" + name +
                    "' may hold only a-z, 0-9, '.' and '-' (starting with a letter or digit)");
  }
}

KeyStore::KeyStore(store::Db& db) : db_(db) { db_.exec(kSchema); }

std::pair<ApiKey, std::string> KeyStore::create(const std::string& tenant,
                                                const std::string& name) {
  if (!tenant.empty()) validate_tenant_name(tenant);
  if (name.size() > 200) throw_invalid("key name is longer than 200 characters");
  ApiKey k;
  k.id = random_hex(12);
  k.tenant = tenant;
  k.name = name;
  k.created_at = now_ms();
  std::string secret = random_hex(64);
  db_.transaction([&] {
    db_.prepare("INSERT INTO api_keys(id, tenant, name, hash, created_at) VALUES(?,?,?,?,?)")
        .bind(1, k.id)
        .bind(2, k.tenant)
        .bind(3, k.name)
        .bind(4, sha256_hex(secret))
        .bind(5, k.created_at)
        .run();
    db_.prepare("INSERT OR IGNORE INTO tenants(name) VALUES(?)").bind(1, tenant).run();
  });
  return {k, "up_" + k.id + "_" + secret};
}

std::vector<ApiKey> KeyStore::list(bool include_revoked) {
  std::string sql = std::string("SELECT ") + kKeyColumns + " FROM api_keys" +
                    (include_revoked ? "" : " WHERE revoked_at = 0") + " ORDER BY created_at, id";
  auto s = db_.prepare(sql);
  std::vector<ApiKey> out;
  while (s.step()) out.push_back(read_key(s));
  return out;
}

ApiKey KeyStore::revoke(const std::string& id) {
  std::optional<ApiKey> found;
  db_.transaction([&] {
    auto s = db_.prepare(std::string("SELECT ") + kKeyColumns + " FROM api_keys WHERE id = ?");
    s.bind(1, id);
    if (!s.step()) return;
    found = read_key(s);
    if (found->revoked_at == 0) {
      found->revoked_at = now_ms();
      db_.prepare("UPDATE api_keys SET revoked_at = ? WHERE id = ?")
          .bind(1, found->revoked_at)
          .bind(2, id)
          .run();
    }
  });
  if (!found) throw Error(Errc::not_found, "no such API key: " + id);
  return *found;
}

std::optional<ApiKey> KeyStore::authenticate(const std::string& token) {
  // up_<12 hex id>_<64 hex secret>
  if (token.size() != 3 + 12 + 1 + 64 || token.compare(0, 3, "up_") != 0 || token[15] != '_')
    return std::nullopt;
  std::string id = token.substr(3, 12), secret = token.substr(16);
  auto s = db_.prepare(std::string("SELECT ") + kKeyColumns +
                       ", hash FROM api_keys WHERE id = ? AND revoked_at = 0");
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  ApiKey k = read_key(s);
  std::string want = s.text(6), got = sha256_hex(secret);
  if (want.size() != got.size() || CRYPTO_memcmp(want.data(), got.data(), want.size()) != 0)
    return std::nullopt;
  int64_t now = now_ms();
  if (now - k.last_used_at > 60000) {  // at most one write a minute per key
    try {
      db_.prepare("UPDATE api_keys SET last_used_at = ? WHERE id = ?")
          .bind(1, now)
          .bind(2, id)
          .run();
    } catch (const Error&) {
      // a busy database must not fail the request over a statistic
    }
    k.last_used_at = now;
  }
  return k;
}

bool KeyStore::any_active() {
  auto s = db_.prepare("SELECT 1 FROM api_keys WHERE revoked_at = 0 LIMIT 1");
  return s.step();
}

void KeyStore::set_limits(const std::string& tenant, const TenantLimits& limits) {
  validate_tenant_name(tenant);
  db_.transaction([&] {
    db_.prepare("INSERT OR IGNORE INTO tenants(name) VALUES(?)").bind(1, tenant).run();
    if (limits.max_boxes)
      db_.prepare("UPDATE tenants SET max_boxes = ? WHERE name = ?")
          .bind(1, *limits.max_boxes)
          .bind(2, tenant)
          .run();
    if (limits.max_execs)
      db_.prepare("UPDATE tenants SET max_execs = ? WHERE name = ?")
          .bind(1, *limits.max_execs)
          .bind(2, tenant)
          .run();
  });
}

Tenant KeyStore::tenant(const std::string& name) {
  Tenant t;
  t.name = name;
  auto s = db_.prepare("SELECT max_boxes, max_execs FROM tenants WHERE name = ?");
  s.bind(1, name);
  if (s.step()) {
    if (auto v = s.opt_i64(0)) t.limits.max_boxes = static_cast<uint64_t>(*v);
    if (auto v = s.opt_i64(1)) t.limits.max_execs = static_cast<uint64_t>(*v);
  }
  return t;
}

}  // namespace upstream::server
