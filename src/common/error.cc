#include "common/error.h"

#include <cstring>

namespace upstream {

const char* errc_name(Errc c) {
  switch (c) {
    case Errc::internal:
      return "internal";
    case Errc::invalid_argument:
      return "invalid_argument";
    case Errc::not_found:
      return "not_found";
    case Errc::already_exists:
      return "already_exists";
    case Errc::failed_precondition:
      return "failed_precondition";
    case Errc::resource_exhausted:
      return "resource_exhausted";
    case Errc::permission_denied:
      return "permission_denied";
    case Errc::unavailable:
      return "unavailable";
    case Errc::timeout:
      return "timeout";
  }
  return "internal";
}

Errc errc_from_name(const std::string& name) {
  for (Errc c : {Errc::internal, Errc::invalid_argument, Errc::not_found, Errc::already_exists,
                 Errc::failed_precondition, Errc::resource_exhausted, Errc::permission_denied,
                 Errc::unavailable, Errc::timeout})
    if (name == errc_name(c)) return c;
  return Errc::internal;
}

std::string errno_string(int err) {
  char buf[256];
  // GNU strerror_r returns a pointer that may or may not be buf.
  return std::string(strerror_r(err, buf, sizeof buf));
}

void throw_sys(const std::string& what, int err) { throw_sys(Errc::internal, what, err); }

void throw_sys(Errc code, const std::string& what, int err) {
  throw Error(code, what + ": " + errno_string(err), err);
}

}  // namespace upstream
