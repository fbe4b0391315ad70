// dfkd pool: builds the unlabeled image pool that MosaicKD and DFND sample
// (common/pool/pool_builder.h), here, without a scheduler.
#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/commands.h"
#include "common/pool/pool_builder.h"

namespace dfkd::client {
namespace {

namespace fs = std::filesystem;

struct PoolOptions {
  std::string out;
  std::string shape;
  std::string dataset;
  int64_t count = 100000;
  uint64_t seed = 0;
  std::vector<std::string> from;
  double min_scale = 0.1;
  double max_scale = 1.0;
  int64_t max_per_folder = 20;
  bool no_flip = false;
  bool force = false;
};

// "1x28x28" -> {1, 28, 28}; empty when malformed.
std::vector<int64_t> ParseShape(const std::string& text) {
  std::vector<int64_t> dims;
  size_t start = 0;
  while (true) {
    const size_t x = text.find('x', start);
    const std::string part =
        text.substr(start, x == std::string::npos ? std::string::npos : x - start);
    if (part.empty() || part.size() > 6 ||
        part.find_first_not_of("0123456789") != std::string::npos) {
      return {};
    }
    dims.push_back(std::stoll(part));
    if (x == std::string::npos) break;
    start = x + 1;
  }
  if (dims.size() != 3) return {};
  return dims;
}

std::vector<int64_t> DatasetShape(const std::string& dataset) {
  if (dataset == "fashion_mnist") return {1, 28, 28};
  return {3, 32, 32};   // cifar10, cifar100
}

// Percent on stderr: rewritten in place on a terminal, every 10 % otherwise.
class ProgressLine {
 public:
  ProgressLine() : tty_(isatty(STDERR_FILENO) == 1) {}
  void Update(int64_t done, int64_t total) {
    const int percent = total > 0 ? static_cast<int>(done * 100 / total) : 100;
    if (percent == last_ || (!tty_ && last_ >= 0 && percent / 10 == last_ / 10)) return;
    last_ = percent;
    std::cerr << (tty_ ? "\r" : "") << "dfkd pool: " << percent << "% (" << done << " / "
              << total << " patches)" << (tty_ ? "" : "\n") << std::flush;
  }
  void Finish() {
    if (tty_ && last_ >= 0) std::cerr << "\n";
  }

 private:
  bool tty_;
  int last_ = -1;
};

int RunPool(const PoolOptions& o, const GlobalOptions& global) {
  common::PoolBuildOptions build;
  std::vector<int64_t> chw;
  if (!o.shape.empty()) {
    chw = ParseShape(o.shape);
    if (chw.empty()) {
      throw CliError(kExitUsage,
                     "--shape: expected CxHxW such as 1x28x28 or 3x32x32, got \"" + o.shape + "\"");
    }
  } else if (!o.dataset.empty()) {
    chw = DatasetShape(o.dataset);
  } else {
    throw CliError(kExitUsage, "give --shape CxHxW or --dataset fashion_mnist|cifar10|cifar100");
  }
  build.channels = chw[0];
  build.height = chw[1];
  build.width = chw[2];
  build.count = o.count;
  build.seed = o.seed;
  build.min_scale = o.min_scale;
  build.max_scale = o.max_scale;
  build.max_per_folder = o.max_per_folder;
  build.flip = !o.no_flip;
  build.sources = o.from;
  std::error_code ec;
  if (build.sources.empty()) {
    if (!fs::is_directory(common::kDefaultPoolSource, ec)) {
      throw CliError(kExitUsage,
                     std::string(common::kDefaultPoolSource) +
                         ": no such folder: install the Debian package visp-images-data "
                         "(apt-get install visp-images-data) or give --from DIR");
    }
    build.sources.push_back(common::kDefaultPoolSource);
  }
  try {
    common::ValidatePoolBuildOptions(build);
  } catch (const std::invalid_argument& e) {
    throw CliError(kExitUsage, e.what());
  }
  if (fs::exists(o.out, ec) && !o.force) {
    throw CliError(kExitUsage, o.out + ": exists; give --force to replace it");
  }
  const fs::path parent = fs::path(o.out).parent_path();
  if (!parent.empty() && !fs::is_directory(parent, ec)) {
    throw CliError(kExitUsage, parent.string() + ": no such folder (for --out)");
  }

  ProgressLine line;
  nlohmann::json provenance;
  try {
    provenance = common::BuildPoolFile(
        build, o.out, [&line](int64_t done, int64_t total) { line.Update(done, total); });
  } catch (const std::runtime_error& e) {
    line.Finish();
    throw CliError(kExitUsage, e.what());
  } catch (const std::invalid_argument& e) {
    line.Finish();
    throw CliError(kExitUsage, e.what());
  }
  line.Finish();

  const std::string shape = std::to_string(build.channels) + "x" + std::to_string(build.height) +
                            "x" + std::to_string(build.width);
  const int64_t sources_used = static_cast<int64_t>(provenance["sources"].size());
  const double seconds = provenance["build_seconds"].get<double>();
  const int64_t bytes = provenance["bytes"].get<int64_t>();
  if (global.json()) {
    nlohmann::json summary{{"file", o.out},
                           {"provenance", common::PoolProvenancePath(o.out)},
                           {"count", build.count},
                           {"shape", provenance["shape"]},
                           {"bytes", bytes},
                           {"seconds", seconds},
                           {"seed", build.seed},
                           {"sources_used", sources_used},
                           {"files_found", provenance["files_found"]},
                           {"duplicates_skipped", provenance["duplicates_skipped"]},
                           {"capped_skipped", provenance["capped_skipped"]},
                           {"pixels_fnv1a64", provenance["pixels_fnv1a64"]}};
    std::cout << summary.dump() << "\n";
  } else {
    std::string from;
    for (const std::string& source : build.sources) from += (from.empty() ? "" : ", ") + source;
    std::cout << o.out << ": " << build.count << " patches of " << shape << ", " << bytes
              << " bytes, " << FormatFixed(seconds, 1) << " s, " << sources_used
              << " source images (" << provenance["files_found"].get<int64_t>() << " found, "
              << provenance["duplicates_skipped"].get<int64_t>() << " duplicates, "
              << provenance["capped_skipped"].get<int64_t>() << " over --max-per-folder) from "
              << from << "; provenance in " << common::PoolProvenancePath(o.out) << "\n";
  }
  return kExitOk;
}

}  // namespace

void AddPoolCommands(CLI::App& app, const GlobalOptions& global, std::vector<Command>* out) {
  auto options = std::make_shared<PoolOptions>();
  CLI::App* pool = app.add_subcommand(
      "pool",
      "Build the unlabeled image pool that MosaicKD and DFND sample, here (no scheduler):\n"
      "--count patches (square for square shapes) at random places and scales, cut from\n"
      "the images under --from (.jpg .jpeg .png .pgm .ppm .bmp, folders recursively;\n"
      "default " +
          std::string(common::kDefaultPoolSource) +
          ",\n"
          "from the Debian package visp-images-data), resized to the shape (INTER_AREA when\n"
          "shrinking), converted to gray or RGB, randomly flipped, and written once as uint8\n"
          "NCHW to --out, with the provenance (sources, sizes, patch counts, seed) in\n"
          "OUT.json. Files with identical bytes count once; at most --max-per-folder files\n"
          "are taken per folder, evenly spaced, so video sequences do not dominate. The same\n"
          "sources, flags and seed give the same bytes. Progress goes to stderr, a one-line\n"
          "summary to stdout. Exit 2 for a bad flag, a source that cannot be listed, read or\n"
          "decoded, or an output that cannot be written.");
  pool->add_option("--out", options->out,
                   "the pool file to write (refused when it exists, unless --force)")
      ->required();
  CLI::Option* shape =
      pool->add_option("--shape", options->shape,
                       "image shape CxHxW, C = 1 (gray) or 3 (RGB), e.g. 1x28x28 (this or "
                       "--dataset)");
  CLI::Option* dataset =
      pool->add_option("--dataset", options->dataset,
                       "the shape of this data set: fashion_mnist 1x28x28, cifar10 / cifar100 "
                       "3x32x32")
          ->check(CLI::IsMember({"fashion_mnist", "cifar10", "cifar100"}));
  shape->excludes(dataset);
  pool->add_option("-n,--count", options->count, "patches in the pool")
      ->check(CLI::Range(int64_t{1}, int64_t{100000000}))
      ->capture_default_str();
  pool->add_option("--seed", options->seed, "random seed of the patches")->capture_default_str();
  pool->add_option("--from", options->from,
                   "image file or folder (repeatable; default " +
                       std::string(common::kDefaultPoolSource) + ")");
  pool->add_option("--min-scale", options->min_scale,
                   "smallest patch side as a fraction of the source's shorter side "
                   "(sampled log-uniformly)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  pool->add_option("--max-scale", options->max_scale, "largest patch side, likewise")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  pool->add_option("--max-per-folder", options->max_per_folder,
                   "files taken per folder (0 = all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  pool->add_flag("--no-flip", options->no_flip, "no random horizontal flips");
  pool->add_flag("--force", options->force, "replace --out when it exists");
  out->push_back({pool, [options, &global] { return RunPool(*options, global); }});
}

}  // namespace dfkd::client
