// The format of a snapshot export, as a reader checks it: a tar (any compression libarchive
// reads) whose first entry is the manifest, then layers/<digest>/... of every layer it lists.
// Everything here is about bytes someone else made, so it refuses anything it does not expect
// (and is fuzzed: tests/fuzz/export_check.cc).
#pragma once

#include <archive.h>
#include <archive_entry.h>

#include <cstddef>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace upstream::storage {

constexpr const char* kExportManifest = "upstream-snapshot.json";
constexpr int kExportVersion = 2;   // 1: the configuration in the first spec encoding
constexpr size_t kMaxLayers = 100;  // overlay's mount options hold about 200 lower layers

struct ExportManifest {
  int version = 0;
  std::string name, kind, base_image;
  nlohmann::json config;             // as written (version 1: the first spec encoding)
  std::vector<std::string> digests;  // layers, top first
};

// Sets up a reader for what an export may be: a tar (ustar, pax or GNU) in any compression.
void support_export_formats(archive* a);

// Reads the archive's first entry as the manifest and checks its fields. Throws
// invalid_argument ("not a valid snapshot export: ...") naming what is wrong.
ExportManifest read_export_manifest(archive* a);

// The entries after the manifest, one at a time: each must lie in a listed layer's directory,
// which comes first and once; no device but overlay's 0:0 whiteouts, no hard link, nothing that
// climbs out of its layer.
class ExportEntries {
 public:
  explicit ExportEntries(std::vector<std::string> digests) : digests_(std::move(digests)) {}
  struct Entry {
    std::string digest;
    std::string rest;  // the path inside the layer; empty for the layer's own directory
  };
  // nullopt for an entry to skip (the "layers/" directory itself). Throws invalid_argument.
  std::optional<Entry> next(archive_entry* e);
  // Throws unless every listed layer was in the archive.
  void finish() const;

 private:
  std::vector<std::string> digests_;
  std::set<std::string> seen_;
};

}  // namespace upstream::storage
