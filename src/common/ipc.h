// Messages between the engine and a box's init: one JSON document per SOCK_SEQPACKET datagram,
// with file descriptors passed alongside (SCM_RIGHTS). Datagram boundaries make framing free and
// a half-read message impossible.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/fd.h"

namespace upstream::ipc {

constexpr size_t kMaxMessage = 256 * 1024;
constexpr size_t kMaxFds = 8;

struct Message {
  nlohmann::json body;
  std::vector<UniqueFd> fds;
};

// Throws Error on failure; EPIPE/ECONNRESET surface as Errc::unavailable.
void send(int sock, const nlohmann::json& body, const std::vector<int>& fds = {});

// Blocks unless the socket is non-blocking (then returns nullopt with errno == EAGAIN).
// Returns nullopt on orderly shutdown (errno == 0). Throws on a malformed message.
std::optional<Message> recv(int sock);

// Waits at most timeout_ms (negative: forever) for one message; throws Error(Errc::timeout).
std::optional<Message> recv_wait(int sock, int timeout_ms);

// Connects a SOCK_SEQPACKET socket to a unix socket path; paths longer than sun_path are reached
// through a directory descriptor.
UniqueFd connect(const std::string& path);

std::pair<UniqueFd, UniqueFd> socketpair();

}  // namespace upstream::ipc
