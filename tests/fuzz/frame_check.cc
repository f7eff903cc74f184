// Properties of the frame reader the engine uses on the streams from the in-box file worker (the
// box controls those bytes): every input is frames or a clear error, and a frame read is one the
// writer would write the same way.
#include <fcntl.h>
#include <unistd.h>

#include "check.h"
#include "common/error.h"
#include "common/fd.h"
#include "common/frame.h"

namespace upstream::fuzz {

namespace {

// A pipe holding `bytes` (fuzz inputs are far below a pipe's capacity), its write end closed.
UniqueFd pipe_with(std::string_view bytes) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw Finding("pipe failed");
  UniqueFd r(p[0]), w(p[1]);
  ::fcntl(w.get(), F_SETPIPE_SZ, 1 << 20);
  if (!bytes.empty()) write_all(w.get(), std::string(bytes));
  return r;
}

}  // namespace

void check_frame(std::string_view input) {
  UniqueFd r = pipe_with(input);
  for (int frames = 0; frames < 1000; frames++) {
    std::optional<nlohmann::json> h;
    try {
      h = frame::read_header(r.get());
    } catch (const Error&) {
      return;  // refused with a message: what a malformed stream must give
    } catch (const std::exception& e) {
      throw Finding(std::string("read_header threw a non-upstream error: ") + e.what());
    }
    if (!h) return;
    if (!h->is_object()) throw Finding("a frame header that is not an object was accepted");
    // Written again and read back, the header is the same.
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) throw Finding("pipe failed");
    UniqueFd rr(p[0]), ww(p[1]);
    ::fcntl(ww.get(), F_SETPIPE_SZ, 1 << 20);
    frame::write_header(ww.get(), *h);
    ww.reset();
    auto back = frame::read_header(rr.get());
    if (!back || *back != *h) throw Finding("a frame header does not survive a write and read");
  }
}

}  // namespace upstream::fuzz
