#include "storage/export_format.h"

#include <algorithm>

#include "common/error.h"
#include "common/strings.h"
#include "storage/layers.h"

namespace upstream::storage {

using nlohmann::json;

namespace {

Error bad(const std::string& why) {
  return Error(Errc::invalid_argument, "not a valid snapshot export: " + why);
}

}  // namespace

void support_export_formats(archive* a) {
  archive_read_support_filter_all(a);
  archive_read_support_format_tar(a);
  archive_read_support_format_gnutar(a);
}

ExportManifest read_export_manifest(archive* a) {
  archive_entry* e;
  if (archive_read_next_header(a, &e) != ARCHIVE_OK ||
      std::string(archive_entry_pathname(e) ? archive_entry_pathname(e) : "") != kExportManifest)
    throw bad(std::string("it does not start with ") + kExportManifest +
              (archive_errno(a) ? std::string(" (") + archive_error_string(a) + ")" : ""));
  if (archive_entry_size(e) <= 0 || archive_entry_size(e) > (1 << 20)) throw bad("bad manifest");
  std::string text(static_cast<size_t>(archive_entry_size(e)), '\0');
  if (archive_read_data(a, text.data(), text.size()) != static_cast<la_ssize_t>(text.size()))
    throw bad("truncated manifest");
  json m = json::parse(text, nullptr, false);
  if (!m.is_object() || m.value("format", "") != "upstream-snapshot")
    throw bad("the manifest is not an upstream snapshot manifest");
  ExportManifest out;
  try {
    out.version = m.value("version", 0);
    if (out.version != 1 && out.version != kExportVersion)
      throw bad("format version " + m.value("version", json(0)).dump() +
                " is not supported (1 and " + std::to_string(kExportVersion) + " are)");
    out.name = m.at("name").get<std::string>();
    out.kind = m.at("kind").get<std::string>();
    out.base_image = m.at("base_image").get<std::string>();
    out.config = m.at("config");
    for (const auto& l : m.at("layers")) out.digests.push_back(l.at("digest").get<std::string>());
  } catch (const json::exception& ex) {
    throw bad(std::string("manifest: ") + ex.what());
  }
  if (out.kind != "snapshot" && out.kind != "image") throw bad("unknown kind '" + out.kind + "'");
  if (out.digests.empty() || out.digests.size() > kMaxLayers) throw bad("bad number of layers");
  for (const auto& d : out.digests)
    if (!is_digest(d)) throw bad("bad layer digest '" + d + "'");
  return out;
}

std::optional<ExportEntries::Entry> ExportEntries::next(archive_entry* e) {
  std::string path = archive_entry_pathname(e) ? archive_entry_pathname(e) : "";
  if ((path == "layers" || path == "layers/") && archive_entry_filetype(e) == AE_IFDIR)
    return std::nullopt;  // written by tar tools that list the parent directory
  if (!starts_with(path, "layers/") || path.size() < 7 + 64)
    throw bad("unexpected entry '" + path + "'");
  Entry out{path.substr(7, 64), path.substr(7 + 64)};
  if (std::find(digests_.begin(), digests_.end(), out.digest) == digests_.end())
    throw bad("entry '" + path + "' belongs to no layer of the manifest");
  if (!out.rest.empty() && out.rest[0] != '/') throw bad("unexpected entry '" + path + "'");
  while (!out.rest.empty() && out.rest[0] == '/') out.rest.erase(0, 1);
  if (out.rest.empty()) {
    if (archive_entry_filetype(e) != AE_IFDIR)
      throw bad("layer " + out.digest + " is no directory");
    if (!seen_.insert(out.digest).second) throw bad("layer " + out.digest + " appears twice");
    return out;
  }
  if (!seen_.count(out.digest)) throw bad("entry '" + path + "' comes before its layer");
  const std::string& r = out.rest;
  if (r == ".." || starts_with(r, "../") || r.find("/../") != std::string::npos ||
      r.ends_with("/.."))
    throw bad("entry '" + path + "' points outside its layer");
  mode_t type = archive_entry_filetype(e);
  // Overlay whiteouts are character devices 0:0; nothing else of the kind is allowed.
  if (type == AE_IFBLK || (type == AE_IFCHR && archive_entry_rdev(e) != 0))
    throw bad("entry '" + path + "' is a device");
  if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK && type != AE_IFCHR &&
      type != AE_IFIFO)
    throw bad("entry '" + path + "' has an unsupported type");
  if (archive_entry_hardlink(e)) throw bad("entry '" + path + "' is a hard link");
  return out;
}

void ExportEntries::finish() const {
  // Every layer the manifest lists must be in the export: a digest names contents, and one
  // already stored here (perhaps another tenant's) is not a capability to be borrowed.
  for (const auto& d : digests_)
    if (!seen_.count(d)) throw bad("layer " + d + " is listed but not in the export");
}

}  // namespace upstream::storage
