// The properties each fuzz target checks, shared by the libFuzzer targets (tests/fuzz/*_fuzz.cc)
// and the unit test that replays the regression corpus (tests/fuzz/regressions/TARGET/*), so a
// crash found once is checked by every ordinary test run after it is added.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace upstream::fuzz {

// A property that does not hold for an input (the fuzz targets abort on it; tests report it).
struct Finding : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Parses a markdown document and checks the write-back: without reports it is the input byte for
// byte, and writing back a written-back document that parses to the same steps changes nothing.
void check_document(std::string_view input);

// netd's parsers of box-controlled bytes (net_check.cc): a DNS query answered by netd parses back
// to that answer, and no A record of a response escapes the blocked-address check; the SNI and
// Host peekers return parts of their input; a request head's host is in its normal form, an
// absolute target's host winning over the Host header.
void check_dns(std::string_view input);
void check_peek(std::string_view input);
void check_http_head(std::string_view input);

// The frame reader (frame_check.cc): frames or upstream's own error; a frame survives a write.
void check_frame(std::string_view input);

// The snapshot-export reader (export_check.cc): entries accepted lie inside a listed layer, and
// anything else is refused with upstream's own error.
void check_export(std::string_view input);

}  // namespace upstream::fuzz
