// Mean and sample standard deviation of a cell's per-seed results (the
// "mean ± std over n seeds" of a paper table).
#ifndef DFKD_SERVER_POLICY_SUMMARY_H_
#define DFKD_SERVER_POLICY_SUMMARY_H_

#include <vector>

namespace dfkd::server {

struct Summary {
  double mean = 0;
  double std = 0;   // sample standard deviation (n - 1); 0 when n < 2
  int n = 0;
};

Summary Summarize(const std::vector<double>& values);

}  // namespace dfkd::server

#endif  // DFKD_SERVER_POLICY_SUMMARY_H_
