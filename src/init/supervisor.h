// The event loop of a box's init: serves the control socket, starts and tracks execs, reaps every
// process in the box, enforces timeouts, kills process trees, and stops the box.
#pragma once

#include <string>

#include "common/init_protocol.h"
#include "init/setup.h"

namespace upstream::init {

// Runs until the box is stopped; returns the process exit code.
int run_supervisor(const initproto::Config& cfg, BoxHandles handles);

}  // namespace upstream::init
