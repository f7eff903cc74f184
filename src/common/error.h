// Errors carry a kind (what the caller did wrong, or what went wrong), a message meant for a
// person, and the errno that caused them, if any. Fronts map the kind to an exit code or an HTTP
// status; the message is printed as one line.
#pragma once

#include <cerrno>
#include <stdexcept>
#include <string>

namespace upstream {

enum class Errc {
  internal,             // a bug or an unexpected system failure
  invalid_argument,     // the request is malformed; nothing was changed
  not_found,            // the named box, exec, file or image does not exist
  already_exists,       // a name is taken
  failed_precondition,  // the request is valid but the object is in the wrong state
  resource_exhausted,   // a limit was hit
  permission_denied,    // the caller may not do or name this (a tenant naming a host path)
  unavailable,          // a needed kernel feature or service is missing
  timeout,
};

const char* errc_name(Errc c);
Errc errc_from_name(const std::string& name);

class Error : public std::runtime_error {
 public:
  Error(Errc code, const std::string& message, int sys_errno = 0)
      : std::runtime_error(message), code_(code), errno_(sys_errno) {}
  explicit Error(const std::string& message, int sys_errno = 0)
      : Error(Errc::internal, message, sys_errno) {}

  Errc code() const noexcept { return code_; }
  int sys_errno() const noexcept { return errno_; }

 private:
  Errc code_;
  int errno_;
};

// "what: strerror(err)", as an internal error.
[[noreturn]] void throw_sys(const std::string& what, int err = errno);
// Same, with an explicit kind.
[[noreturn]] void throw_sys(Errc code, const std::string& what, int err = errno);

[[noreturn]] inline void throw_invalid(const std::string& message) {
  throw Error(Errc::invalid_argument, message);
}

std::string errno_string(int err);

}  // namespace upstream
