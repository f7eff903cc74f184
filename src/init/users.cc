#include "init/users.h"

#include <cctype>
#include <cstdlib>

#include "common/error.h"
#include "common/strings.h"

namespace upstream::init {

namespace {

struct PwEntry {
  std::string name;
  uid_t uid;
  gid_t gid;
  std::string home, shell;
};

bool parse_id(const std::string& s, uint32_t& out) {
  if (s.empty() || s.size() > 10) return false;
  for (char c : s)
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  unsigned long long v = std::strtoull(s.c_str(), nullptr, 10);
  if (v > 0xfffffffeULL) return false;
  out = static_cast<uint32_t>(v);
  return true;
}

std::vector<PwEntry> parse_passwd(const std::string& text) {
  std::vector<PwEntry> out;
  for (const auto& line : split(text, '\n')) {
    auto f = split(line, ':');
    uint32_t uid, gid;
    if (f.size() < 7 || !parse_id(f[2], uid) || !parse_id(f[3], gid)) continue;
    out.push_back({f[0], uid, gid, f[5], f[6]});
  }
  return out;
}

}  // namespace

Identity resolve_user(const std::string& spec, uint32_t uid_count, const std::string& passwd_text,
                      const std::string& group_text) {
  auto users = parse_passwd(passwd_text);
  Identity id;
  const PwEntry* found = nullptr;
  std::string uid_part = spec, gid_part;
  if (auto colon = spec.find(':'); colon != std::string::npos) {
    uid_part = spec.substr(0, colon);
    gid_part = spec.substr(colon + 1);
  }
  uint32_t num;
  if (parse_id(uid_part, num)) {
    id.uid = num;
    id.gid = num;
    for (const auto& u : users)
      if (u.uid == num) {
        found = &u;
        break;
      }
  } else {
    for (const auto& u : users)
      if (u.name == uid_part) {
        found = &u;
        break;
      }
    if (!found) {
      if (uid_part == "root") {
        id.uid = 0;
        id.gid = 0;
        id.home = "/root";
      } else if (uid_part == "user") {
        id.uid = 1000;
        id.gid = 1000;
        id.home = "/home/user";
      } else {
        throw_invalid("unknown user '" + uid_part + "' in this box");
      }
      id.name = uid_part;
    }
  }
  if (found) {
    id.uid = found->uid;
    id.gid = found->gid;
    id.name = found->name;
    id.home = found->home;
    id.shell = found->shell;
  }
  if (!gid_part.empty()) {
    if (!parse_id(gid_part, num)) throw_invalid("invalid group id '" + gid_part + "'");
    id.gid = num;
  }
  if (id.uid >= uid_count || id.gid >= uid_count)
    throw_invalid("user '" + spec + "' is outside the box's id range (0-" +
                  std::to_string(uid_count - 1) + ")");
  if (id.home.empty()) id.home = id.uid == 0 ? "/root" : "/";
  if (id.name.empty()) id.name = std::to_string(id.uid);

  id.groups.push_back(id.gid);
  for (const auto& line : split(group_text, '\n')) {
    auto f = split(line, ':');
    uint32_t gid;
    if (f.size() < 4 || !parse_id(f[2], gid) || gid >= uid_count || gid == id.gid) continue;
    for (const auto& m : split(f[3], ','))
      if (!m.empty() && m == id.name) id.groups.push_back(gid);
  }
  return id;
}

}  // namespace upstream::init
