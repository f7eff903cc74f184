// Percent-encoding of URL paths and query strings (RFC 3986), the one codec of the API's server
// and clients.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace upstream {

// Unreserved characters stay, everything else becomes %XX; with `keep_slash`, '/' stays too
// (a path), else it is encoded (one path segment, or a query value).
std::string url_encode(std::string_view s, bool keep_slash = false);

// %XX decoded (and '+' as a space when `plus_is_space`, in query strings); nullopt for a
// malformed escape.
std::optional<std::string> url_decode(std::string_view s, bool plus_is_space = false);

}  // namespace upstream
