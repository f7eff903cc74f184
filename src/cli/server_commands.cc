// `upstream serve` and `upstream keys`.
#include <sys/stat.h>

#include <iostream>

#include "cli/cli.h"
#include "common/error.h"
#include "common/strings.h"
#include "common/time.h"
#include "server/api.h"
#include "server/keys.h"
#include "server/server.h"
#include "store/db.h"

namespace upstream::cli {

using nlohmann::json;

namespace {

store::Db open_keys_db(Context& ctx) {
  return store::Db::open(ctx.engine().options().home + "/upstream.db");
}

json key_json(const server::ApiKey& k) {
  return {{"id", k.id},
          {"tenant", k.tenant},
          {"name", k.name},
          {"created_at", format_time(k.created_at)},
          {"revoked_at", format_time(k.revoked_at)},
          {"last_used_at", format_time(k.last_used_at)}};
}

uint64_t parse_count(const std::string& text, const char* what) {
  std::string t = trim(text);
  if (t.empty() || t.size() > 9 || t.find_first_not_of("0123456789") != std::string::npos)
    throw_invalid(std::string("invalid ") + what + " '" + text + "': expected a whole number");
  return std::stoull(t);
}

}  // namespace

namespace {

void add_serve_command(CLI::App& app, Context& ctx) {
  auto* c =
      app.add_subcommand("serve", "Serve the HTTP API (boxes, execs, files) to SDKs and agents");
  auto o = std::make_shared<server::ServeOptions>();
  auto a = std::make_shared<server::ApiOptions>();
  auto max_body = std::make_shared<std::string>("1m");
  auto max_upload = std::make_shared<std::string>("1g");
  auto max_boxes = std::make_shared<std::string>();
  auto max_execs = std::make_shared<std::string>();
  auto no_log = std::make_shared<bool>(false);
  c->add_option("--listen", o->listen,
                "TCP address HOST:PORT (default 127.0.0.1:8420; \"\" for none)");
  c->add_option("--socket", o->socket, "Also listen on this unix socket");
  c->add_option("--max-body", *max_body, "Largest JSON request body (default 1m)");
  c->add_option("--max-upload", *max_upload, "Largest file or archive upload (default 1g)");
  c->add_option("--max-boxes", *max_boxes, "Boxes per tenant, for tenants without their own limit");
  c->add_option("--max-execs", *max_execs,
                "Concurrent execs per tenant, for tenants without their own limit");
  c->add_option("--idle-timeout", o->idle_timeout_s, "Seconds a keep-alive connection may idle");
  c->add_option("--header-timeout", o->header_timeout_s,
                "Seconds a client has to send a request's headers once it began");
  c->add_flag("--no-access-log", *no_log, "Do not log requests on stderr");
  c->add_option("--host-name", a->guard.host_names,
                "A name clients reach the server by (repeatable; \"*.example.com\" for every "
                "name below it). Requests for other names are refused: addresses, localhost "
                "and these only");
  c->add_option("--allow-origin", a->guard.allowed_origins,
                "A web origin whose pages may call the API (repeatable), such as "
                "https://app.example.com; other sites' pages are refused");
  auto policy_every = std::make_shared<std::string>("5s");
  c->add_option("--policy-interval", *policy_every,
                "How often boxes' idle policies are applied (default 5s; 0 for never)");
  auto meter_every = std::make_shared<std::string>("5m");
  c->add_option("--meter-interval", *meter_every,
                "How often usage is metered for `upstream usage` (default 5m; 0: only when boxes "
                "and snapshots are removed)");
  c->callback(
      [&ctx, o, a, max_body, max_upload, max_boxes, max_execs, no_log, policy_every, meter_every] {
        o->policy_interval_ms =
            *policy_every == "0"
                ? 0
                : static_cast<int64_t>(parse_duration_ms(*policy_every, "--policy-interval"));
        o->meter_interval_ms =
            *meter_every == "0"
                ? 0
                : static_cast<int64_t>(parse_duration_ms(*meter_every, "--meter-interval"));
        a->max_body = parse_size(*max_body, "--max-body");
        a->max_upload = parse_size(*max_upload, "--max-upload");
        if (!max_boxes->empty()) a->default_max_boxes = parse_count(*max_boxes, "--max-boxes");
        if (!max_execs->empty()) a->default_max_execs = parse_count(*max_execs, "--max-execs");
        o->access_log = !*no_log;
        if (o->listen.empty() && o->socket.empty())
          throw_invalid("nothing to listen on: give --listen HOST:PORT or --socket PATH");
        std::string host;
        if (!o->listen.empty()) host = server::parse_listen(o->listen).first;
        Engine& engine = ctx.engine();
        store::Db db = open_keys_db(ctx);
        server::Api api(engine, db, *a);
        bool keys = api.auth_required();
        if (!keys && !host.empty() && !server::is_loopback(host))
          throw Error(Errc::failed_precondition,
                      "no API keys exist, so the server would be open to anyone on " + o->listen +
                          "; create one with `upstream keys create --tenant NAME`, or listen on "
                          "127.0.0.1");
        o->spool_dir = engine.options().home + "/spool";
        ::mkdir(o->spool_dir.c_str(), 0700);
        server::serve(api, *o, [&](uint16_t port) {
          std::string where;
          if (!o->listen.empty())
            where = "http://" + (host.find(':') != std::string::npos ? "[" + host + "]" : host) +
                    ":" + std::to_string(port);
          if (!o->socket.empty()) where += (where.empty() ? "" : " and ") + ("unix:" + o->socket);
          std::cerr << "upstream: serving the API on " << where
                    << (keys ? " (API keys required)"
                             : " without authentication, on loopback only (no API keys exist)")
                    << std::endl;
        });
      });
}

void add_keys_create_command(CLI::App* keys, Context& ctx) {
  auto* c = keys->add_subcommand("create", "Create an API key for a tenant; prints it once");
  auto tenant = std::make_shared<std::string>();
  auto name = std::make_shared<std::string>();
  auto max_boxes = std::make_shared<std::string>();
  auto max_execs = std::make_shared<std::string>();
  auto operator_key = std::make_shared<bool>(false);
  auto* tenant_opt =
      c->add_option("--tenant", *tenant, "Tenant the key acts for (its boxes are the tenant's)");
  c->add_flag("--operator", *operator_key,
              "A key for the operator: every tenant's boxes, and /metrics")
      ->excludes(tenant_opt);
  c->add_option("--name", *name, "A note to tell keys apart");
  c->add_option("--max-boxes", *max_boxes, "Set the tenant's limit of boxes");
  c->add_option("--max-execs", *max_execs, "Set the tenant's limit of concurrent execs");
  c->callback([&ctx, tenant, name, max_boxes, max_execs, operator_key] {
    if (!*operator_key && tenant->empty())
      throw_invalid("keys create needs --tenant NAME (or --operator for an operator key)");
    if (*operator_key && (!max_boxes->empty() || !max_execs->empty()))
      throw_invalid("--max-boxes and --max-execs are tenants' limits, not an operator key's");
    server::TenantLimits limits;
    if (!max_boxes->empty()) limits.max_boxes = parse_count(*max_boxes, "--max-boxes");
    if (!max_execs->empty()) limits.max_execs = parse_count(*max_execs, "--max-execs");
    if (!*operator_key) server::validate_tenant_name(*tenant);
    store::Db db = open_keys_db(ctx);
    server::KeyStore ks(db);
    auto [key, secret] = ks.create(*tenant, *name);
    if (limits.max_boxes || limits.max_execs) ks.set_limits(*tenant, limits);
    if (ctx.json) {
      json j = key_json(key);
      j["key"] = secret;
      print_json(j);
    } else {
      std::cout << secret << std::endl;
      std::cerr << "upstream: key " << key.id
                << (key.tenant.empty() ? std::string(" for the operator")
                                       : " for tenant " + key.tenant)
                << " created; it is shown only now" << std::endl;
    }
  });
}

void add_keys_ls_command(CLI::App* keys, Context& ctx) {
  auto* c = keys->add_subcommand("ls", "List API keys (never their secrets)")->alias("list");
  auto all = std::make_shared<bool>(false);
  c->add_flag("--all,-a", *all, "Include revoked keys");
  c->callback([&ctx, all] {
    store::Db db = open_keys_db(ctx);
    server::KeyStore ks(db);
    auto list = ks.list(*all);
    if (ctx.json) {
      json arr = json::array();
      for (const auto& k : list) arr.push_back(key_json(k));
      print_json(arr);
      return;
    }
    std::vector<std::vector<std::string>> rows;
    int64_t now = now_ms();
    for (const auto& k : list) {
      server::Tenant t = ks.tenant(k.tenant);
      std::string limits;
      if (t.limits.max_boxes) limits += "boxes=" + std::to_string(*t.limits.max_boxes);
      if (t.limits.max_execs)
        limits += (limits.empty() ? "" : " ") + std::string("execs=") +
                  std::to_string(*t.limits.max_execs);
      rows.push_back({k.id, k.tenant.empty() ? "(operator)" : k.tenant, k.name,
                      format_ago(k.created_at, now),
                      k.last_used_at ? format_ago(k.last_used_at, now) : "never",
                      k.revoked_at ? "revoked" : "active", limits.empty() ? "-" : limits});
    }
    print_table({"ID", "TENANT", "NAME", "CREATED", "LAST USED", "STATE", "TENANT LIMITS"}, rows);
  });
}

void add_keys_revoke_command(CLI::App* keys, Context& ctx) {
  auto* c = keys->add_subcommand("revoke", "Revoke API keys: they stop working at once");
  auto ids = std::make_shared<std::vector<std::string>>();
  c->add_option("id", *ids, "Key ids (see `upstream keys ls`)")->required();
  c->callback([&ctx, ids] {
    store::Db db = open_keys_db(ctx);
    server::KeyStore ks(db);
    for (const auto& id : *ids) {
      auto k = ks.revoke(id);
      std::cout << k.id << std::endl;
    }
  });
}

}  // namespace

void add_server_commands(CLI::App& app, Context& ctx) {
  add_serve_command(app, ctx);

  CLI::App* keys = app.add_subcommand("keys", "API keys of the HTTP API")->require_subcommand(1);
  add_keys_create_command(keys, ctx);
  add_keys_ls_command(keys, ctx);
  add_keys_revoke_command(keys, ctx);
}

}  // namespace upstream::cli
