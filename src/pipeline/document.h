// Markdown pipeline documents: parsing (YAML front matter, steps as fenced code blocks, the
// result sections an earlier run wrote) and writing results back.
//
// Write-back changes nothing but the sections upstream owns: a result section after each step,
// between <!-- upstream:result --> and <!-- /upstream:result -->, and a run summary at the top of
// the body, between <!-- upstream:summary --> and <!-- /upstream:summary -->. Every other byte of
// the document is kept as it was (line endings, trailing spaces, a missing final newline,
// unicode), and running a document twice replaces the sections instead of adding new ones.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "model/box.h"

namespace upstream::pipeline {

// The network of a run's box (front matter `network:`, `upstream run --network`), as box create's
// --network and --allow-* give it: the egress lists apply to mode custom. Checked and
// normalised as a box spec's are.
struct RunNetwork {
  NetworkMode mode = NetworkMode::none;
  Egress egress;  // allow_domains, allow_cidrs, deny_cidrs (no headers: a document holds no keys)
  bool operator==(const RunNetwork&) const = default;
};
// "allow-all", or "custom (pypi.org, 10.0.0.0/8; denied 10.1.0.0/16)", for messages.
std::string describe(const RunNetwork& n);

struct FrontMatter {
  std::optional<std::string> image;
  size_t image_line = 0, image_column = 0;  // where its value is in the file (1-based)
  std::optional<std::string> workdir;
  std::optional<std::string> session;
  std::optional<std::string> user;
  std::vector<std::pair<std::string, std::string>> env;  // in document order
  std::optional<uint64_t> timeout_ms;                    // per step
  std::vector<std::string> artifacts;                    // globs, relative to the working directory
  std::string on_error = "stop";                         // stop | continue
  Limits limits;
  std::optional<RunNetwork> network;
  std::optional<int> head_lines;  // output lines kept at the start of a long output
  std::optional<int> tail_lines;  // ... and at its end
};

struct Step {
  int index = 0;       // 1-based, in document order
  std::string lang;    // as written: bash, sh, python, python3, node, js
  std::string runner;  // bash | python3 | node
  std::string code;
  std::string name;  // for progress: the name attribute, the heading above, or the first line
  std::optional<uint64_t> timeout_ms;
  std::optional<std::string> user;
  bool continue_on_error = false;
  bool skip = false;
  size_t line = 0;                    // line of the opening fence (1-based, in the file)
  size_t insert_at = 0;               // byte offset of the end of the closing fence line
  std::optional<size_t> replace_end;  // an earlier result section spans [insert_at, replace_end)
  std::string prefix;                 // container prefix of the fence ("> ", list indentation)
};

struct Document {
  std::string path;
  std::string source;
  std::string eol = "\n";  // the document's own line ending, used for what we insert
  FrontMatter meta;
  size_t body_start = 0;  // byte offset after the front matter
  size_t summary_at = 0;  // where the summary section is (or goes)
  std::optional<size_t> summary_end;
  std::vector<Step> steps;
  // Fenced blocks in a language that is not a step's (```ruby, ```json): left alone, and listed
  // by --dry-run. Blocks inside our own sections (written-back output) are not among them.
  struct OtherBlock {
    size_t line = 0;
    std::string lang;
  };
  std::vector<OtherBlock> other_blocks;
};

// The languages of blocks that are steps (runner_for knows them), as messages name them.
inline constexpr const char* kStepLanguages = "bash, sh, python, python3, node, js or javascript";

// Throws Error(invalid_argument) with "PATH:LINE:COL: what is wrong" for malformed input
// (front matter, attributes, unclosed step fences, damaged result sections, binary files).
Document parse_document(const std::string& source, const std::string& path);

struct StepReport {
  std::string status;  // ok | failed | timed out | skipped | not run | interrupted
  std::optional<int> exit_code;
  int signal = 0;    // the signal that ended it, when it had no exit code
  std::string note;  // why it did not run, or how it ended ("out of memory")
  int64_t duration_ms = 0;
  std::vector<std::string> lines;  // output as shown: stderr lines start with "! "
  uint64_t cut_lines = 0;          // lines left out ...
  size_t cut_at = 0;               // ... before lines[cut_at] (the head is lines[0, cut_at))
  std::string cut_note;            // where the whole output is kept
  std::string structured;          // the step's JSON result, if short enough to show
};

struct Summary {
  std::string run_id;
  std::string session;
  int turn = 0;
  int64_t started_at = 0;
  int64_t duration_ms = 0;
  std::string status;  // succeeded | failed | interrupted
  int steps = 0;
  int ok = 0;
  int failed = 0;
  int skipped = 0;
  int interrupted = 0;
};

// The document with each step's report in its result section (steps without a report keep
// whatever section they had) and the summary at the top of the body.
std::string write_back(const Document& doc, const std::vector<std::optional<StepReport>>& reports,
                       const std::optional<Summary>& summary);

// Whether `written` (write_back's output for `doc`, with a report for every step) parses to the
// same steps, each with its result section found again; `again` receives the parse. The runner only
// replaces a document with a report that passes this check (else the report goes next to it).
bool reparses_same(const Document& doc, const std::string& written, Document& again);

// Output text made safe for a report line: carriage-return overwrites resolved, terminal escape
// sequences dropped, other control characters and invalid UTF-8 replaced.
std::string clean_output_line(std::string_view line);

// Parses a step's attribute block, "{name="x" timeout=120 skip}" (exposed for tests).
struct Attributes {
  std::optional<std::string> name;
  std::optional<uint64_t> timeout_ms;
  std::optional<std::string> user;
  bool continue_on_error = false;
  bool skip = false;
};
// `offset` is the block's column in its line, for error positions.
Attributes parse_attributes(std::string_view text, const std::string& where, size_t line,
                            size_t offset);

}  // namespace upstream::pipeline
