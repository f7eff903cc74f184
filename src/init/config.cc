#include "init/config.h"

#include "common/error.h"
#include "common/strings.h"

namespace upstream::init {

initproto::Config parse_config(const nlohmann::json& j) {
  initproto::Config c;
  try {
    j.at("box_id").get_to(c.box_id);
    j.at("hostname").get_to(c.hostname);
    j.at("uid_base").get_to(c.uid_base);
    c.uid_count = j.value("uid_count", 65536u);
    j.at("rootfs").get_to(c.rootfs);
    j.at("volume_fs").get_to(c.volume_fs);
    j.at("overlays").get_to(c.overlays);
    j.at("socket_path").get_to(c.socket_path);
    c.cgroup_dir = j.value("cgroup_dir", std::string());
    auto bpf = base64_decode(j.at("seccomp").get<std::string>());
    if (!bpf) throw Error("config: seccomp filter is not valid base64");
    c.seccomp_bpf = *bpf;
    j.at("caps").get_to(c.caps);
    j.at("rlimits").get_to(c.rlimits);
    c.shm_bytes = j.value("shm_bytes", c.shm_bytes);
    c.run_bytes = j.value("run_bytes", c.run_bytes);
    c.wait_network = j.value("wait_network", false);
    c.proc_view = j.value("proc_view", std::string());
    if (j.contains("proc_view_files")) j.at("proc_view_files").get_to(c.proc_view_files);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("config: ") + e.what());
  }
  if (c.overlays.empty() || !c.overlays[0].target.empty())
    throw Error("config: the first overlay must be the box root");
  if (c.seccomp_bpf.size() % 8 != 0 || c.seccomp_bpf.empty())
    throw Error("config: seccomp filter has a bad length");
  return c;
}

}  // namespace upstream::init
