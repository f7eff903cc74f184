// What a tenant may name and take (tenants.cc): its rules (its overrides, the configuration's,
// the host's defaults), the images it may name, the ceilings its boxes stay within, the bases an
// import may sit on. An empty tenant is the operator: no checks. The caller serialises calls
// with the store's other users (the engine's mutex).
#pragma once

#include <map>
#include <string>

#include "engine/engine.h"
#include "storage/pool.h"
#include "store/box_store.h"

namespace upstream {

class TenantPolicy {
 public:
  // all: the configuration's rules for every tenant; each: per-tenant overrides.
  TenantPolicy(TenantRules all, std::map<std::string, TenantRules> each, const storage::Pool& pool,
               store::BoxStore& store);

  TenantRules rules(const std::string& tenant) const;
  // Whether it may name an image (throws not_found or permission_denied).
  void check_image(const std::string& tenant, const std::string& image);
  // Whether a box of `spec` (or `adding` of them) stays within its ceilings, or, with
  // `starting`, whether that box may start again (throws permission_denied or
  // resource_exhausted).
  void check_limits(const std::string& tenant, const BoxSpec& spec, size_t adding,
                    const std::string& starting = "");
  // Whether an import may sit on `base` (a tenant's: as an image it names; the operator's: host
  // or published).
  void check_import_base(const std::string& tenant, const std::string& base);

 private:
  TenantRules all_;
  std::map<std::string, TenantRules> each_;
  const storage::Pool& pool_;
  store::BoxStore& store_;
};

}  // namespace upstream
