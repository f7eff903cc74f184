// Output as JSON text: JSON strings must be UTF-8, and a stream must not split a character.
#pragma once

#include <string>
#include <string_view>
#include <utility>

namespace upstream {

// Strict UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF.
bool valid_utf8(std::string_view s);
// The offset of the first byte that does not start a valid sequence, or npos.
size_t first_invalid_utf8(std::string_view s);

// Keeps UTF-8 sequences whole across chunks of a stream, so that no event carries half a
// character (which JSON could only show as a replacement character).
class Utf8Joiner {
 public:
  // What can be sent now; an incomplete sequence at the end is held for the next piece.
  std::string take(std::string_view data);
  std::string rest() { return std::exchange(held_, {}); }

 private:
  std::string held_;
};

}  // namespace upstream
