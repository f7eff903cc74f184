// The file worker runs inside a box, as the requested user, started by the box init for each
// files session. It serves file operations framed on stdin/stdout (common/frame.h). Because its
// root directory is the box root, no path it is given - with "..", absolute symlinks or races -
// can reach anything outside the box: the kernel resolves every path inside.
#pragma once

namespace upstream::init {

int fileworker_main();

}  // namespace upstream::init
