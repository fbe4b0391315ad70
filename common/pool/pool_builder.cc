#include "common/pool/pool_builder.h"

#include <time.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <unordered_map>
#include <utility>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace dfkd::common {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kMinSide = 8;
constexpr int64_t kMaxSide = 4096;
constexpr int64_t kMaxCount = 100000000;
constexpr int64_t kMaxPoolBytes = int64_t{1} << 36;   // 64 GiB
constexpr int64_t kProgressEvery = 2048;              // patches between progress calls
constexpr uint64_t kFnvOffset = 1469598103934665603ull;
constexpr uint64_t kFnvPrime = 1099511628211ull;

[[noreturn]] void Fail(const std::string& path, const std::string& what) {
  throw std::runtime_error(path + ": " + what);
}

std::string Num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

uint64_t Fnv1a64(const uint8_t* data, size_t n, uint64_t h) {
  for (size_t i = 0; i < n; ++i) {
    h ^= data[i];
    h *= kFnvPrime;
  }
  return h;
}

std::string Hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

uint64_t FileFnv1a64(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Fail(path, std::string("cannot open: ") + std::strerror(errno));
  std::vector<char> buf(size_t{1} << 20);
  uint64_t h = kFnvOffset;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h = Fnv1a64(reinterpret_cast<const uint8_t*>(buf.data()), static_cast<size_t>(in.gcount()), h);
  }
  if (in.bad()) Fail(path, "read error");
  return h;
}

// ---- random numbers, the same with every standard library

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Stream 0 orders the patches; stream s + 1 draws source s's crops.
uint64_t DeriveSeed(uint64_t seed, uint64_t stream) {
  return SplitMix64(SplitMix64(seed) ^ SplitMix64(stream + 0x5eed));
}

// Uniform in [0, n), n >= 1: rejection keeps it free of modulo bias.
uint64_t UniformBelow(std::mt19937_64& rng, uint64_t n) {
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  const uint64_t limit = max - max % n;   // a multiple of n
  uint64_t x = rng();
  while (x >= limit) x = rng();
  return x % n;
}

// Uniform in [0, 1) with 53 random bits.
double UniformUnit(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

// Fisher-Yates.
void Shuffle(std::vector<int64_t>* v, std::mt19937_64& rng) {
  for (size_t i = v->size(); i > 1; --i) {
    const auto j = static_cast<size_t>(UniformBelow(rng, i));
    std::swap((*v)[i - 1], (*v)[j]);
  }
}

// ---- listing

bool IsHidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

bool HasImageExtension(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".pgm" || ext == ".ppm" ||
         ext == ".bmp";
}

struct Candidate {
  std::string path;
  bool named = false;   // given explicitly: never capped
  int64_t bytes = 0;
};

void ScanFolder(const std::string& folder, std::vector<Candidate>* out) {
  const size_t before = out->size();
  try {
    fs::recursive_directory_iterator it(folder);
    for (; it != fs::recursive_directory_iterator(); ++it) {
      const fs::directory_entry& entry = *it;
      if (IsHidden(entry.path())) {
        if (entry.is_directory()) it.disable_recursion_pending();
        continue;
      }
      if (entry.is_regular_file() && HasImageExtension(entry.path())) {
        out->push_back(Candidate{entry.path().string(), false, 0});
      }
    }
  } catch (const fs::filesystem_error& e) {
    Fail(folder, std::string("cannot list: ") + e.what());
  }
  if (out->size() == before) {
    Fail(folder, "no images (.jpg .jpeg .png .pgm .ppm .bmp) in this folder or below");
  }
}

// ---- patches

// 8-bit RGB (channels 3) or gray (channels 1).
cv::Mat DecodeSource(const std::string& path, int64_t channels) {
  cv::Mat out;
  try {
    const cv::Mat bgr = cv::imread(path, cv::IMREAD_COLOR);
    if (bgr.empty()) Fail(path, "cannot read or decode image");
    cv::cvtColor(bgr, out, channels == 1 ? cv::COLOR_BGR2GRAY : cv::COLOR_BGR2RGB);
  } catch (const cv::Exception& e) {
    Fail(path, std::string("cannot decode image: ") + e.what());
  }
  return out;
}

// The source and its successive 2x INTER_AREA reductions, while a reduction
// still covers h_out x w_out. Level 0 is the source itself (no copy).
std::vector<cv::Mat> Pyramid(const cv::Mat& image, int64_t h_out, int64_t w_out) {
  std::vector<cv::Mat> levels{image};
  while (true) {
    const int rows = levels.back().rows / 2;
    const int cols = levels.back().cols / 2;
    if (rows < h_out || cols < w_out) break;
    cv::Mat next;
    cv::resize(levels.back(), next, cv::Size(cols, rows), 0, 0, cv::INTER_AREA);
    levels.push_back(std::move(next));
  }
  return levels;
}

// Cuts one patch of the source (levels: its Pyramid; see the header for the
// recipe) into dst, C x H x W.
void CutPatch(const std::vector<cv::Mat>& levels, const PoolBuildOptions& o,
              std::mt19937_64& rng, uint8_t* dst) {
  const int64_t rows = levels[0].rows;
  const int64_t cols = levels[0].cols;
  const int64_t c_out = o.channels;
  const int64_t h_out = o.height;
  const int64_t w_out = o.width;
  // The largest box of the target's aspect that fits the source.
  double base_h = static_cast<double>(rows);
  double base_w = static_cast<double>(cols);
  if (cols * h_out >= rows * w_out) {
    base_w = static_cast<double>(rows) * static_cast<double>(w_out) / static_cast<double>(h_out);
  } else {
    base_h = static_cast<double>(cols) * static_cast<double>(h_out) / static_cast<double>(w_out);
  }
  const double scale = o.min_scale * std::pow(o.max_scale / o.min_scale, UniformUnit(rng));
  const int64_t crop_h = std::clamp<int64_t>(std::llround(scale * base_h), 1, rows);
  const int64_t crop_w = std::clamp<int64_t>(std::llround(scale * base_w), 1, cols);
  const auto x0 = static_cast<int64_t>(UniformBelow(rng, static_cast<uint64_t>(cols - crop_w + 1)));
  const auto y0 = static_cast<int64_t>(UniformBelow(rng, static_cast<uint64_t>(rows - crop_h + 1)));
  const bool flip_bit = (rng() >> 63) != 0;   // drawn always: `flip` changes no crop
  const bool flip = o.flip && flip_bit;

  // The most reduced level where the crop still covers the target: the
  // resize below then reads at most about 4 x H x W pixels.
  size_t level = 0;
  double sx = 1.0;
  double sy = 1.0;
  for (size_t l = levels.size() - 1; l > 0; --l) {
    const double lx = static_cast<double>(levels[l].cols) / static_cast<double>(cols);
    const double ly = static_cast<double>(levels[l].rows) / static_cast<double>(rows);
    if (static_cast<double>(crop_w) * lx >= static_cast<double>(w_out) &&
        static_cast<double>(crop_h) * ly >= static_cast<double>(h_out)) {
      level = l;
      sx = lx;
      sy = ly;
      break;
    }
  }
  const cv::Mat& src = levels[level];
  const int64_t lx0 = std::clamp<int64_t>(std::llround(static_cast<double>(x0) * sx), 0,
                                          src.cols - 1);
  const int64_t ly0 = std::clamp<int64_t>(std::llround(static_cast<double>(y0) * sy), 0,
                                          src.rows - 1);
  const int64_t lw = std::clamp<int64_t>(std::llround(static_cast<double>(crop_w) * sx), 1,
                                         src.cols - lx0);
  const int64_t lh = std::clamp<int64_t>(std::llround(static_cast<double>(crop_h) * sy), 1,
                                         src.rows - ly0);
  const cv::Mat crop = src(cv::Rect(static_cast<int>(lx0), static_cast<int>(ly0),
                                    static_cast<int>(lw), static_cast<int>(lh)));
  cv::Mat patch;
  if (lw == w_out && lh == h_out) {
    patch = crop;
  } else {
    const int interpolation = (lw >= w_out && lh >= h_out) ? cv::INTER_AREA : cv::INTER_LINEAR;
    cv::resize(crop, patch, cv::Size(static_cast<int>(w_out), static_cast<int>(h_out)), 0, 0,
               interpolation);
  }
  // HWC (rows may be strided) -> CHW, mirrored when flip.
  const int64_t plane = h_out * w_out;
  for (int64_t y = 0; y < h_out; ++y) {
    const uint8_t* row = patch.ptr<uint8_t>(static_cast<int>(y));
    uint8_t* out = dst + y * w_out;
    for (int64_t x = 0; x < w_out; ++x) {
      const uint8_t* px = row + (flip ? w_out - 1 - x : x) * c_out;
      for (int64_t c = 0; c < c_out; ++c) out[c * plane + x] = px[c];
    }
  }
}

std::string UtcNow() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

PoolSourceList ListPoolSources(const std::vector<std::string>& sources, int64_t max_per_folder) {
  if (sources.empty()) {
    throw std::invalid_argument("sources: give at least one image file or folder");
  }
  if (max_per_folder < 0) {
    throw std::invalid_argument("max_per_folder must be >= 0, got " +
                                std::to_string(max_per_folder));
  }
  std::vector<Candidate> all;
  for (const std::string& source : sources) {
    std::error_code ec;
    const fs::file_status st = fs::status(source, ec);
    if (st.type() == fs::file_type::not_found) Fail(source, "no such file or folder");
    if (ec) Fail(source, "cannot stat: " + ec.message());
    if (fs::is_directory(st)) {
      ScanFolder(source, &all);
    } else if (fs::is_regular_file(st)) {
      all.push_back(Candidate{source, true, 0});
    } else {
      Fail(source, "not a regular file or folder");
    }
  }

  // Sorted by path, each path once (named explicitly wins over scanned).
  std::sort(all.begin(), all.end(),
            [](const Candidate& a, const Candidate& b) { return a.path < b.path; });
  std::vector<Candidate> unique;
  for (Candidate& c : all) {
    if (!unique.empty() && unique.back().path == c.path) {
      unique.back().named = unique.back().named || c.named;
      continue;
    }
    unique.push_back(std::move(c));
  }

  PoolSourceList list;
  list.found = static_cast<int64_t>(unique.size());
  std::unordered_map<int64_t, int64_t> files_of_size;
  for (Candidate& c : unique) {
    std::error_code ec;
    const uintmax_t size = fs::file_size(c.path, ec);
    if (ec) Fail(c.path, "cannot stat: " + ec.message());
    c.bytes = static_cast<int64_t>(size);
    ++files_of_size[c.bytes];
  }

  // Identical bytes: only files of equal size can be; hash those.
  std::vector<bool> keep(unique.size(), true);
  std::set<std::pair<int64_t, uint64_t>> seen;
  for (size_t i = 0; i < unique.size(); ++i) {
    if (files_of_size[unique[i].bytes] < 2) continue;
    if (!seen.emplace(unique[i].bytes, FileFnv1a64(unique[i].path)).second) {
      keep[i] = false;
      ++list.duplicates;
    }
  }

  // At most max_per_folder scanned files per parent folder, evenly spaced.
  if (max_per_folder > 0) {
    std::map<std::string, std::vector<size_t>> by_folder;
    for (size_t i = 0; i < unique.size(); ++i) {
      if (keep[i] && !unique[i].named) {
        by_folder[fs::path(unique[i].path).parent_path().string()].push_back(i);
      }
    }
    for (const auto& entry : by_folder) {
      const std::vector<size_t>& members = entry.second;
      const auto n = static_cast<int64_t>(members.size());
      if (n <= max_per_folder) continue;
      std::vector<bool> chosen(members.size(), false);
      for (int64_t k = 0; k < max_per_folder; ++k) {
        chosen[static_cast<size_t>(k * n / max_per_folder)] = true;
      }
      for (size_t j = 0; j < members.size(); ++j) {
        if (!chosen[j]) {
          keep[members[j]] = false;
          ++list.capped;
        }
      }
    }
  }

  for (size_t i = 0; i < unique.size(); ++i) {
    if (keep[i]) list.files.push_back(PoolSourceFile{unique[i].path, unique[i].bytes});
  }
  return list;
}

void ValidatePoolBuildOptions(const PoolBuildOptions& o) {
  if (o.sources.empty()) {
    throw std::invalid_argument("sources: give at least one image file or folder");
  }
  if (o.count < 1 || o.count > kMaxCount) {
    throw std::invalid_argument("count must be in [1, " + std::to_string(kMaxCount) + "], got " +
                                std::to_string(o.count));
  }
  if (o.channels != 1 && o.channels != 3) {
    throw std::invalid_argument("channels must be 1 or 3, got " + std::to_string(o.channels));
  }
  const std::string side_range =
      " must be in [" + std::to_string(kMinSide) + ", " + std::to_string(kMaxSide) + "], got ";
  if (o.height < kMinSide || o.height > kMaxSide) {
    throw std::invalid_argument("height" + side_range + std::to_string(o.height));
  }
  if (o.width < kMinSide || o.width > kMaxSide) {
    throw std::invalid_argument("width" + side_range + std::to_string(o.width));
  }
  if (!(o.min_scale > 0.0 && o.min_scale <= 1.0)) {
    throw std::invalid_argument("min_scale must be in (0, 1], got " + Num(o.min_scale));
  }
  if (!(o.max_scale >= o.min_scale && o.max_scale <= 1.0)) {
    throw std::invalid_argument("max_scale must be in [min_scale = " + Num(o.min_scale) +
                                ", 1], got " + Num(o.max_scale));
  }
  if (o.max_per_folder < 0) {
    throw std::invalid_argument("max_per_folder must be >= 0, got " +
                                std::to_string(o.max_per_folder));
  }
  const int64_t bytes = o.count * o.channels * o.height * o.width;
  if (bytes > kMaxPoolBytes) {
    throw std::invalid_argument("count x shape = " + std::to_string(bytes) +
                                " bytes, more than the 64 GiB a pool may hold");
  }
}

PoolBuildResult BuildPool(const PoolBuildOptions& options, const PoolProgress& progress) {
  const auto start = std::chrono::steady_clock::now();
  ValidatePoolBuildOptions(options);
  const PoolSourceList list = ListPoolSources(options.sources, options.max_per_folder);
  const int64_t count = options.count;
  const auto num_sources = static_cast<int64_t>(list.files.size());
  if (num_sources == 0) {
    throw std::runtime_error("sources: no image files to cut patches from");
  }

  // Which source each patch comes from: count / S each (the remainder to a
  // random subset of sources), in a random order.
  std::mt19937_64 order_rng(DeriveSeed(options.seed, 0));
  std::vector<int64_t> source_order(static_cast<size_t>(num_sources));
  for (int64_t s = 0; s < num_sources; ++s) source_order[static_cast<size_t>(s)] = s;
  Shuffle(&source_order, order_rng);
  std::vector<int64_t> owner(static_cast<size_t>(count));
  for (int64_t k = 0; k < count; ++k) {
    owner[static_cast<size_t>(k)] = source_order[static_cast<size_t>(k % num_sources)];
  }
  Shuffle(&owner, order_rng);
  // The pool slots of each source, in pool order: slots[first[s] .. first[s + 1]).
  std::vector<int64_t> first(static_cast<size_t>(num_sources) + 1, 0);
  for (int64_t s : owner) ++first[static_cast<size_t>(s) + 1];
  for (size_t s = 0; s + 1 < first.size(); ++s) first[s + 1] += first[s];
  std::vector<int64_t> slots(static_cast<size_t>(count));
  {
    std::vector<int64_t> next(first.begin(), first.end() - 1);
    for (int64_t k = 0; k < count; ++k) {
      slots[static_cast<size_t>(next[static_cast<size_t>(owner[static_cast<size_t>(k)])]++)] = k;
    }
  }

  PoolBuildResult result;
  result.header.count = count;
  result.header.channels = options.channels;
  result.header.height = options.height;
  result.header.width = options.width;
  result.header.data_offset = kPoolHeaderBytes;
  const int64_t image_bytes = result.header.image_bytes();
  result.pixels.resize(static_cast<size_t>(result.header.pixel_bytes()));

  nlohmann::json used = nlohmann::json::array();
  int64_t done = 0;
  int64_t reported = 0;
  if (progress) progress(0, count);
  for (int64_t s = 0; s < num_sources; ++s) {
    const int64_t begin = first[static_cast<size_t>(s)];
    const int64_t end = first[static_cast<size_t>(s) + 1];
    if (begin == end) continue;
    const PoolSourceFile& file = list.files[static_cast<size_t>(s)];
    const cv::Mat image = DecodeSource(file.path, options.channels);
    std::mt19937_64 rng(DeriveSeed(options.seed, static_cast<uint64_t>(s) + 1));
    try {
      const std::vector<cv::Mat> levels = Pyramid(image, options.height, options.width);
      for (int64_t j = begin; j < end; ++j) {
        const int64_t slot = slots[static_cast<size_t>(j)];
        CutPatch(levels, options, rng, result.pixels.data() + slot * image_bytes);
        ++done;
        if (progress && done - reported >= kProgressEvery) {
          progress(done, count);
          reported = done;
        }
      }
    } catch (const cv::Exception& e) {
      Fail(file.path, std::string("cannot cut a patch: ") + e.what());
    }
    used.push_back(nlohmann::json{{"path", file.path},
                                  {"bytes", file.bytes},
                                  {"width", image.cols},
                                  {"height", image.rows},
                                  {"patches", end - begin}});
  }
  if (progress && reported != count) progress(count, count);

  nlohmann::json& p = result.provenance;
  p["format"] = "dfkd-pool";
  p["format_version"] = kPoolFormatVersion;
  p["builder_version"] = kPoolBuilderVersion;
  p["opencv_version"] = CV_VERSION;
  p["count"] = count;
  p["shape"] = nlohmann::json::array({options.channels, options.height, options.width});
  p["seed"] = options.seed;
  p["min_scale"] = options.min_scale;
  p["max_scale"] = options.max_scale;
  p["scale_sampling"] =
      "log-uniform fraction of the largest HxW-aspect box in the source (square: its shorter side)";
  p["flip"] = options.flip;
  p["max_per_folder"] = options.max_per_folder;
  p["requested_sources"] = options.sources;
  p["files_found"] = list.found;
  p["duplicates_skipped"] = list.duplicates;
  p["capped_skipped"] = list.capped;
  p["sources_without_patches"] = num_sources - static_cast<int64_t>(used.size());
  p["sources"] = std::move(used);
  p["pixels_fnv1a64"] = Hex64(Fnv1a64(result.pixels.data(), result.pixels.size(), kFnvOffset));
  p["built_at"] = UtcNow();
  p["build_seconds"] = SecondsSince(start);
  return result;
}

nlohmann::json BuildPoolFile(const PoolBuildOptions& options, const std::string& out_path,
                             const PoolProgress& progress) {
  const auto start = std::chrono::steady_clock::now();
  PoolBuildResult result = BuildPool(options, progress);
  WritePoolFile(out_path, result.header, result.pixels.data());
  result.provenance["file"] = out_path;
  result.provenance["bytes"] = result.header.file_bytes();
  result.provenance["build_seconds"] = SecondsSince(start);
  WritePoolProvenance(out_path, result.provenance);
  return result.provenance;
}

}  // namespace dfkd::common
