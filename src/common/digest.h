// SHA-256, the one digest upstream uses: layer contents, API keys and exposure credentials (as
// stored hashes), tarball cache keys. Lower-case hex.
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace upstream {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;
  void add(std::string_view data);
  std::string hex();  // finishes it

 private:
  struct State;
  std::unique_ptr<State> s_;
};

std::string sha256_hex(std::string_view data);
// Of a file's contents, read in chunks. Throws naming the path.
std::string sha256_file_hex(const std::string& path);
// Whether `s` is a digest as the layer store names them: 64 lower-case hex digits.
bool is_digest(std::string_view s);

}  // namespace upstream
