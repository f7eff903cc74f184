#include "storage/layout.h"

namespace upstream::storage {

Layout::Layout(std::string h) : home(std::move(h)) {
  while (home.size() > 1 && home.back() == '/') home.pop_back();
  data_root = home;
}

}  // namespace upstream::storage
