// What the API's resource handlers (api.cc, boxes.cc, execs.cc, files.cc, snapshots.cc,
// pipelines.cc) share: query parameters read with errors that name them, and the 404 for a
// path no route takes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "server/api.h"

namespace upstream::server {

[[noreturn]] void not_found(const std::string& message);

std::optional<std::string> qparam(const Request& r, const std::string& key);
std::string need_param(const Request& r, const std::string& key);
bool bool_param(const Request& r, const std::string& key, bool fallback);
uint64_t uint_param(const Request& r, const std::string& key, uint64_t fallback, uint64_t max);
// ?mode=0644: octal permission bits.
std::optional<uint32_t> mode_param(const Request& r);

}  // namespace upstream::server
