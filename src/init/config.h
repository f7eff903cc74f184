#pragma once

#include <nlohmann/json.hpp>

#include "common/init_protocol.h"

namespace upstream::init {

// Parses and checks the start configuration; throws Error naming the bad field.
initproto::Config parse_config(const nlohmann::json& j);

}  // namespace upstream::init
