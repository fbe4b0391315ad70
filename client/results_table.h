// `dfkd results`: a ResultsReply laid out like the paper's Table 1. Pure
// functions (no I/O) so the layout is unit-tested.
//
//   method             baseline       +KDCI          delta  n
//   Teacher            93.05          -              -      1
//   Student (scratch)  91.90 ± 0.10   -              -      2
//   noise              70.12 ± 1.20   72.30 ± 0.80   +2.18  2
//   dafl               80.10 ± 0.50   81.00 ± 0.40   +0.90  2
//   dafl/no_prior      80.10 ± 0.50   80.40 ± 0.30   +0.30  2
//
// Rows, top to bottom:
//   * reference rows: each teacher ("Teacher", or "Teacher (<name>)" when the
//     campaign has several) and the scratch student ("Student (scratch)"),
//     value in the baseline column;
//   * method rows: one per variant-free distill cell with KDCI off (baseline
//     column), joined with the KDCI-on cell compared to it (+KDCI column);
//     a KDCI-on cell without such a partner gets a row of its own;
//   * variant rows (ablations) "method/variant": the baseline column shows the
//     cell the variant is compared with (its baseline_experiment_id), the +KDCI
//     column the variant itself ("(KDCI off)" is added to the label when the
//     variant runs without KDCI).
// In every row, delta = second column - first column (when both have results).
// Axes other than distill.method and kdci.enabled are added to the label as
// "method (key=value, ...)" with the key's last path segment.
// Values: "mean ± std" with 2 decimals over the succeeded seeds; "mean" alone
// when n = 1; "-" when no seed has succeeded. n: the succeeded seeds; when the
// row's cells differ or some seeds have not succeeded, "n/runs" per cell.
#ifndef DFKD_CLIENT_RESULTS_TABLE_H_
#define DFKD_CLIENT_RESULTS_TABLE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dfkd/api/v1/scheduler.pb.h"

namespace dfkd::client {

namespace api = ::dfkd::api::v1;

enum class ResultsFormat { kTable, kMarkdown, kCsv, kJson };
// "table", "markdown" (or "md"), "csv", "json".
std::optional<ResultsFormat> ParseResultsFormat(const std::string& name);

// One cell of the campaign, as shown in one column.
struct CellStat {
  bool present = false;     // an experiment fills this column
  int64_t experiment_id = 0;
  std::string name;         // experiment name, e.g. "dafl/kdci"
  double mean = 0;
  double stddev = 0;        // sample std (n-1); 0 when n < 2
  int n = 0;                // succeeded seeds
  int runs = 0;             // all seeds
  bool has_value() const { return present && n > 0; }
};

struct ResultsRow {
  enum class Kind { kTeacher, kScratch, kMethod, kVariant };
  Kind kind = Kind::kMethod;
  std::string label;        // first column
  std::string method;       // ResultCell.method
  std::string variant;      // "" except variant rows
  std::string axes;         // "key=value, ..." of the other axes; "" when none
  CellStat baseline;        // first value column
  CellStat kdci;            // second value column ("+KDCI")
  std::optional<double> delta;   // kdci.mean - baseline.mean when both have values
};

struct ResultsTable {
  int64_t campaign_id = 0;
  std::string campaign_name;
  std::vector<ResultsRow> rows;
};

ResultsTable BuildResultsTable(const api::ResultsReply& reply);

const char* RowKindName(ResultsRow::Kind kind);   // teacher | scratch | method | variant
std::string FormatMeanStd(const CellStat& cell);   // "71.23 ± 0.45", "71.23", "-"
std::string FormatDelta(const std::optional<double>& delta);   // "+1.20", "-0.35", "-"
std::string FormatN(const ResultsRow& row);        // "3", "2/3, 3/3", "-"

// Aligned text with a title line.
std::string RenderTable(const ResultsTable& table);
// A title line, a blank line and a GitHub Markdown table.
std::string RenderMarkdown(const ResultsTable& table);
// A header and one line per row; numbers unrounded, empty when absent:
//   kind,label,method,variant,axes,baseline_experiment,baseline_mean,baseline_std,
//   baseline_n,baseline_runs,kdci_experiment,kdci_mean,kdci_std,kdci_n,kdci_runs,delta
std::string RenderCsv(const ResultsTable& table);
// {"campaign_id", "campaign_name", "metric": "test_top1",
//  "rows": [{"kind", "label", "method", "variant", "axes",
//            "baseline": {experiment_id, name, mean, std, n, runs} | null,
//            "kdci": {...} | null, "delta": number | null}]}
nlohmann::json ResultsToJson(const ResultsTable& table);

// BuildResultsTable then the format; JSON is pretty-printed with a final '\n'.
std::string RenderResults(const api::ResultsReply& reply, ResultsFormat format);

}  // namespace dfkd::client

#endif  // DFKD_CLIENT_RESULTS_TABLE_H_
