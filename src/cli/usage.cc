// Help pages and the words of parse errors: what the user typed, named, with the closest
// command or flag when one is near. The parser library's own wording never reaches the user.
#include <iostream>
#include <map>

#include "cli/cli.h"
#include "common/strings.h"

namespace upstream::cli {

namespace {

std::map<const CLI::App*, std::string>& usages() {
  static std::map<const CLI::App*, std::string> m;
  return m;
}

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

class Formatter : public CLI::Formatter {
 public:
  std::string make_usage(const CLI::App* app, std::string name) const override {
    auto it = usages().find(app);
    if (it == usages().end()) return CLI::Formatter::make_usage(app, name);
    return "Usage: " + name + " " + it->second + "\n";
  }
  // Positionals in capitals, "..." for those that take several, [brackets] when optional.
  std::string make_option_usage(const CLI::Option* opt) const override {
    if (!opt->get_positional()) return CLI::Formatter::make_option_usage(opt);
    std::string n = upper(opt->get_name());
    if (opt->get_items_expected_max() > 1) n += "...";
    return opt->get_required() ? n : "[" + n + "]";
  }
};

// The command the parse had reached: the deepest subcommand selected.
const CLI::App* reached(const CLI::App& app) {
  const CLI::App* cur = &app;
  for (;;) {
    auto subs = cur->get_subcommands();
    if (subs.empty()) return cur;
    cur = subs.front();
  }
}

std::string path_of(const CLI::App* a) {
  std::vector<std::string> names;
  for (; a; a = a->get_parent()) names.insert(names.begin(), a->get_name());
  return join(names, " ");
}

std::vector<std::string> command_names(const CLI::App* a) {
  std::vector<std::string> out;
  for (const auto* s :
       a->get_subcommands([](const CLI::App* s) { return !s->get_group().empty(); }))
    out.push_back(s->get_name());
  return out;
}

std::vector<std::string> flag_names(const CLI::App* a) {
  std::vector<std::string> out;
  for (const auto* o : a->get_options()) {
    if (!o->nonpositional()) continue;
    for (const auto& l : o->get_lnames()) out.push_back("--" + l);
    for (const auto& s : o->get_snames()) out.push_back("-" + s);
  }
  return out;
}

std::string suggestion(const std::string& word, const std::vector<std::string>& candidates) {
  auto m = closest_match(word, candidates);
  return m ? "; did you mean " + *m + "?" : "";
}

// The usage line of a command, without its "Usage: " label.
std::string usage_line(const CLI::App* a) {
  std::string u = Formatter{}.make_usage(a, path_of(a));
  if (starts_with(u, "Usage: ")) u = u.substr(7);
  return trim(u);
}

// The first word that is neither a flag nor the name of a command on the way to the reached
// one: the subcommand the user meant.
std::optional<std::string> word_after(const CLI::App& app, const CLI::App* at,
                                      const std::vector<std::string>& args) {
  const CLI::App* p = &app;
  for (size_t i = 1; i < args.size(); i++) {
    if (args[i].empty() || args[i][0] == '-') continue;
    if (p != at) {
      for (const CLI::App* s : p->get_subcommands([](const CLI::App*) { return true; }))
        if (s->check_name(args[i])) {
          p = s;
          break;
        }
      continue;
    }
    return args[i];
  }
  return std::nullopt;
}

std::string type_words(const CLI::Option* o) {
  std::string t = o->get_type_name();
  if (t == "UINT" || t == "INT") return "a whole number";
  if (t == "FLOAT" || t == "NUMBER") return "a number";
  return "";
}

// "name = value" from the parser's conversion message, or the whole text.
std::string after(const std::string& text, const std::string& lead) {
  auto at = text.find(lead);
  return at == std::string::npos ? "" : text.substr(at + lead.size());
}

}  // namespace

std::shared_ptr<CLI::FormatterBase> make_formatter() { return std::make_shared<Formatter>(); }

void set_usage(CLI::App* c, const std::string& args) { usages()[c] = args; }

int report_parse_error(const CLI::App& app, const CLI::ParseError& e,
                       const std::vector<std::string>& args, int error_code) {
  const CLI::App* at = reached(app);
  std::string where = path_of(at);
  std::string text = e.what();
  std::string msg;
  auto say = [&](const std::string& m) {
    std::cerr << "upstream: error: " << m << "\n"
              << "Usage: " << usage_line(at) << "\n"
              << "Run '" << where << " --help' for more." << std::endl;
    return error_code;
  };
  if (dynamic_cast<const CLI::RequiredError*>(&e) && text.find("subcommand") != std::string::npos) {
    auto word = word_after(app, at, args);
    if (!word) {
      // A command that only groups others, given alone: its help, as docker prints it.
      std::cout << at->get_formatter()->make_help(at, where, CLI::AppFormatMode::Normal);
      return 0;
    }
    return say("unknown command \"" + *word + "\" for \"" + where + "\"" +
               suggestion(*word, command_names(at)));
  }
  if (dynamic_cast<const CLI::ExtrasError*>(&e)) {
    // The parser lists the words last first: the user's first one, a flag if any, is named.
    auto words = split(after(text, "expected: "), ' ');
    std::string word = words.empty() ? text : words.back();
    for (auto it = words.rbegin(); it != words.rend(); ++it)
      if (starts_with(*it, "-")) {
        word = *it;
        break;
      }
    if (starts_with(word, "-"))
      return say("unknown flag \"" + word + "\" for \"" + where + "\"" +
                 (starts_with(word, "--")
                      ? suggestion(word.substr(0, word.find('=')), flag_names(at))
                      : ""));
    if (!command_names(at).empty())
      return say("unknown command \"" + word + "\" for \"" + where + "\"" +
                 suggestion(word, command_names(at)));
    return say("unexpected argument \"" + word + "\" for \"" + where + "\"");
  }
  if (dynamic_cast<const CLI::ConversionError*>(&e)) {
    std::string nv = after(text, "Could not convert: ");
    auto eq = nv.find(" = ");
    if (eq != std::string::npos) {
      std::string name = nv.substr(0, eq), value = nv.substr(eq + 3);
      const CLI::Option* o = at->get_option_no_throw(name);
      std::string want = o ? type_words(o) : "";
      return say("invalid value \"" + value + "\" for " + name +
                 (want.empty() ? "" : ": expected " + want));
    }
  }
  if (dynamic_cast<const CLI::ValidationError*>(&e)) {
    // "--progress: bla not in {auto,plain,none}" and "--count: Value 0 not in range 1 to 1000".
    auto colon = text.find(": ");
    std::string name = colon == std::string::npos ? "" : text.substr(0, colon);
    std::string rest = colon == std::string::npos ? text : text.substr(colon + 2);
    auto in = rest.find(" not in {");
    if (in != std::string::npos && rest.back() == '}') {
      std::string choices = rest.substr(in + 9, rest.size() - in - 10);
      return say("invalid value \"" + rest.substr(0, in) + "\" for " + name + ": expected one of " +
                 join(split(choices, ','), ", "));
    }
    auto range = rest.find(" not in range ");
    if (range != std::string::npos && starts_with(rest, "Value "))
      return say("invalid value \"" + rest.substr(6, range - 6) + "\" for " + name +
                 ": expected a value from " + rest.substr(range + 14));
    return say("invalid value for " + name + ": " + rest);
  }
  if (dynamic_cast<const CLI::ArgumentMismatch*>(&e)) {
    auto colon = text.find(':');
    return say((colon == std::string::npos ? text : text.substr(0, colon)) + " needs a value");
  }
  if (dynamic_cast<const CLI::RequiredError*>(&e)) {
    // "document is required" (a positional) or "--name is required".
    auto is = text.find(" is required");
    if (is != std::string::npos) {
      std::string name = text.substr(0, is);
      return say("missing " + (starts_with(name, "-") ? name : upper(name)));
    }
  }
  return say(text);
}

}  // namespace upstream::cli
