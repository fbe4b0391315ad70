// Builds the unlabeled "wild" pool that MosaicKD (dfkd-methods.md §7.1: real
// out-of-domain images beside the generator's) and DFND (§8.1: a large
// unlabeled set the teacher selects from) sample: random patches at random
// scales cut from any image files, resized to the task's C x H x W, written
// once with pool_file.h so training never decodes an image.
//
// The papers use CIFAR-10, ImageNet or Places365 at 32 px (600k ImageNet
// images in KDCI); none of these ship with Debian. Our default source is the
// natural-image folder of the Debian package visp-images-data
// (/usr/share/visp-images-data/ViSP-images, ~1000 PGM/PPM/PNG/JPEG files,
// mostly 8-bit grayscale camera frames of a few scenes): a pool from it is a
// stand-in for "wild" data, not a reproduction of the papers' OOD sets.
//
// Sources (ListPoolSources):
//   - each entry of `sources` is a file (taken as given, whatever its name) or
//     a folder, scanned recursively for .jpg .jpeg .png .pgm .ppm .bmp (any
//     case; names starting with '.' skipped); the union is sorted by path;
//   - files with identical bytes are kept once (the first by path): equal
//     sizes are compared by FNV-1a 64 of their content;
//   - at most max_per_folder files are kept per folder (the file's own
//     parent; 0 = no cap), evenly spaced over that folder's sorted files, so
//     that a video sequence (ViSP's mire-2 has 501 frames, mbt/cube 218) does
//     not drown the single photographs. Files named explicitly are never
//     capped. With the defaults ViSP gives about 190 sources.
//
// Patches (BuildPool), all drawn from std::mt19937_64 streams derived from
// `seed`, with our own integer/real mappings so that the bytes do not depend
// on the standard library:
//   - which source: each source gets count / S patches (the remainder to
//     randomly chosen ones), and the patch order is a random permutation;
//     uniform over sources, not weighted by area (a 1920x1080 frame and a
//     640x480 one give as many patches);
//   - scale: the crop is the largest box of the target's aspect W:H that fits
//     the source (for square targets: the source's shorter side) times s, s
//     log-uniform in [min_scale, max_scale] (each octave of scale equally
//     likely; natural images are roughly scale invariant); the crop sides are
//     rounded and at least 1 pixel;
//   - position: uniform over all positions where the crop fits;
//   - resize to H x W: cv::INTER_AREA when the crop is larger (area
//     averaging, no aliasing), cv::INTER_LINEAR when it is smaller (only when
//     min_scale x the source's side < H or W). For speed the crop is read
//     from the most reduced level of the source's pyramid of 2x INTER_AREA
//     halvings that still covers H x W (crop coordinates scaled and rounded
//     to that level), so a patch costs about the same whatever its scale;
//   - channels: sources are decoded as 8-bit BGR (cv::IMREAD_COLOR: a
//     grayscale file is replicated, alpha dropped), then cv::COLOR_BGR2GRAY
//     for 1 channel or cv::COLOR_BGR2RGB for 3 (so a grayscale source gives
//     R = G = B, and 1-channel pools hold the file's gray values);
//   - a horizontal flip with probability 1/2 when `flip`.
// Each source is decoded once, its patches cut, then it is released; one
// source image (and its pyramid) is in memory at a time, beside the pool
// itself (count x C x H x W bytes: 307 MB for 100,000 x 3x32x32).
//
// Determinism: the same sources (same files, same bytes), options and seed
// give the same pool bytes (with the same OpenCV build: cv::resize may differ
// between OpenCV versions). kPoolBuilderVersion changes whenever the patch
// recipe above does.
#ifndef DFKD_COMMON_POOL_POOL_BUILDER_H_
#define DFKD_COMMON_POOL_POOL_BUILDER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/pool/pool_file.h"

namespace dfkd::common {

inline constexpr int64_t kPoolBuilderVersion = 1;
// visp-images-data's images; the `dfkd pool` default.
inline constexpr char kDefaultPoolSource[] = "/usr/share/visp-images-data/ViSP-images";

struct PoolBuildOptions {
  std::vector<std::string> sources;   // files or folders (folders scanned recursively)
  int64_t count = 100000;             // patches in the pool
  int64_t channels = 3;               // 1 (gray) or 3 (RGB)
  int64_t height = 32;                // 8 .. 4096
  int64_t width = 32;                 // 8 .. 4096
  uint64_t seed = 0;
  double min_scale = 0.1;             // crop side / source's side (see above), in (0, 1]
  double max_scale = 1.0;             // in [min_scale, 1]
  int64_t max_per_folder = 20;        // files kept per folder; 0 = all
  bool flip = true;                   // random horizontal flips
};

struct PoolSourceFile {
  std::string path;
  int64_t bytes = 0;                  // file size
};

struct PoolSourceList {
  std::vector<PoolSourceFile> files;  // what patches are cut from, sorted by path
  int64_t found = 0;                  // image files found (folders + files named), each path once
  int64_t duplicates = 0;             // dropped: same bytes as an earlier file
  int64_t capped = 0;                 // dropped by max_per_folder
};

// The source files, as described above. Throws std::runtime_error naming the
// path for a missing source, a folder without images, or a file that cannot
// be read.
PoolSourceList ListPoolSources(const std::vector<std::string>& sources, int64_t max_per_folder);

// Throws std::invalid_argument naming the field ("channels must be 1 or 3,
// got 2", "height must be in [8, 4096], got 4", ...).
void ValidatePoolBuildOptions(const PoolBuildOptions& options);

// Called with (patches done, patches in all) as the build advances.
using PoolProgress = std::function<void(int64_t done, int64_t total)>;

struct PoolBuildResult {
  PoolHeader header;                  // count, channels, height, width
  std::vector<uint8_t> pixels;        // header.pixel_bytes() bytes, NCHW
  // What PATH.json holds: format, builder_version, count, shape, seed,
  // min_scale, max_scale, scale_sampling, flip, max_per_folder,
  // requested_sources, files_found, duplicates_skipped, capped_skipped,
  // sources [{path, bytes, width, height, patches}] (those with patches),
  // sources_without_patches, pixels_fnv1a64, built_at (UTC), build_seconds.
  nlohmann::json provenance;
};

// Validates, lists the sources and cuts the patches. Throws
// std::invalid_argument for bad options and std::runtime_error naming the
// file for a source that cannot be listed, read or decoded.
PoolBuildResult BuildPool(const PoolBuildOptions& options, const PoolProgress& progress = nullptr);

// BuildPool, then writes the pool to out_path and its provenance to
// out_path + ".json" (each atomically), returning the provenance (with
// "file" and "bytes" added and build_seconds including the writing).
nlohmann::json BuildPoolFile(const PoolBuildOptions& options, const std::string& out_path,
                             const PoolProgress& progress = nullptr);

}  // namespace dfkd::common

#endif  // DFKD_COMMON_POOL_POOL_BUILDER_H_
