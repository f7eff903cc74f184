// libFuzzer target for the document parser and the write-back (see tests/fuzz/run.sh).
// Properties checked on every input the parser accepts:
//  - no crash, no sanitizer finding, on any input;
//  - without reports, write-back returns the input byte for byte;
//  - when the written-back document parses again with the same steps (the runner checks this
//    before it replaces a document, see write_back_checked), writing back again changes nothing:
//    a re-run replaces sections, never adds them.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/error.h"
#include "pipeline/document.h"

using namespace upstream;
using namespace upstream::pipeline;

namespace {

std::vector<std::optional<StepReport>> reports_for(const Document& doc, const std::string& seed) {
  std::vector<std::optional<StepReport>> out;
  for (size_t i = 0; i < doc.steps.size(); i++) {
    StepReport r;
    r.status = i % 3 == 2 ? "failed" : "ok";
    r.exit_code = i % 3 == 2 ? 1 : 0;
    r.duration_ms = 100;
    // Output taken from the input itself, so fences, markers and odd bytes show up in it.
    std::string line = seed.substr(0, std::min<size_t>(seed.size(), 40 + i));
    r.lines.push_back(clean_output_line(line));
    r.lines.push_back("! " + clean_output_line(doc.steps[i].code.substr(0, 30)));
    if (i % 2) {
      r.cut_lines = 7;
      r.cut_at = 1;
      r.cut_note = "/x/output.log";
      r.structured = "{\"k\":\"`v`\"}";
    }
    out.push_back(r);
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  Document doc;
  try {
    doc = parse_document(text, "fuzz.md");
  } catch (const Error&) {
    return 0;  // rejected with a message: fine
  }
  if (write_back(doc, {}, std::nullopt) != text) std::abort();
  Summary sum;
  sum.run_id = "rfuzz";
  sum.status = "succeeded";
  auto reports = reports_for(doc, text);
  std::string out = write_back(doc, reports, sum);
  Document again;
  if (!reparses_same(doc, out, again)) return 0;
  if (write_back(again, reports_for(again, text), sum) != out) std::abort();
  return 0;
}
