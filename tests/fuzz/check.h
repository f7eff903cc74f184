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

}  // namespace upstream::fuzz
