#include "runtime/caps.h"

#include <linux/capability.h>

namespace upstream::runtime {

const std::vector<int>& default_capabilities() {
  static const std::vector<int> caps = {
      CAP_CHOWN,   CAP_DAC_OVERRIDE, CAP_FSETID,           CAP_FOWNER,      CAP_MKNOD,
      CAP_NET_RAW, CAP_SETGID,       CAP_SETUID,           CAP_SETFCAP,     CAP_SETPCAP,
      CAP_KILL,    CAP_SYS_CHROOT,   CAP_NET_BIND_SERVICE, CAP_AUDIT_WRITE,
  };
  return caps;
}

std::vector<std::string> capability_names(const std::vector<int>& caps) {
  static const char* names[] = {"CHOWN",
                                "DAC_OVERRIDE",
                                "DAC_READ_SEARCH",
                                "FOWNER",
                                "FSETID",
                                "KILL",
                                "SETGID",
                                "SETUID",
                                "SETPCAP",
                                "LINUX_IMMUTABLE",
                                "NET_BIND_SERVICE",
                                "NET_BROADCAST",
                                "NET_ADMIN",
                                "NET_RAW",
                                "IPC_LOCK",
                                "IPC_OWNER",
                                "SYS_MODULE",
                                "SYS_RAWIO",
                                "SYS_CHROOT",
                                "SYS_PTRACE",
                                "SYS_PACCT",
                                "SYS_ADMIN",
                                "SYS_BOOT",
                                "SYS_NICE",
                                "SYS_RESOURCE",
                                "SYS_TIME",
                                "SYS_TTY_CONFIG",
                                "MKNOD",
                                "LEASE",
                                "AUDIT_WRITE",
                                "AUDIT_CONTROL",
                                "SETFCAP"};
  std::vector<std::string> out;
  for (int c : caps)
    out.push_back(c >= 0 && c < static_cast<int>(sizeof names / sizeof *names) ? names[c]
                                                                               : std::to_string(c));
  return out;
}

}  // namespace upstream::runtime
