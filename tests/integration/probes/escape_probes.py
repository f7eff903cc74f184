"""Escape probes, run inside a box. Each probe tries something a box must not be able to do and
reports "denied: <why>" or "ALLOWED: <what happened>". Prints one JSON object.

Usage: python3 escape_probes.py HOST_MARKER_PATH HOST_TCP_PORT
"""
import ctypes
import ctypes.util
import errno
import json
import os
import socket
import sys

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
libc.syscall.restype = ctypes.c_long

# x86_64 system call numbers
SYS = {
    "ptrace": 101, "iopl": 172, "ioperm": 173, "init_module": 175, "delete_module": 176,
    "reboot": 169, "keyctl": 250, "add_key": 248, "request_key": 249, "unshare": 272,
    "perf_event_open": 298, "setns": 308, "finit_module": 313, "bpf": 321, "userfaultfd": 323,
    "open_by_handle_at": 304, "io_uring_setup": 425, "kexec_load": 246, "open_tree": 428,
    "fsopen": 430, "clock_settime": 227, "pivot_root": 155, "swapon": 167, "acct": 163,
    "name_to_handle_at": 303, "mount_setattr": 442, "quotactl": 179,
}
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWPID = 0x20000, 0x10000000, 0x40000000, 0x20000000

results = {}


def record(name, fn):
    try:
        outcome = fn()
    except Exception as e:  # an exception means the attempt failed
        outcome = "denied: " + type(e).__name__ + ": " + str(e)
    results[name] = outcome


def sysc(name, *args):
    rc = libc.syscall(SYS[name], *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    if rc < 0:
        return "denied: " + errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
    return "ALLOWED: %s returned %d" % (name, rc)


def call(fn, *args):
    rc = fn(*args)
    if rc < 0:
        return "denied: " + errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
    return "ALLOWED: returned %d" % rc


def write_file(path, data):
    try:
        with open(path, "w") as f:
            f.write(data)
        return "ALLOWED: wrote " + path
    except OSError as e:
        return "denied: " + errno.errorcode.get(e.errno, str(e.errno))


def read_file(path):
    try:
        with open(path, "rb") as f:
            f.read(16)
        return "ALLOWED: read " + path
    except OSError as e:
        return "denied: " + errno.errorcode.get(e.errno, str(e.errno))


marker, port = sys.argv[1], int(sys.argv[2])

# Mounts and namespaces
record("mount tmpfs", lambda: call(libc.mount, b"none", b"/mnt", b"tmpfs", 0, None))
record("umount /proc", lambda: call(libc.umount2, b"/proc", 2))
record("unshare user namespace", lambda: sysc("unshare", CLONE_NEWUSER))
record("unshare mount namespace", lambda: sysc("unshare", CLONE_NEWNS))
record("unshare net namespace", lambda: sysc("unshare", CLONE_NEWNET))
record("setns into init's mount namespace",
       lambda: sysc("setns", os.open("/proc/1/ns/mnt", os.O_RDONLY), 0))
record("pivot_root", lambda: sysc("pivot_root", b"/tmp", b"/tmp"))
record("open_tree", lambda: sysc("open_tree", -100, b"/", 1))
record("fsopen", lambda: sysc("fsopen", b"tmpfs", 0))
record("mount_setattr", lambda: sysc("mount_setattr", -100, b"/", 0, 0, 0))

# Kernel interfaces
record("init_module", lambda: sysc("init_module", 0, 0, b""))
record("finit_module", lambda: sysc("finit_module", 0, b"", 0))
record("delete_module", lambda: sysc("delete_module", b"loop", 0))
record("kexec_load", lambda: sysc("kexec_load", 0, 0, 0, 0))
record("bpf", lambda: sysc("bpf", 5, 0, 0))
record("perf_event_open", lambda: sysc("perf_event_open", 0, 0, -1, -1, 0))
record("keyctl", lambda: sysc("keyctl", 0, 0, 0, 0, 0))
record("add_key", lambda: sysc("add_key", b"user", b"k", b"v", 1, -4))
record("request_key", lambda: sysc("request_key", b"user", b"k", 0, 0))
record("userfaultfd", lambda: sysc("userfaultfd", 0))
record("io_uring_setup", lambda: sysc("io_uring_setup", 1, 0))
record("open_by_handle_at", lambda: sysc("open_by_handle_at", 3, 0, 0))
record("reboot", lambda: sysc("reboot", 0xfee1dead, 672274793, 0x1234567, 0))
record("iopl", lambda: sysc("iopl", 3))
record("ioperm", lambda: sysc("ioperm", 0x80, 1, 1))
record("clock_settime", lambda: sysc("clock_settime", 0, 0))
record("swapon", lambda: sysc("swapon", b"/tmp/swap", 0))
record("acct", lambda: sysc("acct", b"/tmp/acct"))
record("quotactl", lambda: sysc("quotactl", 0, b"/dev/null", 0, 0))
record("sethostname", lambda: call(libc.sethostname, b"evil", 4))
record("mknod block device", lambda: call(libc.mknod, b"/tmp/sda", 0o60600, (8 << 8) | 0))
record("vsock socket", lambda: "ALLOWED: " + str(socket.socket(40, socket.SOCK_STREAM)))
record("AF_ALG socket", lambda: "ALLOWED: " + str(socket.socket(38, socket.SOCK_SEQPACKET)))

# Our init (pid 1) is off limits: no ptrace, no peeking at its memory or descriptors.
record("ptrace attach to pid 1", lambda: sysc("ptrace", 16, 1, 0, 0))
record("read /proc/1/environ", lambda: read_file("/proc/1/environ"))
record("read /proc/1/mem", lambda: read_file("/proc/1/mem"))
record("list /proc/1/fd", lambda: "ALLOWED: " + str(os.listdir("/proc/1/fd")))
record("list /proc/1/root", lambda: "ALLOWED: " + str(os.listdir("/proc/1/root")))

# Kernel tunables and host hardware
record("write /proc/sys", lambda: write_file("/proc/sys/kernel/hostname", "evil"))
record("write /proc/sys/vm", lambda: write_file("/proc/sys/vm/drop_caches", "3"))
record("write /proc/sysrq-trigger", lambda: write_file("/proc/sysrq-trigger", "h"))
record("write /sys", lambda: write_file("/sys/kernel/mm/transparent_hugepage/enabled", "never"))
def kernel_memory():
    with open("/proc/kcore", "rb") as f:
        data = f.read(64)
    return "ALLOWED: read kernel memory" if data else "denied: masked"


record("read /proc/kcore", kernel_memory)


def host_marker():
    # Classic chroot escape: chroot deeper, then walk up from the old cwd.
    try:
        os.makedirs("/tmp/jail", exist_ok=True)
        fd = os.open("/", os.O_RDONLY)
        os.chroot("/tmp/jail")
        os.fchdir(fd)
        for _ in range(64):
            os.chdir("..")
        os.chroot(".")
    except OSError:
        pass
    return "ALLOWED: host marker visible" if os.path.exists(marker) else "denied: not visible"


def loopback():
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
        return "ALLOWED: connected to the host's loopback service"
    except OSError as e:
        return "denied: " + errno.errorcode.get(e.errno, str(e.errno))


def setuid_gain():
    if os.getuid() == 0:
        return "denied: n/a as root"
    try:
        os.setuid(0)
        return "ALLOWED: setuid(0)"
    except OSError as e:
        return "denied: " + errno.errorcode.get(e.errno, str(e.errno))


def cap_sys_admin():
    for line in open("/proc/self/status"):
        if line.startswith("CapEff:"):
            caps = int(line.split()[1], 16)
            return "ALLOWED: CAP_SYS_ADMIN" if caps & (1 << 21) else "denied: not in effective set"
    return "denied: no status"


record("host file via chroot escape", host_marker)
record("host loopback service", loopback)
record("setuid to root", setuid_gain)
record("CAP_SYS_ADMIN", cap_sys_admin)
record("other processes visible", lambda: "ALLOWED: %d processes" % len([p for p in os.listdir("/proc") if p.isdigit()]) if len([p for p in os.listdir("/proc") if p.isdigit()]) > 8 else "denied: only the box's own")

print(json.dumps(results))
