// The JSON shapes of boxes and execs shared by the fronts, and the parsing of signal names.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "model/box.h"

namespace upstream {

nlohmann::json box_json(const BoxRecord& b, const BoxUsage* usage = nullptr,
                        const std::vector<BoxEvent>* events = nullptr);
nlohmann::json exec_json(const ExecRecord& e);
// The inverses, for fronts that receive these shapes (the CLI over HTTP). Throw on a shape that
// is not ours.
BoxRecord box_from_json(const nlohmann::json& j, BoxUsage* usage = nullptr,
                        std::vector<BoxEvent>* events = nullptr);
ExecRecord exec_from_json(const nlohmann::json& j);
nlohmann::json usage_json(const BoxUsage& u);
nlohmann::json exposure_json(const Engine::Exposure& e);
Engine::Exposure exposure_from_json(const nlohmann::json& j);
nlohmann::json snapshot_json(const SnapshotRecord& s);
SnapshotRecord snapshot_from_json(const nlohmann::json& j);

nlohmann::json usage_report_json(const Engine::UsageReport& r);
Engine::UsageReport usage_report_from_json(const nlohmann::json& j);

// "TERM", "SIGKILL", "9". Throws invalid_argument.
int parse_signal(const std::string& text);

}  // namespace upstream
