// What the engine tells a box's init at start, and the names of the messages they exchange.
// Shared by both sides so the two can never disagree on a field name.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace upstream::initproto {

// One overlay mount: `target` is relative to the box root ("" is the root itself); lower layers
// are host paths, highest first; upper and work are relative to the box volume's fs directory.
struct Overlay {
  std::string target;
  std::vector<std::string> lowers;
  std::string upper;
  std::string work;
};

struct Rlimit {
  int resource = 0;
  uint64_t soft = 0;
  uint64_t hard = 0;
};

struct Config {
  std::string box_id;
  std::string hostname;
  uint32_t uid_base = 0;  // host uid of box uid 0
  uint32_t uid_count = 65536;
  std::string rootfs;     // host directory the box root is assembled on
  std::string volume_fs;  // host directory holding each overlay's upper and work
  std::vector<Overlay> overlays;
  std::string socket_path;  // where the init binds its control socket
  std::string cgroup_dir;   // the box's cgroup v2 directory; execs get child groups
  std::string seccomp_bpf;  // raw struct sock_filter array
  std::vector<int> caps;    // capabilities kept by box root
  std::vector<Rlimit> rlimits;
  uint64_t shm_bytes = 64ull << 20;
  uint64_t run_bytes = 64ull << 20;
  bool wait_network = false;  // pause after namespaces exist so the engine can attach a network
  // The box's own view of host-wide /proc and /sys files (runtime/proc_view.h): a host directory
  // and the files under it bound over the box's (relative to both), when it serves.
  std::string proc_view;
  std::vector<std::string> proc_view_files;
};

// The box's /etc/hosts for a hostname (written by the engine at start, and by the init when a
// running box is renamed).
inline std::string hosts_file(const std::string& hostname) {
  return "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t" + hostname +
         "\n";
}

inline void to_json(nlohmann::json& j, const Overlay& o) {
  j = {{"target", o.target}, {"lowers", o.lowers}, {"upper", o.upper}, {"work", o.work}};
}
inline void from_json(const nlohmann::json& j, Overlay& o) {
  j.at("target").get_to(o.target);
  j.at("lowers").get_to(o.lowers);
  j.at("upper").get_to(o.upper);
  j.at("work").get_to(o.work);
}
inline void to_json(nlohmann::json& j, const Rlimit& r) { j = {r.resource, r.soft, r.hard}; }
inline void from_json(const nlohmann::json& j, Rlimit& r) {
  r.resource = j.at(0).get<int>();
  r.soft = j.at(1).get<uint64_t>();
  r.hard = j.at(2).get<uint64_t>();
}

// Exit status of an exec, as the init records it in the exec's status file and sends it to an
// attached client.
struct ExitStatus {
  int code = -1;   // exit code, or 128+signal
  int signal = 0;  // signal that ended the process, 0 if it exited
  bool timed_out = false;
  bool killed = false;  // ended by an explicit kill request or by the box stopping
  int64_t started_at = 0;
  int64_t ended_at = 0;
  uint64_t cpu_us = 0;      // CPU of the whole process tree (cgroup accounting)
  uint64_t max_rss_kb = 0;  // peak RSS of the main process
  std::string reason;       // "exited", "signaled", "timeout", "killed", "box-stopped"
};

inline void to_json(nlohmann::json& j, const ExitStatus& s) {
  j = {{"code", s.code},     {"signal", s.signal},         {"timed_out", s.timed_out},
       {"killed", s.killed}, {"started_at", s.started_at}, {"ended_at", s.ended_at},
       {"cpu_us", s.cpu_us}, {"max_rss_kb", s.max_rss_kb}, {"reason", s.reason}};
}
inline void from_json(const nlohmann::json& j, ExitStatus& s) {
  s.code = j.value("code", -1);
  s.signal = j.value("signal", 0);
  s.timed_out = j.value("timed_out", false);
  s.killed = j.value("killed", false);
  s.started_at = j.value("started_at", int64_t{0});
  s.ended_at = j.value("ended_at", int64_t{0});
  s.cpu_us = j.value("cpu_us", uint64_t{0});
  s.max_rss_kb = j.value("max_rss_kb", uint64_t{0});
  s.reason = j.value("reason", std::string());
}

}  // namespace upstream::initproto
