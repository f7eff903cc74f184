// Framing for byte streams (pipes) between the engine and an in-box file worker: a 4-byte
// little-endian length, a JSON header of that length, then whatever raw payload the header
// announces.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace upstream::frame {

constexpr size_t kMaxHeader = 1 << 20;

void write_header(int fd, const nlohmann::json& header);
// nullopt on EOF before the first byte; throws on a short or malformed frame.
std::optional<nlohmann::json> read_header(int fd);
// Reads exactly len bytes; throws on EOF.
void read_exact(int fd, void* buf, size_t len);

}  // namespace upstream::frame
