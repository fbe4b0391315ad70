#include "worker/engine/progress.h"

#include <unistd.h>

#include <cstdio>

namespace dfkd::worker {

bool StderrIsTerminal() { return isatty(STDERR_FILENO) == 1; }

Progress::Progress(std::string title, int64_t total, bool tty, std::ostream& os)
    : title_(std::move(title)), total_(total > 0 ? total : 1), tty_(tty), os_(os),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

namespace {
std::string FormatSeconds(double s) {
  char buf[32];
  int64_t t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) {
    snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  } else {
    snprintf(buf, sizeof buf, "%ld:%02ld", t / 60, t % 60);
  }
  return buf;
}
}  // namespace

void Progress::Draw(int64_t done, const std::string& fields, bool final_line) {
  auto now = std::chrono::steady_clock::now();
  double elapsed = std::chrono::duration<double>(now - start_).count();
  int64_t progressed = done - start_done_;
  double eta = progressed > 0 ? elapsed / progressed * (total_ - done) : 0.0;
  double frac = static_cast<double>(done) / total_;
  char head[64];
  snprintf(head, sizeof head, "%5.1f%% %ld/%ld", 100.0 * frac, done, total_);
  std::string line = title_ + " " + head;
  if (tty_) {
    const int width = 24;
    int fill = static_cast<int>(frac * width + 0.5);
    line = title_ + " [" + std::string(fill, '#') + std::string(width - fill, '.') +
           "] " + head;
  }
  line += "  " + fields + "  elapsed " + FormatSeconds(elapsed);
  if (done < total_) line += "  eta " + FormatSeconds(eta);
  if (tty_) {
    os_ << "\r\033[K" << line << (final_line ? "\n" : "") << std::flush;
  } else {
    os_ << line << "\n" << std::flush;
  }
  last_draw_ = now;
}

void Progress::Update(int64_t done, const std::string& fields) {
  if (start_done_ < 0) start_done_ = done > 0 ? done - 1 : 0;
  last_fields_ = fields;
  last_done_ = done;
  if (quiet) return;
  if (tty_) {
    auto now = std::chrono::steady_clock::now();
    if (done < total_ && now - last_draw_ < std::chrono::milliseconds(200)) return;
    Draw(done, fields, false);
    return;
  }
  int64_t bucket = done * 20 / total_;
  if (bucket != last_bucket_) {
    last_bucket_ = bucket;
    Draw(done, fields, false);
  }
}

void Progress::Message(const std::string& line) {
  if (quiet) return;
  if (tty_) os_ << "\r\033[K";
  os_ << line << "\n";
  if (tty_ && last_done_ > 0) Draw(last_done_, last_fields_, false);
  os_ << std::flush;
}

void Progress::Finish() {
  if (quiet || !tty_) return;
  Draw(last_done_, last_fields_, true);
}

}  // namespace dfkd::worker
