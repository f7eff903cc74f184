// The JSON shapes of boxes and execs shared by the fronts, and the parsing of signal names.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "model/box.h"

namespace upstream {

nlohmann::json exposure_json(const Engine::Exposure& e);
Engine::Exposure exposure_from_json(const nlohmann::json& j);

nlohmann::json usage_report_json(const Engine::UsageReport& r);
Engine::UsageReport usage_report_from_json(const nlohmann::json& j);

// "TERM", "SIGKILL", "9". Throws invalid_argument.
int parse_signal(const std::string& text);

}  // namespace upstream
