// Applying an nftables ruleset: in-process through libnftables when the host has it (the same
// library `nft` itself is a thin front for), else by running `nft -f -`.
//
// upstream is linked statically, so libnftables is loaded with dlopen: glibc supports that from a
// static program (the loaded library gets its own libc, which never touches the program's heap;
// it is how NSS modules work in static programs). Its C API has been stable since nftables 0.9;
// the few calls used are declared here, so building needs no libnftables headers.

#include <dlfcn.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <sys/socket.h>

#include <cstdlib>
#include <mutex>

#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/proc.h"
#include "common/strings.h"
#include "runtime/net.h"

namespace upstream::runtime {

namespace {

struct nft_ctx;

struct Libnftables {
  nft_ctx* (*ctx_new)(uint32_t flags) = nullptr;
  void (*ctx_free)(nft_ctx*) = nullptr;
  int (*buffer_output)(nft_ctx*) = nullptr;
  int (*buffer_error)(nft_ctx*) = nullptr;
  const char* (*error_buffer)(nft_ctx*) = nullptr;
  const char* (*output_buffer)(nft_ctx*) = nullptr;
  int (*run_buffer)(nft_ctx*, const char*) = nullptr;
  bool loaded = false;
  std::mutex mu;  // one transaction at a time through the library, on one context
  // Made on first use and kept: closing its netlink socket costs the kernel ~15 ms (nft itself
  // pays that on every run), so a long-lived process pays it once, at exit.
  nft_ctx* ctx = nullptr;
  bool marked = false;  // its socket made close-on-exec
};

template <typename F>
bool bind(void* handle, const char* name, F& fn) {
  fn = reinterpret_cast<F>(::dlsym(handle, name));
  return fn != nullptr;
}

Libnftables& libnftables() {
  static Libnftables* lib = [] {
    auto* l = new Libnftables;
    const char* mode = std::getenv("UPSTREAM_NFT");
    if (mode && std::string(mode) == "exec") return l;
    void* h = ::dlopen("libnftables.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      if (log_enabled(LogLevel::debug))
        log(LogLevel::debug, std::string("libnftables not loaded (") + ::dlerror() +
                                 "); rulesets go through nft -f");
      return l;
    }
    l->loaded = bind(h, "nft_ctx_new", l->ctx_new) && bind(h, "nft_ctx_free", l->ctx_free) &&
                bind(h, "nft_ctx_buffer_output", l->buffer_output) &&
                bind(h, "nft_ctx_buffer_error", l->buffer_error) &&
                bind(h, "nft_ctx_get_error_buffer", l->error_buffer) &&
                bind(h, "nft_ctx_get_output_buffer", l->output_buffer) &&
                bind(h, "nft_run_cmd_from_buffer", l->run_buffer);
    if (!l->loaded)
      log(LogLevel::warning, "libnftables lacks a call upstream uses; rulesets go through nft -f");
    return l;
  }();
  return *lib;
}

// libnftables opens its netlink socket without SOCK_CLOEXEC; the tools upstream runs later must
// not inherit it (the box init never does: it closes every descriptor it was not given).
void cloexec_netfilter_sockets() {
  for (const auto& e : Dir("/proc/self/fd").entries()) {
    int fd = std::atoi(e.name.c_str());
    if (fd <= 2) continue;
    int flags = ::fcntl(fd, F_GETFD);
    int domain = 0, protocol = 0;
    socklen_t len = sizeof domain;
    if (flags < 0 || (flags & FD_CLOEXEC)) continue;
    if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 || domain != AF_NETLINK)
      continue;
    len = sizeof protocol;
    if (::getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) == 0 &&
        protocol == NETLINK_NETFILTER)
      ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
  }
}

}  // namespace

bool nft_in_process() { return libnftables().loaded; }

void apply_nft(const std::string& ruleset) {
  Libnftables& lib = libnftables();
  if (!lib.loaded) {
    run_tool({"nft", "-f", "-"}, ruleset);
    return;
  }
  std::lock_guard lock(lib.mu);
  if (!lib.ctx) {
    lib.ctx = lib.ctx_new(0);
    if (!lib.ctx) throw Error(Errc::unavailable, "nft: libnftables could not make a context");
    // Output (e.g. echoed handles) and errors go to buffers, not to our stdout and stderr.
    lib.buffer_output(lib.ctx);
    lib.buffer_error(lib.ctx);
  }
  int rc = lib.run_buffer(lib.ctx, ruleset.c_str());
  if (!lib.marked) {
    cloexec_netfilter_sockets();
    lib.marked = true;
  }
  // Reading a buffer also rewinds it for the next command, so both are read every time.
  lib.output_buffer(lib.ctx);
  const char* err = lib.error_buffer(lib.ctx);
  if (rc != 0) {
    std::string msg = err ? trim(err) : "";
    throw Error(Errc::unavailable, "nft -f - failed" + (msg.empty() ? "" : ": " + msg));
  }
}

}  // namespace upstream::runtime
