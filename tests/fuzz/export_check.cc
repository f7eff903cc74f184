// Properties of the snapshot-export reader (a user's archive, read by the engine as root): every
// input is either accepted as a manifest and entries that lie inside their listed layers, or
// refused with upstream's own error, never anything else.
#include <archive.h>
#include <archive_entry.h>

#include <memory>

#include "check.h"
#include "common/error.h"
#include "common/strings.h"
#include "storage/export_format.h"

namespace upstream::fuzz {

void check_export(std::string_view input) {
  std::unique_ptr<archive, int (*)(archive*)> a(archive_read_new(), archive_read_free);
  storage::support_export_formats(a.get());
  if (archive_read_open_memory(a.get(), input.data(), input.size()) != ARCHIVE_OK) return;
  try {
    storage::ExportManifest m = storage::read_export_manifest(a.get());
    if (m.digests.empty() || m.digests.size() > storage::kMaxLayers)
      throw Finding("a manifest with a bad number of layers was accepted");
    storage::ExportEntries entries(m.digests);
    archive_entry* e = nullptr;
    for (int n = 0; n < 100000; n++) {
      int rc = archive_read_next_header(a.get(), &e);
      if (rc == ARCHIVE_EOF) break;
      if (rc < ARCHIVE_WARN) return;  // the archive itself is broken: import says so
      auto entry = entries.next(e);
      if (!entry) continue;
      bool listed = false;
      for (const auto& d : m.digests) listed = listed || d == entry->digest;
      if (!listed) throw Finding("an entry outside the listed layers was accepted");
      if (starts_with(entry->rest, "/") || entry->rest == ".." || starts_with(entry->rest, "../") ||
          entry->rest.find("/../") != std::string::npos || entry->rest.ends_with("/.."))
        throw Finding("an entry climbing out of its layer was accepted: " + entry->rest);
      if (archive_entry_hardlink(e)) throw Finding("a hard link was accepted");
    }
    entries.finish();
  } catch (const Error&) {
    // Refused with a message naming what is wrong.
  } catch (const Finding&) {
    throw;
  } catch (const std::exception& ex) {
    throw Finding(std::string("the export reader threw a non-upstream error: ") + ex.what());
  }
}

}  // namespace upstream::fuzz
