// Capabilities box root keeps inside its user namespace: Docker's default set. They apply only
// to the box's own namespaces and files; box root has no capability over the host.
#pragma once

#include <string>
#include <vector>

namespace upstream::runtime {

const std::vector<int>& default_capabilities();
std::vector<std::string> capability_names(const std::vector<int>& caps);

}  // namespace upstream::runtime
