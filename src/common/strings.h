// Parsing and formatting of the values users type: sizes, durations, CPU counts, env entries,
// labels, names. Every parser rejects what it cannot read exactly, with a message naming the
// offending text.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace upstream {

// "512m", "2g", "1.5GiB", "1048576" (bytes). Binary multiples. Throws invalid_argument.
uint64_t parse_size(std::string_view text, std::string_view what = "size");
// "30s", "5m", "1h", "250ms", "1.5s", "90" (seconds). Returns milliseconds.
uint64_t parse_duration_ms(std::string_view text, std::string_view what = "duration");
// "1.5" CPUs -> 1500 millicpus. Must be > 0.
uint64_t parse_cpus_milli(std::string_view text);

// "KEY=VALUE"; KEY must be a valid environment variable name.
std::pair<std::string, std::string> parse_env_entry(std::string_view text);
bool valid_env_name(std::string_view name);
// "key=value" labels; keys are [A-Za-z0-9][A-Za-z0-9._/-]*, at most 128 bytes.
std::pair<std::string, std::string> parse_label(std::string_view text);

// Box names: [A-Za-z0-9][A-Za-z0-9_.-]{0,62}; also used as the box's hostname.
bool valid_box_name(std::string_view name);

std::vector<std::string> split(std::string_view s, char sep);
std::string join(const std::vector<std::string>& parts, std::string_view sep);
std::string trim(std::string_view s);
// The candidate a mistyped word most likely meant ("craete" -> "create"): the one fewest edits
// away (an insertion, deletion, substitution or swap of neighbours counts one), within a third of
// the word's length (at least one edit, at most three); or one the word is a prefix of. nullopt
// when none is close; the earlier candidate on a tie.
std::optional<std::string> closest_match(std::string_view word,
                                         const std::vector<std::string>& candidates);
bool starts_with(std::string_view s, std::string_view prefix);

// Lower-case hex from the kernel's CSPRNG.
std::string random_hex(size_t chars);

std::string base64_encode(std::string_view data);
std::optional<std::string> base64_decode(std::string_view text);

// For display: "1.5 GiB", "812 KiB".
std::string format_bytes(uint64_t bytes);
// For display: "1.4s", "320ms", "2m05s", "3h12m".
std::string format_duration_ms(uint64_t ms);

// Quotes an argv for display so that a shell would read it back.
std::string shell_join(const std::vector<std::string>& argv);

}  // namespace upstream
