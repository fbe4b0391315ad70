// Progress reporting for long work.
//
// On a terminal: one line redrawn in place with a bar, the caller's fields,
// and the ETA. Elsewhere (logs, CI, a worker's pipe): a plain line every 5% of
// the work and at every Message(), so logs stay readable.
#ifndef DFKD_WORKER_ENGINE_PROGRESS_H_
#define DFKD_WORKER_ENGINE_PROGRESS_H_

#include <chrono>
#include <cstdint>
#include <ostream>
#include <string>

namespace dfkd::worker {

class Progress {
 public:
  // `tty` decides the style; pass IsTerminal(stderr) for the real thing.
  Progress(std::string title, int64_t total, bool tty, std::ostream& os);
  // `done` units finished out of total; `fields` e.g. "loss 0.31  acc 91.2%".
  void Update(int64_t done, const std::string& fields);
  // A line that stays (an evaluation result, a checkpoint).
  void Message(const std::string& line);
  void Finish();
  bool quiet = false;

 private:
  void Draw(int64_t done, const std::string& fields, bool final_line);

  std::string title_;
  int64_t total_;
  bool tty_;
  std::ostream& os_;
  int64_t start_done_ = -1;
  int64_t last_bucket_ = -1;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
  std::string last_fields_;
  int64_t last_done_ = 0;
};

bool StderrIsTerminal();

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_ENGINE_PROGRESS_H_
