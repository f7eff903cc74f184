// Static linking of libarchive: its pax writer calls one helper that lives in the same object
// file as libarchive's table of every archive format. Pulling that object in would drag the xar
// writer, libxml2 and ICU into our binary. Defining the helper here satisfies the reference
// first, so the table (and everything it names) is never linked. The helper only reports that
// an entry's file type cannot be written, which we never ask for: we archive regular files,
// directories and symlinks only.
#include <archive.h>
#include <archive_entry.h>
#include <cerrno>

// libarchive reports this code (EFTYPE, or EINVAL where there is none) for unsupported types.
#define EFTYPE_UPSTREAM EINVAL

extern "C" void __archive_write_entry_filetype_unsupported(struct archive* a,
                                                           struct archive_entry* entry,
                                                           const char* format) {
  const char* path = archive_entry_pathname(entry);
  archive_set_error(a, EFTYPE_UPSTREAM, "%s: the %s format cannot store this kind of file",
                    path ? path : "(unnamed)", format ? format : "archive");
}
