#include "runtime/slots.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "common/error.h"
#include "common/strings.h"

namespace upstream::runtime {

SlotAllocator::SlotAllocator(std::string dir) : dir_(std::move(dir)) {}

SlotLease SlotAllocator::acquire() {
  struct stat st;
  if (::stat(dir_.c_str(), &st) != 0) {
    std::string cur;
    for (const auto& part : split(dir_, '/')) {
      if (part.empty()) continue;
      cur += "/" + part;
      if (::mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST) throw_sys("mkdir " + cur);
    }
  }
  // Start at a random slot so concurrent allocators rarely contend for the same lock.
  uint32_t start = static_cast<uint32_t>(std::stoul(random_hex(8), nullptr, 16) % kMaxSlots);
  for (uint32_t i = 0; i < kMaxSlots; i++) {
    uint32_t slot = (start + i) % kMaxSlots;
    std::string path = dir_ + "/" + std::to_string(slot);
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd) throw_sys("open " + path);
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) return SlotLease{slot, std::move(fd)};
    if (errno != EWOULDBLOCK) throw_sys("flock " + path);
  }
  throw Error(Errc::resource_exhausted, "no free uid range for another running box");
}

bool SlotAllocator::in_use(uint32_t slot) const {
  std::string path = dir_ + "/" + std::to_string(slot);
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd) return false;
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) return false;
  return errno == EWOULDBLOCK;
}

}  // namespace upstream::runtime
