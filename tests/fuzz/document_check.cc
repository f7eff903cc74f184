#include <algorithm>

#include "check.h"
#include "common/error.h"
#include "pipeline/document.h"

namespace upstream::fuzz {

namespace {

using pipeline::Document;
using pipeline::StepReport;

// Reports whose output is taken from the input itself, so fences, markers and odd bytes of the
// document show up in the sections written back.
std::vector<std::optional<StepReport>> reports_for(const Document& doc, std::string_view seed) {
  std::vector<std::optional<StepReport>> out;
  for (size_t i = 0; i < doc.steps.size(); i++) {
    StepReport r;
    r.status = i % 3 == 2 ? "failed" : "ok";
    r.exit_code = i % 3 == 2 ? 1 : 0;
    r.duration_ms = 100;
    r.lines.push_back(pipeline::clean_output_line(seed.substr(0, 40 + i)));
    r.lines.push_back("! " + pipeline::clean_output_line(doc.steps[i].code.substr(0, 30)));
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

void check_document(std::string_view input) {
  std::string text(input);
  Document doc;
  try {
    doc = pipeline::parse_document(text, "fuzz.md");
  } catch (const Error&) {
    return;  // refused with a message: fine
  }
  if (pipeline::write_back(doc, {}, std::nullopt) != text)
    throw Finding("write-back without reports changed the document");
  pipeline::Summary sum;
  sum.run_id = "rfuzz";
  sum.status = "succeeded";
  std::string out = pipeline::write_back(doc, reports_for(doc, text), sum);
  Document again;
  if (!pipeline::reparses_same(doc, out, again)) return;  // the runner keeps such a report aside
  if (pipeline::write_back(again, reports_for(again, text), sum) != out)
    throw Finding("writing back a written-back document changed it");
}

}  // namespace upstream::fuzz
