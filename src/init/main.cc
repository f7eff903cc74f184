// upstream-init: PID 1 of every box (and, with "fileop", the box's file worker).
//
// Started by the engine as a clone in fresh mount, pid, uts, ipc, net and cgroup namespaces, with
// descriptor 3 a control socket to the engine and descriptor 4 the box's user namespace. It reads
// its configuration from descriptor 3, builds the box, answers "ready", and then serves the
// box's control socket until the box is stopped.
#include <unistd.h>

#include <cstring>

#include "common/error.h"
#include "common/ipc.h"
#include "common/time.h"
#include "init/config.h"
#include "init/fileworker.h"
#include "init/setup.h"
#include "init/supervisor.h"

using namespace upstream;

namespace {

constexpr int kEngineFd = 3;
constexpr int kUsernsFd = 4;

void report_failure(const std::exception& e) {
  nlohmann::json j = {{"ok", false}, {"error", e.what()}};
  if (auto* err = dynamic_cast<const Error*>(&e)) {
    j["kind"] = errc_name(err->code());
    j["errno"] = err->sys_errno();
  }
  try {
    ipc::send(kEngineFd, j);
  } catch (...) {
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "fileop") == 0) return init::fileworker_main();

  initproto::Config cfg;
  init::BoxHandles handles;
  try {
    // Where start-up time goes, reported with "ready" (microseconds since exec).
    int64_t t0 = mono_us();
    nlohmann::json timings = nlohmann::json::object();
    auto mark = [&](const char* phase) { timings[phase] = mono_us() - t0; };
    auto msg = ipc::recv(kEngineFd);
    if (!msg) return 1;
    mark("config");
    cfg = init::parse_config(msg->body);
    handles = init::prepare_host_handles(cfg);
    mark("handles");
    if (cfg.wait_network) {
      ipc::send(kEngineFd, {{"phase", "namespaces"}});
      auto go = ipc::recv(kEngineFd);
      if (!go || !go->body.value("go", false)) return 1;
      mark("network");
    }
    init::build_root(cfg, kUsernsFd, mark);
    init::become_box_root(cfg, kUsernsFd, mark);
    ::close(kUsernsFd);
    ipc::send(kEngineFd, {{"ok", true}, {"timings_us", timings}});
    ::close(kEngineFd);
  } catch (const std::exception& e) {
    report_failure(e);
    return 1;
  }
  try {
    return init::run_supervisor(cfg, std::move(handles));
  } catch (const std::exception&) {
    return 70;
  }
}
