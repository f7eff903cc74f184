// User namespaces with a fixed id mapping, held by a file descriptor.
#pragma once

#include <cstdint>

#include "common/fd.h"

namespace upstream::runtime {

// A user namespace mapping ids 0..count-1 to host ids base..base+count-1. Made by a short-lived
// CLONE_VM child, so it costs about as much as a vfork.
UniqueFd make_userns(uint32_t base, uint32_t count);

}  // namespace upstream::runtime
