// Replays every input kept in tests/fuzz/regressions/TARGET/ through the property its fuzz target
// checks (tests/fuzz/check.h): a crash the fuzzer found is one file added there, and from then on
// every unit test run (plain and sanitized) fails if it comes back.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <map>

#include "common/fd.h"
#include "fuzz/check.h"

namespace {

namespace fs = std::filesystem;

const std::map<std::string, std::function<void(std::string_view)>>& checks() {
  static const std::map<std::string, std::function<void(std::string_view)>> all = {
      {"document", upstream::fuzz::check_document}, {"dns", upstream::fuzz::check_dns},
      {"peek", upstream::fuzz::check_peek},         {"http_head", upstream::fuzz::check_http_head},
      {"frame", upstream::fuzz::check_frame},       {"export", upstream::fuzz::check_export},
  };
  return all;
}

const fs::path kRegressions = fs::path(UPSTREAM_SOURCE_DIR) / "tests/fuzz/regressions";

TEST(FuzzRegressions, EveryFolderIsATarget) {
  size_t folders = 0;
  for (const auto& e : fs::directory_iterator(kRegressions)) {
    if (!e.is_directory()) continue;
    folders++;
    EXPECT_TRUE(checks().count(e.path().filename().string()))
        << e.path() << " names no fuzz target";
  }
  EXPECT_GT(folders, 0u);
}

TEST(FuzzRegressions, EveryKeptInputHoldsItsProperty) {
  size_t inputs = 0;
  for (const auto& [target, check] : checks()) {
    fs::path dir = kRegressions / target;
    if (!fs::is_directory(dir)) continue;
    for (const auto& e : fs::directory_iterator(dir)) {
      if (!e.is_regular_file()) continue;
      inputs++;
      std::string bytes = upstream::read_file(e.path().string());
      try {
        check(bytes);
      } catch (const upstream::fuzz::Finding& f) {
        ADD_FAILURE() << target << ": " << e.path().filename().string() << ": " << f.what();
      }
    }
  }
  EXPECT_GT(inputs, 0u);
}

}  // namespace
