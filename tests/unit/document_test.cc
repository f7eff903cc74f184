// The markdown document: parsing, write-back, golden files.
#include <gtest/gtest.h>

#include <dirent.h>

#include <algorithm>
#include <cstdlib>

#include "common/error.h"
#include "common/fd.h"
#include "pipeline/context.h"
#include "pipeline/document.h"
#include "pipeline/runner.h"

using namespace upstream;
using namespace upstream::pipeline;

namespace {

const std::string kGolden = std::string(UPSTREAM_SOURCE_DIR) + "/tests/golden";

// A deterministic report for every step: its code's lines as output, odd lines as stderr.
std::vector<std::optional<StepReport>> fake_reports(const Document& doc) {
  std::vector<std::optional<StepReport>> out;
  for (const auto& s : doc.steps) {
    StepReport r;
    if (s.skip) {
      r.status = "skipped";
    } else {
      r.status = "ok";
      r.exit_code = 0;
      r.duration_ms = 1234;
      size_t n = 0, start = 0;
      while (start < s.code.size()) {
        size_t nl = s.code.find('\n', start);
        if (nl == std::string::npos) nl = s.code.size();
        r.lines.push_back((n++ % 2 ? "! " : "") + s.code.substr(start, nl - start));
        start = nl + 1;
      }
    }
    out.push_back(r);
  }
  return out;
}

Summary fake_summary() {
  Summary s;
  s.run_id = "rtest";
  s.started_at = 1'700'000'000'000;
  s.duration_ms = 2500;
  s.status = "succeeded";
  s.steps = 2;
  s.ok = 2;
  return s;
}

// Removes what write-back added: the document must come back byte for byte.
std::string strip_sections(const Document& d) {
  struct Span {
    size_t b, e;
  };
  std::vector<Span> spans;
  if (d.summary_end) spans.push_back({d.summary_at, *d.summary_end});
  for (const auto& s : d.steps)
    if (s.replace_end) spans.push_back({s.insert_at, *s.replace_end});
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.b < b.b; });
  std::string out;
  size_t pos = 0;
  for (const auto& sp : spans) {
    out.append(d.source, pos, sp.b - pos);
    pos = sp.e;
  }
  out.append(d.source, pos, std::string::npos);
  return out;
}

std::vector<std::string> golden_inputs() {
  std::vector<std::string> out;
  DIR* d = ::opendir(kGolden.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.size() > 3 && n.substr(n.size() - 3) == ".md" && n.find(".expected") == std::string::npos)
      out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST(DocumentTest, GoldenWriteBack) {
  auto inputs = golden_inputs();
  ASSERT_GE(inputs.size(), 7u);
  bool update = std::getenv("UPDATE_GOLDEN") != nullptr;
  for (const auto& name : inputs) {
    SCOPED_TRACE(name);
    std::string source = read_file(kGolden + "/" + name);
    Document doc = parse_document(source, name);
    std::string out = write_back(doc, fake_reports(doc), fake_summary());
    std::string expected_path = kGolden + "/" + name.substr(0, name.size() - 3) + ".expected.md";
    if (update) write_file_atomic(expected_path, out);
    EXPECT_EQ(out, read_file(expected_path));

    // Idempotent: a second write-back over the written document changes nothing.
    Document again = parse_document(out, name);
    ASSERT_EQ(again.steps.size(), doc.steps.size());
    EXPECT_EQ(write_back(again, fake_reports(again), fake_summary()), out);
    // Nothing outside our sections changed: taking them out gives the input back, minus the
    // sections the input itself already had.
    EXPECT_EQ(strip_sections(again), strip_sections(doc));
  }
}

TEST(DocumentTest, WithoutReportsNothingChanges) {
  for (const auto& name : golden_inputs()) {
    std::string source = read_file(kGolden + "/" + name);
    Document doc = parse_document(source, name);
    EXPECT_EQ(write_back(doc, {}, std::nullopt), source) << name;
  }
}

TEST(DocumentTest, StepsLanguagesAndNames) {
  Document d = parse_document(read_file(kGolden + "/basic.md"), "basic.md");
  ASSERT_EQ(d.steps.size(), 2u);
  EXPECT_EQ(d.steps[0].runner, "bash");
  EXPECT_EQ(d.steps[0].name, "fetch data");
  EXPECT_EQ(d.steps[0].timeout_ms, 120'000u);
  EXPECT_EQ(d.steps[0].code, "echo fetching\n");
  EXPECT_EQ(d.steps[1].runner, "python3");
  EXPECT_EQ(d.steps[1].name, "print(\"hi\")");  // no heading right above it: its first line
  EXPECT_EQ(d.meta.timeout_ms, 30'000u);
  ASSERT_EQ(d.meta.env.size(), 1u);
  EXPECT_EQ(d.meta.env[0].first, "A");

  Document c = parse_document(read_file(kGolden + "/containers.md"), "containers.md");
  ASSERT_EQ(c.steps.size(), 3u);
  EXPECT_EQ(c.steps[0].prefix, "   ");
  EXPECT_EQ(c.steps[2].prefix, "> ");
  EXPECT_EQ(c.steps[2].code, "echo quoted\n");

  Document f = parse_document(read_file(kGolden + "/fences.md"), "fences.md");
  ASSERT_EQ(f.steps.size(), 4u);
  EXPECT_EQ(f.steps[1].name, "four backticks");
  EXPECT_EQ(f.steps[1].code, "echo \"```\"\n");
  EXPECT_TRUE(f.steps[3].skip);

  Document u = parse_document(read_file(kGolden + "/crlf.md"), "crlf.md");
  EXPECT_EQ(u.eol, "\r\n");
  EXPECT_EQ(u.steps[0].name, "CRLF document");
}

TEST(DocumentTest, HeadingNamesOnlyTheFirstStepBelowIt) {
  Document d = parse_document("# Setup\n```bash\ntrue\n```\n```bash\nfalse\n```\n", "x.md");
  ASSERT_EQ(d.steps.size(), 2u);
  EXPECT_EQ(d.steps[0].name, "Setup");
  EXPECT_EQ(d.steps[1].name, "false");
}

TEST(DocumentTest, LongOutputIsCutWithANote) {
  Document d = parse_document("```bash\nseq 100\n```\n", "x.md");
  StepReport r;
  r.status = "ok";
  r.exit_code = 0;
  r.lines = {"1", "2", "99", "100"};
  r.cut_at = 2;
  r.cut_lines = 96;
  r.cut_note = "/ctx/steps/1/output.log";
  std::string out = write_back(d, {r}, std::nullopt);
  EXPECT_NE(
      out.find(
          "1\n2\n[... 96 lines cut; the whole output: /ctx/steps/1/output.log ...]\n99\n100\n"),
      std::string::npos)
      << out;
}

TEST(DocumentTest, OutputWithBackticksGetsALongerFence) {
  Document d = parse_document("```bash\necho\n```\n", "x.md");
  StepReport r;
  r.status = "ok";
  r.exit_code = 0;
  r.lines = {"````", "x"};
  r.structured = "{\"a\":\"`\"}";
  std::string out = write_back(d, {r}, std::nullopt);
  EXPECT_NE(out.find("\n`````text\n````\nx\n`````\n"), std::string::npos) << out;
  EXPECT_NE(out.find("**Output:** ``{\"a\":\"`\"}``"), std::string::npos) << out;
  Document again = parse_document(out, "x.md");
  EXPECT_EQ(write_back(again, {r}, std::nullopt), out);
}

TEST(DocumentTest, ResultLines) {
  Document d = parse_document(
      "```bash\na\n```\n```bash\nb\n```\n```bash\nc\n```\n```bash\nd\n```\n", "x.md");
  StepReport failed, timed, notrun, killed;
  failed.status = "failed";
  failed.exit_code = 2;
  failed.duration_ms = 400;
  timed.status = "timed out";
  timed.duration_ms = 2000;
  notrun.status = "not run";
  killed.status = "failed";
  killed.signal = 9;
  killed.note = "out of memory";
  killed.duration_ms = 100;
  std::string out = write_back(d, {failed, timed, notrun, killed}, std::nullopt);
  EXPECT_NE(out.find("**Result:** exit 2 (0.4s)"), std::string::npos);
  EXPECT_NE(out.find("**Result:** timed out after 2.0s"), std::string::npos);
  EXPECT_NE(out.find("**Result:** not run (an earlier step failed)"), std::string::npos);
  EXPECT_NE(out.find("**Result:** killed by signal 9 (0.1s, out of memory)"), std::string::npos);
}

namespace {

std::string parse_error(const std::string& text) {
  try {
    parse_document(text, "doc.md");
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::invalid_argument);
    return e.what();
  }
  return "";
}

}  // namespace

TEST(DocumentTest, BadInputNamesFileLineAndColumn) {
  EXPECT_EQ(parse_error("---\nimage: host\nbogus: 1\n---\n```bash\ntrue\n```\n"),
            "doc.md:3:1: front matter: unknown key 'bogus' (known: image, env, workdir, timeout, "
            "session, artifacts, "
            "on_error, user, network, cpus, memory, pids, disk, limits, output)");
  EXPECT_EQ(parse_error("---\ntimeout: soon\n---\n"),
            "doc.md:2:10: front matter: invalid timeout 'soon': expected a number with an optional "
            "unit (ms, s, m, h), e.g. "
            "30s");
  EXPECT_NE(parse_error("---\nenv: [1, 2\n---\n").find("doc.md:3:"), std::string::npos);
  EXPECT_NE(parse_error("---\nimage: host\n")
                .find("doc.md:1:1: front matter starting here is not closed"),
            std::string::npos);
  EXPECT_EQ(parse_error("# t\n\n```bash {name=\"x\" colour=red}\ntrue\n```\n"),
            "doc.md:3:19: unknown step attribute 'colour' (name, timeout, user, continue_on_error, "
            "skip)");
  EXPECT_EQ(parse_error("```bash {timeout=forever}\ntrue\n```\n").substr(0, 12), "doc.md:1:18:");
  EXPECT_EQ(parse_error("```bash name=x\ntrue\n```\n").substr(0, 11), "doc.md:1:9:");
  EXPECT_NE(parse_error("# t\n```bash\necho unclosed\n")
                .find("doc.md:2:1: the bash block starting here has no closing fence"),
            std::string::npos);
  EXPECT_EQ(parse_error("```bash\necho \xff\n```\n"), "doc.md:2: not valid UTF-8 text");
  EXPECT_EQ(parse_error(std::string("abc\0def", 7)), "doc.md: is a binary file, not markdown");
  EXPECT_NE(parse_error("---\nsession: ../x\n---\n").find("invalid session name"),
            std::string::npos);
  EXPECT_NE(parse_error("---\nartifacts: ../secret\n---\n").find("must be relative"),
            std::string::npos);
  EXPECT_NE(parse_error(
                "```bash\ntrue\n```\n<!-- upstream:result -->\n**Result:** exit 0\n\n# lost end\n")
                .find("has no end marker"),
            std::string::npos);
}

TEST(DocumentTest, NetworkInTheFrontMatter) {
  auto net = [](const std::string& fm) {
    return parse_document("---\n" + fm + "---\n```bash\ntrue\n```\n", "doc.md").meta.network;
  };
  EXPECT_FALSE(net("image: host\n").has_value());
  EXPECT_EQ(net("network: allow-all\n")->mode, NetworkMode::allow_all);
  EXPECT_EQ(describe(*net("network: none\n")), "none");
  // Lists make it custom, normalised as a box spec's are.
  auto n =
      net("network:\n  allow_domains: [PyPI.org, \"*.pythonhosted.org\"]\n"
          "  allow_cidrs: 10.1.2.3/8\n  deny_cidrs: [10.9.0.0/16]\n");
  ASSERT_TRUE(n);
  EXPECT_EQ(n->mode, NetworkMode::custom);
  EXPECT_EQ(n->egress.allow_domains, (std::vector<std::string>{"pypi.org", "*.pythonhosted.org"}));
  EXPECT_EQ(n->egress.allow_cidrs, (std::vector<std::string>{"10.0.0.0/8"}));
  EXPECT_EQ(describe(*n), "custom (pypi.org, *.pythonhosted.org, 10.0.0.0/8; denied 10.9.0.0/16)");
  EXPECT_EQ(describe(*net("network: custom\n")), "custom (nothing allowed)");
  EXPECT_EQ(parse_error("---\nnetwork: open\n---\n").substr(0, 60),
            "doc.md:2:10: front matter: invalid network mode 'open': use ");
  EXPECT_EQ(parse_error("---\nnetwork:\n  mode: none\n  allow_cidrs: [10.0.0.0/8]\n---\n"),
            "doc.md:3:3: front matter: network: allowed domains and allowed or denied CIDRs apply "
            "to network mode custom, not none");
  EXPECT_EQ(parse_error("---\nnetwork:\n  headers: {a: b}\n---\n").substr(0, 63),
            "doc.md:3:3: front matter: unknown network setting 'headers' (mo");
  EXPECT_EQ(parse_error("---\nnetwork:\n  allow_domains: [{a: b}]\n---\n"),
            "doc.md:3:19: front matter: 'allow_domains' must be a single value");
}

TEST(DocumentTest, CleanOutputLine) {
  EXPECT_EQ(clean_output_line("plain"), "plain");
  EXPECT_EQ(clean_output_line("10%\r50%\r100%"), "100%");
  EXPECT_EQ(clean_output_line("\x1b[31mred\x1b[0m"), "red");
  EXPECT_EQ(clean_output_line("a\x01"
                              "b"),
            "a\xef\xbf\xbd"
            "b");
  EXPECT_EQ(clean_output_line("bad \xff utf8"), "bad \xef\xbf\xbd utf8");
  EXPECT_EQ(clean_output_line("é 日本"), "é 日本");
}

TEST(DocumentTest, StepStateCarriesExportedVariables) {
  std::vector<std::pair<std::string, std::string>> env = {{"KEEP", "1"}, {"GONE", "x"}};
  const char raw[] = "/home/user/work\0+NEW=a=b\0+KEEP=2\0-GONE\0+PWD=/x\0+UPSTREAM_STEP=3\0";
  std::string state(raw, sizeof raw - 1);
  EXPECT_EQ(apply_step_state(state, env), "/home/user/work");
  ASSERT_EQ(env.size(), 2u);
  EXPECT_EQ(env[0], (std::pair<std::string, std::string>{"KEEP", "2"}));
  EXPECT_EQ(env[1], (std::pair<std::string, std::string>{"NEW", "a=b"}));
  std::vector<std::pair<std::string, std::string>> untouched = {{"A", "1"}};
  EXPECT_EQ(apply_step_state("", untouched), "");
  EXPECT_EQ(apply_step_state(std::string("relative\0+A=2\0", 14), untouched), "");
  EXPECT_EQ(untouched[0].second, "1");
}

TEST(DocumentTest, TheImageValueKeepsItsPosition) {
  // A checked image the engine does not know is reported where its value is written.
  Document d =
      parse_document("---\nenv:\n  A: b\nimage:   snap-1\n---\n```bash\ntrue\n```\n", "d.md");
  ASSERT_TRUE(d.meta.image);
  EXPECT_EQ(*d.meta.image, "snap-1");
  EXPECT_EQ(d.meta.image_line, 4u);
  EXPECT_EQ(d.meta.image_column, 10u);
}

TEST(DocumentTest, OtherBlocksAreListedButNotOurOwnOutput) {
  // A ruby block is no step: listed with its line. The written-back output (```text) is not.
  std::string src = "# T\n\n```bash\necho hi\n```\n\n```ruby\nputs 1\n```\n~~~json\n{}\n~~~\n";
  Document d = parse_document(src, "d.md");
  ASSERT_EQ(d.other_blocks.size(), 2u);
  EXPECT_EQ(d.other_blocks[0].lang, "ruby");
  EXPECT_EQ(d.other_blocks[0].line, 7u);
  EXPECT_EQ(d.other_blocks[1].lang, "json");
  EXPECT_EQ(d.other_blocks[1].line, 10u);
  std::string out = write_back(d, fake_reports(d), fake_summary());
  Document again = parse_document(out, "d.md");
  ASSERT_EQ(again.other_blocks.size(), 2u);
  EXPECT_EQ(again.other_blocks[0].lang, "ruby");
  size_t line = 1 + std::count(out.begin(), out.begin() + out.find("```ruby"), '\n');
  EXPECT_EQ(again.other_blocks[0].line, line);
}

// A tenant's session is stored as TENANT_NAME, named TENANT/NAME, shown as NAME.
TEST(SessionNames, TenantSessionsAreNamedAndShownAsTheTenantGaveThem) {
  EXPECT_EQ(stored_session_name("s1"), "s1");
  EXPECT_EQ(stored_session_name("acme/s1"), "acme_s1");
  for (const char* bad : {"/s1", "acme/", "ac_me/s1", "acme/s/1"})
    EXPECT_THROW(stored_session_name(bad), Error) << bad;
  SessionState s;
  s.name = "acme_s1";
  EXPECT_EQ(shown_session_name(s), "acme_s1");  // unrecorded: the stored name
  EXPECT_TRUE(session_belongs_to(s, "acme"));   // unrecorded: by its prefix
  EXPECT_TRUE(session_belongs_to(s, ""));
  s.tenant = "acme";
  EXPECT_EQ(shown_session_name(s), "s1");
  EXPECT_FALSE(session_belongs_to(s, ""));
  EXPECT_FALSE(session_belongs_to(s, "other"));
  s.tenant = "";  // the operator's, named like a tenant's
  EXPECT_EQ(shown_session_name(s), "acme_s1");
  EXPECT_FALSE(session_belongs_to(s, "acme"));
  EXPECT_TRUE(session_belongs_to(s, ""));
}
