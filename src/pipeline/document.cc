#include "pipeline/document.h"

#include <cmark.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <memory>

#include "common/error.h"
#include "common/strings.h"
#include "common/time.h"
#include "common/utf8.h"
#include "model/egress.h"

namespace upstream::pipeline {

std::string describe(const RunNetwork& n) {
  std::string out = to_string(n.mode);
  const Egress& e = n.egress;
  if (n.mode != NetworkMode::custom) return out;
  std::vector<std::string> allowed = e.allow_domains;
  allowed.insert(allowed.end(), e.allow_cidrs.begin(), e.allow_cidrs.end());
  out += " (" + (allowed.empty() ? std::string("nothing allowed") : join(allowed, ", "));
  if (!e.deny_cidrs.empty()) out += "; denied " + join(e.deny_cidrs, ", ");
  return out + ")";
}

namespace {

constexpr const char* kResultStart = "<!-- upstream:result -->";
constexpr const char* kResultEnd = "<!-- /upstream:result -->";
constexpr const char* kSummaryStart = "<!-- upstream:summary -->";
constexpr const char* kSummaryEnd = "<!-- /upstream:summary -->";

[[noreturn]] void fail_at(const std::string& path, size_t line, size_t col,
                          const std::string& what) {
  throw Error(Errc::invalid_argument, path + ":" + std::to_string(line) + ":" +
                                          std::to_string(std::max<size_t>(col, 1)) + ": " + what);
}

// Lines as CommonMark counts them: ended by \r\n, \n or \r.
struct Lines {
  std::vector<size_t> start;  // offset of each line's first byte
  std::vector<size_t> end;    // offset just past each line's content (before its ending)
  std::vector<size_t> next;   // offset of the following line (after the ending)

  explicit Lines(const std::string& s) {
    size_t i = 0;
    while (i < s.size()) {
      start.push_back(i);
      size_t j = i;
      while (j < s.size() && s[j] != '\n' && s[j] != '\r') j++;
      end.push_back(j);
      if (j < s.size() && s[j] == '\r' && j + 1 < s.size() && s[j + 1] == '\n')
        j += 2;
      else if (j < s.size())
        j += 1;
      next.push_back(j);
      i = j;
    }
    if (s.empty() || s.back() == '\n' || s.back() == '\r') {
      // A final empty line (after a trailing line ending) has no content; it is not counted.
    }
  }
  size_t count() const { return start.size(); }
  std::string_view text(const std::string& s, size_t line) const {  // 1-based
    return std::string_view(s).substr(start[line - 1], end[line - 1] - start[line - 1]);
  }
};

bool is_blank(std::string_view line) {
  for (char c : line)
    if (c != ' ' && c != '\t') return false;
  return true;
}

bool fence_delimiter_line(std::string_view line) {
  std::string t = trim(line);
  return t == "---" || t == "...";
}

// The length of the backtick run that opens a fenced block on this line (0 if none).
size_t backtick_fence(std::string_view line) {
  size_t n = 0;
  while (n < line.size() && line[n] == '`') n++;
  return n >= 3 ? n : 0;
}

// Whether the line closes a backtick fence of `ticks` (only backticks, at least as many).
bool closes_fence(std::string_view line, size_t ticks) {
  return line.size() >= ticks && line.find_first_not_of('`') == std::string_view::npos;
}

std::string node_text(cmark_node* n) {
  std::string out;
  for (cmark_node* c = cmark_node_first_child(n); c; c = cmark_node_next(c)) {
    cmark_node_type t = cmark_node_get_type(c);
    if (t == CMARK_NODE_TEXT || t == CMARK_NODE_CODE) {
      if (const char* lit = cmark_node_get_literal(c)) out += lit;
    } else if (t == CMARK_NODE_SOFTBREAK || t == CMARK_NODE_LINEBREAK) {
      out += ' ';
    } else {
      out += node_text(c);
    }
  }
  return out;
}

// cmark 0.30 reports an end line one before the start line for a one-line HTML block.
int block_end_line(cmark_node* n) {
  return std::max(cmark_node_get_start_line(n), cmark_node_get_end_line(n));
}

bool html_starts_with(cmark_node* n, const char* marker) {
  if (!n || cmark_node_get_type(n) != CMARK_NODE_HTML_BLOCK) return false;
  const char* lit = cmark_node_get_literal(n);
  return lit && trim(lit) == marker;
}

std::string runner_for(const std::string& lang) {
  if (lang == "bash" || lang == "sh") return "bash";
  if (lang == "python" || lang == "python3") return "python3";
  if (lang == "node" || lang == "js" || lang == "javascript") return "node";
  return "";
}

bool parse_bool(const std::string& v, bool& out) {
  std::string l = v;
  for (auto& c : l) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (l == "true" || l == "yes" || l == "1") return out = true, true;
  if (l == "false" || l == "no" || l == "0") return out = false, true;
  return false;
}

// --- front matter ----------------------------------------------------------------------------

struct YamlWhere {
  const std::string& path;
  size_t first_line;  // file line of the YAML text's first line
  [[noreturn]] void at(const YAML::Node& n, const std::string& what) const {
    auto m = n.Mark();
    fail_at(path, first_line + static_cast<size_t>(std::max(m.line, 0)),
            static_cast<size_t>(std::max(m.column, 0)) + 1, "front matter: " + what);
  }
};

std::string scalar(const YAML::Node& n, const YamlWhere& w, const std::string& key) {
  if (!n.IsScalar()) w.at(n, "'" + key + "' must be a single value");
  return n.Scalar();
}

void apply_limit(Limits& l, const std::string& key, const YAML::Node& v, const YamlWhere& w) {
  std::string text = scalar(v, w, key);
  try {
    if (key == "cpus")
      l.cpu_milli = parse_cpus_milli(text);
    else if (key == "memory")
      l.memory = parse_size(text, "memory limit");
    else if (key == "disk")
      l.disk = parse_size(text, "disk limit");
    else if (key == "pids") {
      if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos ||
          text.size() > 9)
        throw Error(Errc::invalid_argument,
                    "invalid pids limit '" + text + "': expected a whole number");
      l.pids = std::stoull(text);
    }
  } catch (const Error& e) {
    w.at(v, e.what());
  }
}

// `network: allow-all`, or a map whose lists make it custom:
//   network: {allow_domains: [pypi.org, "*.pythonhosted.org"], allow_cidrs: [10.0.0.0/8]}
RunNetwork parse_network(const YAML::Node& v, const YamlWhere& w) {
  RunNetwork n;
  auto mode = [&](const YAML::Node& m) {
    try {
      n.mode = parse_network_mode(scalar(m, w, "network"));
    } catch (const Error& e) {
      w.at(m, e.what());
    }
  };
  if (v.IsScalar()) {
    mode(v);
  } else if (v.IsMap()) {
    n.mode = NetworkMode::custom;
    for (auto e = v.begin(); e != v.end(); ++e) {
      std::string k = e->first.IsScalar() ? e->first.Scalar() : "";
      YAML::Node val = e->second;
      std::vector<std::string>* list = k == "allow_domains" ? &n.egress.allow_domains
                                       : k == "allow_cidrs" ? &n.egress.allow_cidrs
                                       : k == "deny_cidrs"  ? &n.egress.deny_cidrs
                                                            : nullptr;
      if (k == "mode") {
        mode(val);
      } else if (!list) {
        w.at(e->first, "unknown network setting '" + k +
                           "' (mode, allow_domains, allow_cidrs, deny_cidrs; headers are given "
                           "to a box, never in a document)");
      } else if (val.IsSequence()) {
        for (const auto& x : val) list->push_back(scalar(x, w, k));
      } else {
        list->push_back(scalar(val, w, k));
      }
    }
  } else {
    w.at(v,
         "'network' must be none, allow-all or custom, or map allow_domains, allow_cidrs and "
         "deny_cidrs to lists");
  }
  try {
    egress::validate(n.mode, n.egress);
  } catch (const Error& e) {
    w.at(v, "network: " + std::string(e.what()));
  }
  return n;
}

FrontMatter parse_front_matter(const std::string& yaml, const YamlWhere& w) {
  FrontMatter fm;
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::ParserException& e) {
    fail_at(w.path, w.first_line + static_cast<size_t>(std::max(e.mark.line, 0)),
            static_cast<size_t>(std::max(e.mark.column, 0)) + 1, "front matter: " + e.msg);
  }
  if (!root || root.IsNull()) return fm;
  if (!root.IsMap()) w.at(root, "expected key: value pairs");
  for (auto it = root.begin(); it != root.end(); ++it) {
    YAML::Node k = it->first;  // copies: the iterator hands out temporaries
    YAML::Node v = it->second;
    std::string key = k.IsScalar() ? k.Scalar() : "";
    if (key == "image") {
      fm.image = scalar(v, w, key);
      auto m = v.Mark();
      fm.image_line = w.first_line + static_cast<size_t>(std::max(m.line, 0));
      fm.image_column = static_cast<size_t>(std::max(m.column, 0)) + 1;
    } else if (key == "workdir") {
      std::string d = scalar(v, w, key);
      if (d.empty() || d[0] != '/') w.at(v, "'workdir' must be an absolute path");
      fm.workdir = d;
    } else if (key == "session") {
      std::string s = scalar(v, w, key);
      if (!valid_box_name(s))
        w.at(v, "invalid session name '" + s + "' (letters, digits, '_', '.', '-')");
      fm.session = s;
    } else if (key == "user") {
      fm.user = scalar(v, w, key);
    } else if (key == "timeout") {
      try {
        fm.timeout_ms = parse_duration_ms(scalar(v, w, key), "timeout");
      } catch (const Error& e) {
        w.at(v, e.what());
      }
    } else if (key == "on_error") {
      std::string s = scalar(v, w, key);
      if (s != "stop" && s != "continue")
        w.at(v, "'on_error' must be stop or continue, not '" + s + "'");
      fm.on_error = s;
    } else if (key == "env") {
      if (!v.IsMap()) w.at(v, "'env' must map names to values");
      for (auto e = v.begin(); e != v.end(); ++e) {
        std::string name = e->first.IsScalar() ? e->first.Scalar() : "";
        if (!valid_env_name(name))
          w.at(e->first, "invalid environment variable name '" + name + "'");
        if (!e->second.IsScalar() && !e->second.IsNull())
          w.at(e->second, "the value of " + name + " must be text");
        fm.env.emplace_back(name, e->second.IsNull() ? "" : e->second.Scalar());
      }
    } else if (key == "artifacts") {
      if (v.IsScalar()) {
        fm.artifacts.push_back(v.Scalar());
      } else if (v.IsSequence()) {
        for (const auto& g : v) fm.artifacts.push_back(scalar(g, w, "artifacts"));
      } else {
        w.at(v, "'artifacts' must be a glob or a list of globs");
      }
      for (const auto& g : fm.artifacts)
        if (g.empty() || g[0] == '/' || g.find("..") != std::string::npos)
          w.at(v,
               "artifact glob '" + g + "' must be relative and stay inside the working directory");
    } else if (key == "network") {
      fm.network = parse_network(v, w);
    } else if (key == "cpus" || key == "memory" || key == "pids" || key == "disk") {
      apply_limit(fm.limits, key, v, w);
    } else if (key == "limits") {
      if (!v.IsMap()) w.at(v, "'limits' must map cpus, memory, pids and disk to values");
      for (auto e = v.begin(); e != v.end(); ++e) {
        std::string lk = e->first.IsScalar() ? e->first.Scalar() : "";
        if (lk != "cpus" && lk != "memory" && lk != "pids" && lk != "disk")
          w.at(e->first, "unknown limit '" + lk + "' (cpus, memory, pids, disk)");
        apply_limit(fm.limits, lk, e->second, w);
      }
    } else if (key == "output") {
      if (!v.IsMap()) w.at(v, "'output' must map head and tail to line counts");
      for (auto e = v.begin(); e != v.end(); ++e) {
        std::string ok = e->first.IsScalar() ? e->first.Scalar() : "";
        if (ok != "head" && ok != "tail")
          w.at(e->first, "unknown output setting '" + ok + "' (head, tail)");
        std::string n = scalar(e->second, w, ok);
        if (n.empty() || n.size() > 6 || n.find_first_not_of("0123456789") != std::string::npos)
          w.at(e->second, "'" + ok + "' must be a number of lines");
        (ok == "head" ? fm.head_lines : fm.tail_lines) = std::stoi(n);
      }
    } else {
      w.at(k, "unknown key '" + key +
                  "' (known: image, env, workdir, timeout, session, artifacts, on_error, user, "
                  "network, cpus, memory, pids, disk, limits, output)");
    }
  }
  return fm;
}

}  // namespace

// --- attributes ------------------------------------------------------------------------------

Attributes parse_attributes(std::string_view text, const std::string& where, size_t line,
                            size_t offset) {
  Attributes a;
  size_t i = 0;
  auto err = [&](size_t at, const std::string& what) {
    fail_at(where, line, offset + at + 1, what);
  };
  auto skip_space = [&] {
    while (i < text.size() && (text[i] == ' ' || text[i] == '\t' || text[i] == ',')) i++;
  };
  while (true) {
    skip_space();
    if (i >= text.size()) break;
    size_t key_at = i;
    std::string key;
    while (i < text.size() &&
           (std::isalnum(static_cast<unsigned char>(text[i])) || text[i] == '_' || text[i] == '-'))
      key += text[i++];
    if (key.empty()) err(i, std::string("unexpected '") + text[i] + "' in step attributes");
    std::optional<std::string> value;
    size_t value_at = i;
    if (i < text.size() && text[i] == '=') {
      i++;
      value_at = i;
      if (i < text.size() && (text[i] == '"' || text[i] == '\'')) {
        char q = text[i++];
        std::string v;
        while (i < text.size() && text[i] != q) {
          if (text[i] == '\\' && i + 1 < text.size()) i++;
          v += text[i++];
        }
        if (i >= text.size()) err(value_at, "unterminated quoted value for '" + key + "'");
        i++;
        value = v;
      } else {
        std::string v;
        while (i < text.size() && text[i] != ' ' && text[i] != '\t' && text[i] != ',')
          v += text[i++];
        if (v.empty()) err(value_at, "missing value for '" + key + "'");
        value = v;
      }
    }
    if (key == "name") {
      if (!value || value->empty()) err(key_at, "'name' needs a value, e.g. name=\"fetch data\"");
      a.name = *value;
    } else if (key == "timeout") {
      if (!value) err(key_at, "'timeout' needs a value, e.g. timeout=120");
      try {
        a.timeout_ms = parse_duration_ms(*value, "timeout");
      } catch (const Error& e) {
        err(value_at, e.what());
      }
    } else if (key == "user") {
      if (!value || value->empty()) err(key_at, "'user' needs a value");
      a.user = *value;
    } else if (key == "continue_on_error" || key == "skip") {
      bool b = true;
      if (value && !parse_bool(*value, b)) err(value_at, "'" + key + "' must be true or false");
      (key == "skip" ? a.skip : a.continue_on_error) = b;
    } else {
      err(key_at,
          "unknown step attribute '" + key + "' (name, timeout, user, continue_on_error, skip)");
    }
  }
  return a;
}

// --- parsing ---------------------------------------------------------------------------------

namespace {

// 1-based line of a byte offset.
size_t line_of(const std::string& source, size_t offset) {
  return 1 + static_cast<size_t>(
                 std::count(source.begin(), source.begin() + static_cast<long>(offset), '\n'));
}

// Refuses what is not markdown text: binary files, invalid UTF-8, lone carriage returns (old Mac
// line endings are line endings to CommonMark but to little else; such a document is refused
// rather than half understood).
void check_text(const std::string& source, const std::string& path) {
  if (source.find('\0') != std::string::npos)
    throw Error(Errc::invalid_argument, path + ": is a binary file, not markdown");
  if (size_t bad = first_invalid_utf8(source); bad != std::string::npos)
    throw Error(Errc::invalid_argument,
                path + ":" + std::to_string(line_of(source, bad)) + ": not valid UTF-8 text");
  for (size_t i = 0; i < source.size(); i++)
    if (source[i] == '\r' && (i + 1 == source.size() || source[i + 1] != '\n'))
      throw Error(
          Errc::invalid_argument,
          path + ":" + std::to_string(line_of(source, i)) +
              ": a carriage return that does not end a line (use \\n or \\r\\n line endings)");
}

// One document being parsed: its text, its lines, and where its body (after the front matter)
// starts, for turning the markdown parser's body-relative lines into the file's.
struct Parse {
  const std::string& source;
  const std::string& path;
  Document& doc;
  Lines lines;
  size_t body_line = 1;

  Parse(const std::string& src, const std::string& p, Document& d)
      : source(src), path(p), doc(d), lines(src) {}

  size_t file_line(int body_relative) const {
    return body_line - 1 + static_cast<size_t>(body_relative);
  }
  size_t line_end_offset(size_t l) const {
    return l <= lines.count() ? lines.end[l - 1] : source.size();
  }
  // A line without its container prefix (spaces, tabs, '>') and trailing blanks.
  std::string bare(size_t l) const {
    std::string_view t = lines.text(source, l);
    size_t b = 0;
    while (b < t.size() && (t[b] == ' ' || t[b] == '\t' || t[b] == '>')) b++;
    size_t e = t.size();
    while (e > b && (t[e - 1] == ' ' || t[e - 1] == '\t')) e--;
    return std::string(t.substr(b, e - b));
  }

  // Front matter: the first line is --- and a later line --- or ... closes it.
  void front_matter() {
    if (lines.count() == 0 || trim(lines.text(source, 1)) != "---") return;
    size_t close = 0;
    for (size_t l = 2; l <= lines.count(); l++)
      if (fence_delimiter_line(lines.text(source, l))) {
        close = l;
        break;
      }
    if (!close)
      fail_at(path, 1, 1, "front matter starting here is not closed (end it with a --- line)");
    std::string yaml =
        source.substr(lines.start[1], close > 2 ? lines.start[close - 1] - lines.start[1] : 0);
    doc.meta = parse_front_matter(yaml, YamlWhere{path, 2});
    body_line = close + 1;
    doc.body_start = lines.next[close - 1];
  }

  // An existing summary: the first block of the body, up to its end marker.
  void summary(cmark_node* root) {
    cmark_node* first = cmark_node_first_child(root);
    if (!html_starts_with(first, kSummaryStart)) return;
    for (cmark_node* n = cmark_node_next(first); n; n = cmark_node_next(n)) {
      if (!html_starts_with(n, kSummaryEnd)) continue;
      doc.summary_at = lines.start[file_line(cmark_node_get_start_line(first)) - 1];
      size_t end_line = file_line(block_end_line(n));
      size_t end = lines.next[end_line - 1];
      // The blank line we put after the summary is ours too.
      if (end_line < lines.count() && is_blank(lines.text(source, end_line + 1)))
        end = lines.next[end_line];
      doc.summary_end = end;
      return;
    }
  }

  // The step's attributes: {...} after the language in the info string (`p` is where the
  // language ends).
  void attributes(Step& s, const std::string& info, size_t p) const {
    std::string rest = info.substr(p);
    size_t lead = rest.find_first_not_of(" \t");
    if (lead == std::string::npos) return;
    std::string_view open_line = lines.text(source, s.line);
    size_t info_col = open_line.find(info) != std::string_view::npos ? open_line.find(info) : 0;
    std::string attrs = trim(rest);
    size_t attrs_col = info_col + p + lead;
    if (attrs.front() != '{' || attrs.back() != '}')
      fail_at(path, s.line, attrs_col + 1,
              "step attributes go in braces, e.g. ```bash {name=\"build\" timeout=60}");
    Attributes a = parse_attributes(std::string_view(attrs).substr(1, attrs.size() - 2), path,
                                    s.line, attrs_col + 1);
    if (a.name) s.name = *a.name;
    s.timeout_ms = a.timeout_ms;
    s.user = a.user;
    s.continue_on_error = a.continue_on_error;
    s.skip = a.skip;
  }

  // The closing fence must be there, in the block's own container (a block quote that ends
  // closes the block without one): results are written after it. Sets where they go.
  void closing_fence(Step& s, cmark_node* n, std::string_view opening, char fence_char,
                     int fence_len) const {
    size_t close_line = file_line(cmark_node_get_end_line(n));
    std::string_view close =
        close_line <= lines.count() ? lines.text(source, close_line) : std::string_view();
    size_t k = 0;
    while (k < close.size() && (close[k] == ' ' || close[k] == '\t' || close[k] == '>')) k++;
    size_t run = 0;
    while (k + run < close.size() && close[k + run] == fence_char) run++;
    size_t fence_col = static_cast<size_t>(std::max(cmark_node_get_start_column(n), 1)) - 1;
    std::string_view open_prefix = opening.substr(0, std::min(opening.size(), fence_col));
    bool same_container = std::count(close.begin(), close.begin() + static_cast<long>(k), '>') ==
                          std::count(open_prefix.begin(), open_prefix.end(), '>');
    if (close_line == s.line || run < static_cast<size_t>(fence_len) ||
        !is_blank(close.substr(k + run)) || !same_container)
      fail_at(path, s.line, 1,
              "the " + s.lang +
                  " block starting here has no closing fence; close it so results can be written "
                  "after it");
    // What we write after the block must land in the block's container: the opening line up to
    // the fence, with list markers turned into the spaces that continue the list item.
    s.prefix.clear();
    for (size_t i = 0; i < fence_col && i < opening.size(); i++)
      s.prefix += (opening[i] == '>' || opening[i] == '\t') ? opening[i] : ' ';
    s.insert_at = line_end_offset(close_line);
    result_section(s, close_line);
  }

  // The result section an earlier run wrote right after the block: found by its text, the way
  // write-back lays it out (an optional blank line, then the markers, each line behind the
  // block's container prefix), so a re-run finds exactly what the last run wrote.
  void result_section(Step& s, size_t close_line) const {
    size_t marker = close_line + 1;
    if (marker <= lines.count() && bare(marker).empty()) marker++;
    if (marker > lines.count() || bare(marker) != kResultStart) return;
    size_t l = marker + 1;
    while (l <= lines.count() && bare(l) != kResultEnd) {
      if (bare(l) == kResultStart || bare(l) == kSummaryStart) {
        l = lines.count() + 1;
      } else if (size_t ticks = backtick_fence(bare(l))) {
        // The output block: its lines are the step's output, which may look like anything (a
        // marker included), so the section goes on after the fence that closes it.
        l++;
        while (l <= lines.count() && !closes_fence(bare(l), ticks)) l++;
        if (l <= lines.count()) l++;
      } else {
        l++;
      }
    }
    if (l > lines.count())
      fail_at(path, marker, 1,
              "this result section has no end marker (" + std::string(kResultEnd) +
                  "); remove the section");
    s.replace_end = line_end_offset(l);
  }

  // A fenced code block: a step when its language has a runner, else an other block. `heading`
  // names the first step below it that has no name of its own (`heading_used` then).
  void code_block(cmark_node* n, const std::string& heading, bool& heading_used,
                  std::vector<Document::OtherBlock>& others) {
    // Indented code blocks have no info string, so they are never steps.
    const char* info_c = cmark_node_get_fence_info(n);
    std::string info = info_c ? info_c : "";
    if (info.empty()) return;
    // The opening fence: its character and length (cmark gives the column where it starts).
    std::string_view opening = lines.text(source, file_line(cmark_node_get_start_line(n)));
    size_t col = static_cast<size_t>(std::max(cmark_node_get_start_column(n), 1)) - 1;
    while (col < opening.size() && opening[col] == ' ') col++;
    char fence_char = col < opening.size() ? opening[col] : 0;
    if (fence_char != '`' && fence_char != '~') return;
    int fence_len = 0;
    while (col + static_cast<size_t>(fence_len) < opening.size() &&
           opening[col + static_cast<size_t>(fence_len)] == fence_char)
      fence_len++;
    std::string lang;
    size_t p = 0;
    while (p < info.size() && info[p] != ' ' && info[p] != '\t' && info[p] != '{')
      lang += info[p++];
    std::string runner = runner_for(lang);
    if (runner.empty()) {  // not a step: left alone
      others.push_back({file_line(cmark_node_get_start_line(n)), lang});
      return;
    }
    Step s;
    s.index = static_cast<int>(doc.steps.size()) + 1;
    s.lang = lang;
    s.runner = runner;
    const char* lit = cmark_node_get_literal(n);
    s.code = lit ? lit : "";
    s.line = file_line(cmark_node_get_start_line(n));
    attributes(s, info, p);
    if (s.name.empty() && !heading_used && !heading.empty()) s.name = heading;
    heading_used = true;
    if (s.name.empty()) {
      for (const auto& l : split(s.code, '\n'))
        if (!trim(l).empty()) {
          s.name = trim(l);
          break;
        }
      if (s.name.empty()) s.name = s.lang;
    }
    if (s.name.size() > 60) s.name = s.name.substr(0, 57) + "...";
    closing_fence(s, n, opening, fence_char, fence_len);
    doc.steps.push_back(std::move(s));
  }

  // A code block inside a section of ours (a damaged or hand-edited document can have one) is
  // output, not a step: the section is replaced as a whole.
  void drop_blocks_in_our_sections(std::vector<Document::OtherBlock>& others) {
    std::vector<Step> kept;
    size_t owned_until = 0;
    for (auto& s : doc.steps) {
      size_t at = lines.start[s.line - 1];
      if ((doc.summary_end && at >= doc.summary_at && at < *doc.summary_end) || at < owned_until)
        continue;
      if (s.replace_end) owned_until = std::max(owned_until, *s.replace_end);
      s.index = static_cast<int>(kept.size()) + 1;
      kept.push_back(std::move(s));
    }
    doc.steps = std::move(kept);
    for (auto& o : others) {
      size_t at = lines.start[o.line - 1];
      bool in_ours = doc.summary_end && at >= doc.summary_at && at < *doc.summary_end;
      for (const auto& st : doc.steps)
        in_ours = in_ours || (st.replace_end && at >= st.insert_at && at < *st.replace_end);
      if (!in_ours) doc.other_blocks.push_back(std::move(o));
    }
  }

  // The document's own line ending is used for everything we insert: the more common one among
  // the lines that are not in our sections (so that writing sections cannot change it).
  void line_ending() {
    size_t crlf = 0, lf = 0;
    std::vector<std::pair<size_t, size_t>> spans;
    if (doc.summary_end) spans.emplace_back(doc.summary_at, *doc.summary_end);
    for (const auto& st : doc.steps)
      if (st.replace_end) spans.emplace_back(st.insert_at, *st.replace_end);
    std::sort(spans.begin(), spans.end());
    size_t next_span = 0;
    auto ours = [&](size_t at) {  // called with increasing offsets
      while (next_span < spans.size() && spans[next_span].second <= at) next_span++;
      return next_span < spans.size() && at >= spans[next_span].first;
    };
    for (size_t i = 0; i < lines.count(); i++) {
      size_t e = lines.end[i];
      if (e >= source.size() || ours(e)) continue;
      if (source[e] == '\r' && e + 1 < source.size() && source[e + 1] == '\n')
        crlf++;
      else
        lf++;
    }
    doc.eol = crlf > lf ? "\r\n" : "\n";
  }
};

}  // namespace

Document parse_document(const std::string& source, const std::string& path) {
  Document doc;
  doc.path = path;
  doc.source = source;
  check_text(source, path);
  Parse ps(source, path, doc);
  ps.front_matter();
  doc.summary_at = doc.body_start;

  std::string body = source.substr(doc.body_start);
  std::unique_ptr<cmark_node, decltype(&cmark_node_free)> root(
      cmark_parse_document(body.data(), body.size(), CMARK_OPT_DEFAULT), cmark_node_free);
  if (!root) throw Error("markdown parser failed");
  ps.summary(root.get());

  std::string heading;
  bool heading_used = true;
  std::vector<Document::OtherBlock> others;
  std::unique_ptr<cmark_iter, decltype(&cmark_iter_free)> iter(cmark_iter_new(root.get()),
                                                               cmark_iter_free);
  cmark_event_type ev;
  while ((ev = cmark_iter_next(iter.get())) != CMARK_EVENT_DONE) {
    if (ev != CMARK_EVENT_ENTER) continue;
    cmark_node* n = cmark_iter_get_node(iter.get());
    cmark_node_type type = cmark_node_get_type(n);
    if (type == CMARK_NODE_HEADING) {
      heading = trim(node_text(n));
      heading_used = false;
    } else if (type == CMARK_NODE_CODE_BLOCK) {
      ps.code_block(n, heading, heading_used, others);
    }
  }
  ps.drop_blocks_in_our_sections(others);
  ps.line_ending();
  return doc;
}

// --- writing back ----------------------------------------------------------------------------

std::string clean_output_line(std::string_view raw) {
  // What a terminal would show: text after the last carriage return (progress bars).
  while (!raw.empty() && raw.back() == '\r') raw.remove_suffix(1);
  if (auto cr = raw.rfind('\r'); cr != std::string_view::npos) raw = raw.substr(cr + 1);
  std::string out;
  size_t i = 0;
  while (i < raw.size()) {
    unsigned char c = static_cast<unsigned char>(raw[i]);
    if (c == 0x1b) {  // escape sequences (colours, cursor movement) are dropped
      i++;
      if (i < raw.size() && raw[i] == '[') {
        i++;
        while (i < raw.size() && !(raw[i] >= 0x40 && raw[i] <= 0x7e)) i++;
        i++;
      } else if (i < raw.size() && raw[i] == ']') {
        while (i < raw.size() && raw[i] != '\a' &&
               !(raw[i] == 0x1b && i + 1 < raw.size() && raw[i + 1] == '\\'))
          i++;
        i += (i < raw.size() && raw[i] == 0x1b) ? 2 : 1;
      } else {
        i++;
      }
      continue;
    }
    if (c < 0x20 && c != '\t') {
      out += "\xef\xbf\xbd";
      i++;
      continue;
    }
    if (c == 0x7f) {
      i++;
      continue;
    }
    size_t bad = first_invalid_utf8(raw.substr(i, std::min<size_t>(4, raw.size() - i)));
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || bad == 0 || (bad != std::string::npos && bad < n)) {
      out += "\xef\xbf\xbd";
      i++;
      continue;
    }
    out.append(raw.substr(i, n));
    i += n;
  }
  return out;
}

namespace {

std::string seconds(int64_t ms) {
  char buf[32];
  if (ms < 60'000) {
    std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ms) / 1000.0);
    return buf;
  }
  return format_duration_ms(static_cast<uint64_t>(ms));
}

std::string result_line(const StepReport& r) {
  if (r.status == "skipped") return "skipped";
  if (r.status == "not run")
    return "not run (" + (r.note.empty() ? std::string("an earlier step failed") : r.note) + ")";
  if (r.status == "interrupted") return "interrupted after " + seconds(r.duration_ms);
  if (r.status == "timed out") return "timed out after " + seconds(r.duration_ms);
  std::string s;
  if (r.exit_code)
    s = "exit " + std::to_string(*r.exit_code);
  else if (r.signal)
    s = "killed by signal " + std::to_string(r.signal);
  else
    s = "did not start";
  s += " (" + seconds(r.duration_ms);
  if (!r.note.empty()) s += ", " + r.note;
  return s + ")";
}

size_t longest_backtick_run(const std::vector<std::string>& lines) {
  size_t best = 0;
  for (const auto& l : lines) {
    size_t run = 0;
    for (char c : l) {
      run = c == '`' ? run + 1 : 0;
      best = std::max(best, run);
    }
  }
  return best;
}

std::string rstrip(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.pop_back();
  return s;
}

std::string result_section(const Document& doc, const Step& step, const StepReport& r) {
  const std::string& eol = doc.eol;
  const std::string& p = step.prefix;
  std::string out;
  auto line = [&](const std::string& text) { out += eol + (text.empty() ? rstrip(p) : p + text); };
  line("");
  line(kResultStart);
  line("**Result:** " + result_line(r));
  if (!r.structured.empty()) {
    // A code span needs a backtick run longer than any inside it.
    size_t ticks = longest_backtick_run({r.structured}) + 1;
    std::string fence(ticks, '`');
    bool pad = r.structured.front() == '`' || r.structured.back() == '`';
    line("");
    line("**Output:** " + fence + (pad ? " " : "") + r.structured + (pad ? " " : "") + fence);
  }
  if (!r.lines.empty() || r.cut_lines) {
    std::string fence(std::max<size_t>(3, longest_backtick_run(r.lines) + 1), '`');
    line(fence + "text");
    for (size_t i = 0; i <= r.lines.size(); i++) {
      if (r.cut_lines && i == r.cut_at)
        line("[... " + std::to_string(r.cut_lines) + " line" + (r.cut_lines == 1 ? "" : "s") +
             " cut" + (r.cut_note.empty() ? "" : "; the whole output: " + r.cut_note) + " ...]");
      if (i < r.lines.size()) line(r.lines[i]);
    }
    line(fence);
  }
  line(kResultEnd);
  return out;
}

std::string summary_section(const Document& doc, const Summary& s) {
  const std::string& eol = doc.eol;
  std::string when = format_time(s.started_at);
  if (when.size() >= 19) when = when.substr(0, 10) + " " + when.substr(11, 8) + " UTC";
  std::string line = "> **upstream run** `" + s.run_id + "`";
  if (!s.session.empty()) line += " · session `" + s.session + "` turn " + std::to_string(s.turn);
  line += " · " + when + " · " + seconds(s.duration_ms) + " · **" + s.status + "** (" +
          std::to_string(s.ok) + " of " + std::to_string(s.steps) + " steps succeeded";
  if (s.failed) line += ", " + std::to_string(s.failed) + " failed";
  if (s.skipped) line += ", " + std::to_string(s.skipped) + " skipped";
  if (s.interrupted) line += ", " + std::to_string(s.interrupted) + " interrupted";
  line += ")";
  std::string out;
  // A document whose front matter ends without a line ending needs one first.
  if (doc.summary_at == doc.source.size() && !doc.source.empty() && doc.source.back() != '\n' &&
      doc.source.back() != '\r')
    out += eol;
  out += std::string(kSummaryStart) + eol + line + eol + kSummaryEnd + eol + eol;
  return out;
}

}  // namespace

std::string write_back(const Document& doc, const std::vector<std::optional<StepReport>>& reports,
                       const std::optional<Summary>& summary) {
  struct Edit {
    size_t begin, end;
    std::string text;
  };
  std::vector<Edit> edits;
  if (summary)
    edits.push_back(
        {doc.summary_at, doc.summary_end.value_or(doc.summary_at), summary_section(doc, *summary)});
  for (size_t i = 0; i < doc.steps.size() && i < reports.size(); i++) {
    if (!reports[i]) continue;
    const Step& s = doc.steps[i];
    edits.push_back(
        {s.insert_at, s.replace_end.value_or(s.insert_at), result_section(doc, s, *reports[i])});
  }
  std::stable_sort(edits.begin(), edits.end(),
                   [](const Edit& a, const Edit& b) { return a.begin < b.begin; });
  std::string out;
  out.reserve(doc.source.size() + 4096);
  size_t pos = 0;
  for (const auto& e : edits) {
    if (e.begin < pos) continue;  // overlapping edits cannot happen for a parsed document
    out.append(doc.source, pos, e.begin - pos);
    out += e.text;
    pos = e.end;
  }
  out.append(doc.source, pos, std::string::npos);
  return out;
}

namespace {

// A step's line number as if none of our sections were in the document.
size_t content_line(const Document& d, size_t i) {
  size_t start = 0, ours = 0;
  for (size_t l = 0, seen = 1; l < d.source.size() && seen < d.steps[i].line; l++)
    if (d.source[l] == '\n') {
      seen++;
      start = l + 1;
    }
  auto count = [&](size_t b, size_t e) {
    e = std::min(e, start);
    return b < e ? static_cast<size_t>(std::count(d.source.begin() + static_cast<long>(b),
                                                  d.source.begin() + static_cast<long>(e), '\n'))
                 : 0;
  };
  if (d.summary_end) ours += count(d.summary_at, *d.summary_end);
  for (size_t j = 0; j < i; j++)
    if (d.steps[j].replace_end) ours += count(d.steps[j].insert_at, *d.steps[j].replace_end);
  return d.steps[i].line - ours;
}

}  // namespace

bool reparses_same(const Document& doc, const std::string& written, Document& again) {
  try {
    again = parse_document(written, doc.path);
  } catch (const Error&) {
    return false;
  }
  if (again.steps.size() != doc.steps.size()) return false;
  for (size_t i = 0; i < doc.steps.size(); i++)
    if (again.steps[i].code != doc.steps[i].code || again.steps[i].runner != doc.steps[i].runner ||
        !again.steps[i].replace_end || content_line(again, i) != content_line(doc, i))
      return false;
  return true;
}

}  // namespace upstream::pipeline
