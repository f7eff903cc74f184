// `upstream snapshot ...`, `upstream image ...`, and the fan-out commands `box fork`.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <iostream>
#include <optional>

#include "cli/cli.h"
#include "common/error.h"
#include "common/fd.h"
#include "common/strings.h"
#include "common/time.h"
#include "pipeline/document.h"

namespace upstream::cli {

using nlohmann::json;

namespace {

void print_snapshots(Context& ctx, const std::vector<SnapshotRecord>& list, bool quiet) {
  if (ctx.json) {
    json arr = json::array();
    for (const auto& s : list) arr.push_back(snapshot_json(s));
    print_json(arr);
    return;
  }
  if (quiet) {
    for (const auto& s : list) std::cout << s.name << "\n";
    return;
  }
  int64_t now = now_ms();
  std::vector<std::vector<std::string>> rows;
  for (const auto& s : list)
    rows.push_back({s.id, s.name, s.base_image, std::to_string(s.layers.size()),
                    format_bytes(s.bytes), format_bytes(s.total_bytes),
                    format_ago(s.created_at, now)});
  print_table({"ID", "NAME", "BASE", "LAYERS", "OWN SIZE", "TOTAL", "CREATED"}, rows);
}

void print_snapshot_human(const SnapshotRecord& s) {
  auto row = [](const std::string& k, const std::string& v) {
    std::cout << k << ":" << std::string(k.size() < 12 ? 12 - k.size() : 1, ' ') << v << "\n";
  };
  row("ID", s.id);
  row("Name", s.name);
  row("Kind", s.kind);
  row("Base image", s.base_image);
  if (!s.source_box.empty()) row("Taken of", "box " + s.source_box);
  if (!s.parent.empty()) row("Parent", s.parent);
  row("Created", format_time(s.created_at));
  row("Own size", format_bytes(s.bytes) + " (its top layer)");
  row("Total size",
      format_bytes(s.total_bytes) + " (all " + std::to_string(s.layers.size()) + " layers)");
  row("User", s.config.user);
  row("Workdir", s.config.workdir);
  row("Limits", limits_text(s.config.limits));
  if (!s.config.env.empty()) row("Env", join(s.config.env, " "));
  if (s.ephemeral) row("Ephemeral", "yes (removed with the last box made from it)");
  std::cout << "Layers:\n";
  for (const auto& d : s.layers) std::cout << "  " << d << "\n";
}

// Writes to `path` atomically (a temporary file next to it, renamed when complete).
template <typename F>
void write_file_with(const std::string& path, F produce) {
  if (path == "-") {
    produce(1);
    return;
  }
  write_file_atomic_with(path, 0644, produce);
}

struct Step {
  std::string name;
  std::vector<std::string> argv;
};

// `image build`: the steps of a document, or the --run commands, in a fresh box; the box is
// saved as an image when every step succeeded, and removed either way.
void build_image(Context& ctx, const std::string& name, const std::string& file,
                 const std::vector<std::string>& commands, BoxSpec spec,
                 const std::optional<pipeline::RunNetwork>& network, bool quiet) {
  std::vector<Step> steps;
  if (!file.empty()) {
    std::string text;
    try {
      text = read_file(file, 16 << 20);
    } catch (const Error& e) {
      throw Error(Errc::invalid_argument, "cannot read " + file + ": " + e.what());
    }
    pipeline::Document doc = pipeline::parse_document(text, file);
    const auto& fm = doc.meta;
    if (fm.image && spec.image == "host") spec.image = *fm.image;
    if (fm.workdir) spec.workdir = *fm.workdir;
    if (fm.user) spec.user = *fm.user;
    for (const auto& [k, v] : fm.env) spec.env.push_back(k + "=" + v);
    if (fm.network && !network) {
      spec.network = fm.network->mode;
      spec.egress = fm.network->egress;
    }
    for (const auto& s : doc.steps) {
      std::vector<std::string> argv;
      if (s.runner == "bash")
        argv = {"bash", "-c", s.code};
      else if (s.runner == "python3")
        argv = {"python3", "-c", s.code};
      else
        argv = {"node", "-e", s.code};
      steps.push_back({s.name, argv});
    }
  }
  for (const auto& c : commands) steps.push_back({c, {"bash", "-c", c}});
  if (steps.empty()) throw_invalid("image build needs a document with steps or --run commands");
  if (network) {
    spec.network = network->mode;
    spec.egress = network->egress;
  }
  validate_box_spec(spec);
  Backend& e = ctx.backend();
  // Refused before any work when the name is taken.
  try {
    e.get_snapshot(name);
    throw Error(Errc::already_exists, "a snapshot or image named '" + name + "' already exists");
  } catch (const Error& err) {
    if (err.code() != Errc::not_found) throw;
  }
  spec.name = "image-build-" + random_hex(6);
  BoxRecord box = e.create_box(spec);
  try {
    size_t i = 0;
    for (const auto& st : steps) {
      i++;
      if (!quiet)
        std::cerr << "[" << i << "/" << steps.size() << "] " << st.name.substr(0, 100) << std::endl;
      ExecSpec x;
      x.argv = st.argv;
      auto session = e.start_exec(box.id, x);
      ExecRecord r = session->wait([&](Stream, std::string_view data) {
        if (!quiet) write_all(2, data.data(), data.size());
      });
      if (r.exit_code.value_or(-1) != 0)
        throw Error(Errc::failed_precondition,
                    "step " + std::to_string(i) + " (" + st.name.substr(0, 60) + ") failed" +
                        (r.exit_code ? " with exit code " + std::to_string(*r.exit_code)
                                     : " (" + r.reason + ")") +
                        "; no image was saved");
    }
    SnapshotOptions o;
    o.name = name;
    o.kind = "image";
    SnapshotRecord s = e.snapshot_box(box.id, o);
    e.remove_box(box.id, true);
    if (ctx.json)
      print_json(snapshot_json(s));
    else
      std::cout << s.name << std::endl;
  } catch (...) {
    try {
      e.remove_box(box.id, true);
    } catch (...) {
    }
    throw;
  }
}

}  // namespace

namespace {

void add_snap_create_command(CLI::App* snap, Context& ctx) {
  auto* c = snap->add_subcommand(
      "create", "Snapshot a box, running (frozen for the moment of capture) or stopped");
  auto box = std::make_shared<std::string>();
  auto name = std::make_shared<std::string>();
  auto labels = std::make_shared<std::vector<std::string>>();
  c->add_option("box", *box, "Box id or name")->required();
  c->add_option("--name", *name, "Name of the snapshot (default: generated)");
  c->add_option("--label,-l", *labels, "Label key=value (repeatable)")->allow_extra_args(false);
  c->callback([&ctx, box, name, labels] {
    SnapshotOptions o;
    o.name = *name;
    o.labels = parse_labels(*labels);
    std::optional<SnapshotRecord> made;
    uint64_t ms = 0;
    {
      TerminalProgress p([&] { return "snapshotting box " + *box; });
      made = ctx.backend().snapshot_box(*box, o);
      ms = p.elapsed_ms();
    }
    const SnapshotRecord& s = *made;
    if (ctx.json) {
      print_json(snapshot_json(s));
      return;
    }
    std::cout << s.name << std::endl;
    if (TerminalProgress::on_terminal()) {
      std::string frozen =
          s.frozen_us > 0
              ? ", the box frozen " + format_duration_ms(static_cast<uint64_t>(s.frozen_us) / 1000)
              : "";
      std::cerr << "snapshot " << s.name << " of box " << *box << " (" << format_bytes(s.bytes)
                << " of its own" << frozen << ") in " << format_duration_ms(ms) << std::endl;
    }
  });
}

void add_snap_ls_command(CLI::App* snap, Context& ctx) {
  auto* c = snap->add_subcommand("ls", "List snapshots (and images)")->alias("list");
  auto quiet = std::make_shared<bool>(false);
  auto kind = std::make_shared<std::string>();
  c->add_flag("--quiet,-q", *quiet, "Print only names");
  c->add_option("--kind", *kind, "Only snapshots or only images")
      ->check(CLI::IsMember({"snapshot", "image"}));
  c->callback(
      [&ctx, quiet, kind] { print_snapshots(ctx, ctx.backend().list_snapshots(*kind), *quiet); });
}

void add_snap_inspect_command(CLI::App* snap, Context& ctx) {
  auto* c = snap->add_subcommand("inspect", "Show a snapshot in detail")->alias("show");
  auto refs = std::make_shared<std::vector<std::string>>();
  c->add_option("snapshot", *refs, "Snapshot id, id prefix or name")->required();
  c->callback([&ctx, refs] {
    json arr = json::array();
    for (const auto& r : *refs) {
      SnapshotRecord s = ctx.backend().get_snapshot(r);
      if (ctx.json)
        arr.push_back(snapshot_json(s));
      else
        print_snapshot_human(s);
    }
    if (ctx.json) print_json(refs->size() == 1 ? arr[0] : arr);
  });
}

void add_snap_rm_command(CLI::App* snap, Context& ctx) {
  auto* c =
      snap->add_subcommand("rm", "Remove snapshots (refused while a box made from one exists)")
          ->alias("remove");
  auto refs = std::make_shared<std::vector<std::string>>();
  c->add_option("snapshot", *refs, "Snapshot ids or names")->required();
  c->callback([&ctx, refs] {
    std::vector<SnapshotRecord> all;
    for (const auto& r : *refs) all.push_back(ctx.backend().get_snapshot(r));
    for (const auto& s : all) {
      ctx.backend().remove_snapshot(s.id);
      if (!ctx.json) std::cout << s.name << std::endl;
    }
  });
}

void add_snap_export_command(CLI::App* snap, Context& ctx) {
  auto* c = snap->add_subcommand("export", "Write a snapshot to a .tar.zst file");
  auto ref = std::make_shared<std::string>();
  auto file = std::make_shared<std::string>();
  c->add_option("snapshot", *ref, "Snapshot id or name")->required();
  c->add_option("file", *file, "Output file (- for stdout)")->required();
  c->callback([&ctx, ref, file] {
    if (*file == "-" && ::isatty(1))
      throw Error(Errc::invalid_argument,
                  "refusing to write an archive to a terminal: name a file, or redirect the "
                  "standard output");
    Backend& e = ctx.backend();
    SnapshotRecord s = e.get_snapshot(*ref);
    std::atomic<int> out{-1};
    // What has been written so far, when the output is a file.
    auto written = [&]() -> std::optional<uint64_t> {
      struct stat st;
      int fd = out.load();
      if (fd < 0 || ::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
      return static_cast<uint64_t>(st.st_size);
    };
    std::optional<uint64_t> size;
    uint64_t ms = 0;
    {
      TerminalProgress p([&] {
        std::string line = "exporting " + s.name + " (" + format_bytes(s.total_bytes) + ")";
        if (auto n = written()) line += ": " + format_bytes(*n) + " written";
        return line;
      });
      write_file_with(*file, [&](int fd) {
        out = fd;
        e.export_snapshot(s.id, fd);
        size = written();
        out = -1;
      });
      ms = p.elapsed_ms();
    }
    std::string to = *file == "-" ? "the standard output" : *file;
    if (ctx.json && *file != "-") {
      json j = {{"snapshot", s.name}, {"id", s.id}, {"file", *file}, {"duration_ms", ms}};
      if (size) j["bytes"] = *size;
      print_json(j);
    } else if (TerminalProgress::on_terminal()) {
      std::cerr << "exported " << s.name << " (" << format_bytes(s.total_bytes) << ") to " << to
                << (size ? " (" + format_bytes(*size) + ")" : "") << " in "
                << format_duration_ms(ms) << std::endl;
    }
  });
}

void add_snap_import_command(CLI::App* snap, Context& ctx) {
  auto* c = snap->add_subcommand("import", "Read a snapshot written by export");
  auto file = std::make_shared<std::string>();
  auto name = std::make_shared<std::string>();
  c->add_option("file", *file, "The .tar.zst file (- for stdin)")->required();
  auto base = std::make_shared<std::string>();
  c->add_option("--name", *name, "Name it this (default: the name it was exported with)");
  c->add_option("--base", *base,
                "Put it on this base image instead of the one the export names (an export "
                "whose base is a host path, dir: or tar:, needs this)");
  c->callback([&ctx, file, name, base] {
    UniqueFd fd;
    if (*file != "-") {
      fd.reset(::open(file->c_str(), O_RDONLY | O_CLOEXEC));
      if (!fd) throw_sys(Errc::invalid_argument, "open " + *file);
    }
    int in = fd ? fd.get() : 0;
    struct stat st;
    uint64_t size =
        ::fstat(in, &st) == 0 && S_ISREG(st.st_mode) ? static_cast<uint64_t>(st.st_size) : 0;
    std::string from = *file == "-" ? "the standard input" : *file;
    std::optional<SnapshotRecord> made;
    uint64_t ms = 0;
    {
      TerminalProgress p([&] {
        std::string line = "importing " + from;
        off_t at = ::lseek(in, 0, SEEK_CUR);
        if (at > 0 && size > 0)
          line += ": " + format_bytes(static_cast<uint64_t>(at)) + " of " + format_bytes(size) +
                  " (" + std::to_string(static_cast<uint64_t>(at) * 100 / size) + "%)";
        return line;
      });
      made = ctx.backend().import_snapshot(in, *name, *base);
      ms = p.elapsed_ms();
    }
    const SnapshotRecord& s = *made;
    if (ctx.json) {
      print_json(snapshot_json(s));
      return;
    }
    std::cout << s.name << std::endl;
    if (TerminalProgress::on_terminal())
      std::cerr << "imported " << s.name << " (" << format_bytes(s.total_bytes) << ", "
                << s.layers.size() << (s.layers.size() == 1 ? " layer" : " layers") << ") from "
                << from << " in " << format_duration_ms(ms) << std::endl;
  });
}

void add_img_build_command(CLI::App* img, Context& ctx) {
  auto* c = img->add_subcommand(
      "build", "Build an image: run a document's steps (or --run commands) in a fresh box");
  auto name = std::make_shared<std::string>();
  auto file = std::make_shared<std::string>();
  auto runs = std::make_shared<std::vector<std::string>>();
  auto from = std::make_shared<std::string>("host");
  auto env = std::make_shared<std::vector<std::string>>();
  auto memory = std::make_shared<std::string>();
  auto quiet = std::make_shared<bool>(false);
  c->add_option("name", *name, "Name of the image")->required();
  c->add_option("file", *file, "A markdown document whose code blocks are the steps");
  c->add_option("--run", *runs, "A shell command to run (repeatable; after the document's)")
      ->allow_extra_args(false);
  c->add_option("--from", *from, "Base image: host (default), dir:, tar:, or another image");
  c->add_option("--env,-e", *env, "Environment KEY=VALUE (repeatable)")->allow_extra_args(false);
  c->add_option("--memory,-m", *memory, "Memory limit of the build box");
  c->add_flag("--quiet,-q", *quiet, "Do not show the steps' output");
  auto network = std::make_shared<std::string>();
  auto egress = std::make_shared<EgressOpts>();
  c->add_option("--network", *network,
                "The build box's network, over the document's: none (default), allow-all or "
                "custom (with --allow-domain/--allow-cidr); the image keeps none of it");
  add_egress_options(c, *egress, false);
  c->callback([&ctx, name, file, runs, from, env, memory, quiet, network, egress] {
    BoxSpec spec;
    spec.image = *from;
    spec.env = parse_env_list(*env);
    spec.limits = parse_limits("", *memory, "", "");
    if (*name == "host" || !valid_box_name(*name))
      throw_invalid("invalid image name '" + *name +
                    "': use up to 63 letters, digits, '_', '.' or '-', starting with a letter "
                    "or digit");
    build_image(ctx, *name, *file, *runs, spec, network_options(*network, *egress), *quiet);
  });
}

void add_img_ls_command(CLI::App* img, Context& ctx) {
  auto* c = img->add_subcommand("ls", "List images")->alias("list");
  auto quiet = std::make_shared<bool>(false);
  c->add_flag("--quiet,-q", *quiet, "Print only names");
  c->callback(
      [&ctx, quiet] { print_snapshots(ctx, ctx.backend().list_snapshots("image"), *quiet); });
}

void add_img_inspect_command(CLI::App* img, Context& ctx) {
  auto* c = img->add_subcommand("inspect", "Show an image in detail")->alias("show");
  auto ref = std::make_shared<std::string>();
  c->add_option("image", *ref, "Image name")->required();
  c->callback([&ctx, ref] {
    SnapshotRecord s = ctx.backend().get_snapshot(*ref);
    if (s.kind != "image") throw Error(Errc::not_found, "no such image: " + *ref);
    if (ctx.json)
      print_json(snapshot_json(s));
    else
      print_snapshot_human(s);
  });
}

void add_img_rm_command(CLI::App* img, Context& ctx) {
  auto* c =
      img->add_subcommand("rm", "Remove images (refused while a box uses one)")->alias("remove");
  auto refs = std::make_shared<std::vector<std::string>>();
  c->add_option("image", *refs, "Image names")->required();
  c->callback([&ctx, refs] {
    std::vector<SnapshotRecord> all;
    for (const auto& r : *refs) {
      SnapshotRecord s = ctx.backend().get_snapshot(r);
      if (s.kind != "image") throw Error(Errc::not_found, "no such image: " + r);
      all.push_back(s);
    }
    for (const auto& s : all) {
      ctx.backend().remove_snapshot(s.id);
      if (!ctx.json) std::cout << s.name << std::endl;
    }
  });
}

}  // namespace

void add_snapshot_commands(CLI::App& app, Context& ctx) {
  auto* snap = app.add_subcommand("snapshot", "Snapshots: a box's files and settings, saved")
                   ->require_subcommand(1);
  add_snap_create_command(snap, ctx);
  add_snap_ls_command(snap, ctx);
  add_snap_inspect_command(snap, ctx);
  add_snap_rm_command(snap, ctx);
  add_snap_export_command(snap, ctx);
  add_snap_import_command(snap, ctx);

  auto* img = app.add_subcommand("image", "Images: snapshots built from steps, usable by name")
                  ->require_subcommand(1);
  add_img_build_command(img, ctx);
  add_img_ls_command(img, ctx);
  add_img_inspect_command(img, ctx);
  add_img_rm_command(img, ctx);
}

}  // namespace upstream::cli
