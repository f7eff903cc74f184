// API keys and tenants. A key is shown once, when it is created; the database keeps only a
// SHA-256 of its secret (keys are 256 random bits, so a fast hash is enough to make a stolen
// database useless for authenticating). A key belongs to a tenant; a tenant has limits.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "store/db.h"

namespace upstream::server {

struct TenantLimits {
  std::optional<uint64_t> max_boxes;
  std::optional<uint64_t> max_execs;  // concurrent execs
};

struct ApiKey {
  std::string id;  // public part, shown by `keys ls`
  std::string tenant;
  std::string name;
  int64_t created_at = 0;
  int64_t revoked_at = 0;
  int64_t last_used_at = 0;
};

struct Tenant {
  std::string name;
  TenantLimits limits;
};

class KeyStore {
 public:
  explicit KeyStore(store::Db& db);

  // Returns the new key's record and its full secret text ("up_<id>_<secret>"). An empty tenant
  // makes an operator key: it acts for the installation (every box, /metrics).
  std::pair<ApiKey, std::string> create(const std::string& tenant, const std::string& name);
  std::vector<ApiKey> list(bool include_revoked);
  // Revokes by id; throws not_found.
  ApiKey revoke(const std::string& id);
  // The key a bearer token stands for, if it is valid and not revoked.
  std::optional<ApiKey> authenticate(const std::string& token);
  // True when at least one key is active: the server then demands one on every request.
  bool any_active();

  void set_limits(const std::string& tenant, const TenantLimits& limits);
  Tenant tenant(const std::string& name);

 private:
  store::Db& db_;
};

// Tenant names: 1-64 of [a-z0-9.-], starting with a letter or digit.
void validate_tenant_name(const std::string& name);

}  // namespace upstream::server
