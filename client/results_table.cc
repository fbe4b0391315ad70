#include "client/results_table.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "client/cli_common.h"
#include "client/text_table.h"

namespace dfkd::client {
namespace {

constexpr char kPlusMinus[] = "\xc2\xb1";   // "±" in UTF-8

bool IsTeacher(const api::ResultCell& c) {
  return c.kind() == "train_teacher" || (c.kind().empty() && c.method() == "teacher");
}

bool IsScratch(const api::ResultCell& c) {
  return c.kind() == "train_student_scratch" || (c.kind().empty() && c.method() == "scratch");
}

CellStat StatOf(const api::ResultCell& c) {
  CellStat s;
  s.present = true;
  s.experiment_id = c.experiment_id();
  s.name = c.name();
  s.mean = c.mean();
  s.stddev = c.std();
  s.n = c.n();
  s.runs = c.runs();
  return s;
}

// "key=value, ..." for the axes other than distill.method and kdci.enabled.
std::string OtherAxes(const std::string& axes_json) {
  const nlohmann::json axes = nlohmann::json::parse(axes_json, nullptr, false);
  if (!axes.is_object()) return "";
  std::string out;
  for (auto it = axes.begin(); it != axes.end(); ++it) {
    if (it.key() == "distill.method" || it.key() == "kdci.enabled") continue;
    std::string key = it.key();
    const size_t dot = key.rfind('.');
    if (dot != std::string::npos) key = key.substr(dot + 1);
    const std::string value =
        it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
    if (!out.empty()) out += ", ";
    out += key + "=" + value;
  }
  return out;
}

std::string WithNotes(const std::string& label, const std::vector<std::string>& notes) {
  std::string joined;
  for (const std::string& note : notes) {
    if (note.empty()) continue;
    if (!joined.empty()) joined += ", ";
    joined += note;
  }
  return joined.empty() ? label : label + " (" + joined + ")";
}

std::string TitleLine(const ResultsTable& table) {
  return "campaign " + std::to_string(table.campaign_id) + " \"" + table.campaign_name +
         "\": final test top-1 (%), mean " + kPlusMinus + " std over seeds";
}

bool HasVariants(const ResultsTable& table) {
  for (const ResultsRow& row : table.rows) {
    if (row.kind == ResultsRow::Kind::kVariant) return true;
  }
  return false;
}

constexpr char kVariantNote[] =
    "variant rows: baseline = the cell the variant is compared with, +KDCI = the variant; "
    "delta = +KDCI - baseline";

std::vector<std::string> RowCells(const ResultsRow& row) {
  return {row.label, FormatMeanStd(row.baseline), FormatMeanStd(row.kdci), FormatDelta(row.delta),
          FormatN(row)};
}

std::string JsonNumber(double value) { return nlohmann::json(value).dump(); }

nlohmann::json CellJson(const CellStat& c) {
  if (!c.present) return nullptr;
  return {{"experiment_id", c.experiment_id}, {"name", c.name}, {"mean", c.mean},
          {"std", c.stddev}, {"n", c.n}, {"runs", c.runs}};
}

}  // namespace

std::optional<ResultsFormat> ParseResultsFormat(const std::string& name) {
  if (name == "table" || name == "text") return ResultsFormat::kTable;
  if (name == "markdown" || name == "md") return ResultsFormat::kMarkdown;
  if (name == "csv") return ResultsFormat::kCsv;
  if (name == "json") return ResultsFormat::kJson;
  return std::nullopt;
}

ResultsTable BuildResultsTable(const api::ResultsReply& reply) {
  ResultsTable table;
  table.campaign_id = reply.campaign_id();
  table.campaign_name = reply.campaign_name();

  std::map<int64_t, const api::ResultCell*> by_id;
  int teachers = 0;
  for (const api::ResultCell& c : reply.cells()) {
    by_id[c.experiment_id()] = &c;
    if (IsTeacher(c)) ++teachers;
  }

  std::vector<ResultsRow> reference, methods, variants;
  std::map<int64_t, size_t> method_row_of;   // KDCI-off base cell -> index in methods
  // Pass 1: reference rows and the KDCI-off, variant-free method cells.
  for (const api::ResultCell& c : reply.cells()) {
    ResultsRow row;
    row.method = c.method();
    if (IsTeacher(c)) {
      row.kind = ResultsRow::Kind::kTeacher;
      std::string name = c.name();
      if (name.rfind("teacher:", 0) == 0) name = name.substr(8);
      row.label = teachers > 1 ? "Teacher (" + name + ")" : "Teacher";
      row.baseline = StatOf(c);
      reference.push_back(std::move(row));
    } else if (IsScratch(c)) {
      row.kind = ResultsRow::Kind::kScratch;
      row.label = "Student (scratch)";
      row.baseline = StatOf(c);
      reference.push_back(std::move(row));
    } else if (c.variant().empty() && !c.kdci()) {
      row.kind = ResultsRow::Kind::kMethod;
      row.axes = OtherAxes(c.axes_json());
      row.label = WithNotes(c.method(), {row.axes});
      row.baseline = StatOf(c);
      method_row_of[c.experiment_id()] = methods.size();
      methods.push_back(std::move(row));
    }
  }
  // Pass 2: KDCI-on method cells join their baseline's row; variants.
  for (const api::ResultCell& c : reply.cells()) {
    if (IsTeacher(c) || IsScratch(c)) continue;
    if (c.variant().empty() && c.kdci()) {
      auto it = method_row_of.find(c.baseline_experiment_id());
      if (c.baseline_experiment_id() != 0 && it != method_row_of.end() &&
          !methods[it->second].kdci.present) {
        methods[it->second].kdci = StatOf(c);
        continue;
      }
      ResultsRow row;
      row.kind = ResultsRow::Kind::kMethod;
      row.method = c.method();
      row.axes = OtherAxes(c.axes_json());
      row.label = WithNotes(c.method(), {row.axes});
      row.kdci = StatOf(c);
      methods.push_back(std::move(row));
    } else if (!c.variant().empty()) {
      ResultsRow row;
      row.kind = ResultsRow::Kind::kVariant;
      row.method = c.method();
      row.variant = c.variant();
      row.axes = OtherAxes(c.axes_json());
      row.label = WithNotes(c.method() + "/" + c.variant(),
                            {row.axes, c.kdci() ? "" : "KDCI off"});
      row.kdci = StatOf(c);
      auto baseline = by_id.find(c.baseline_experiment_id());
      if (c.baseline_experiment_id() != 0 && baseline != by_id.end()) {
        row.baseline = StatOf(*baseline->second);
      }
      variants.push_back(std::move(row));
    }
  }

  for (auto* part : {&reference, &methods, &variants}) {
    for (ResultsRow& row : *part) {
      if (row.baseline.has_value() && row.kdci.has_value()) {
        row.delta = row.kdci.mean - row.baseline.mean;
      }
      table.rows.push_back(std::move(row));
    }
  }
  return table;
}

const char* RowKindName(ResultsRow::Kind kind) {
  switch (kind) {
    case ResultsRow::Kind::kTeacher: return "teacher";
    case ResultsRow::Kind::kScratch: return "scratch";
    case ResultsRow::Kind::kMethod: return "method";
    case ResultsRow::Kind::kVariant: return "variant";
  }
  return "method";
}

std::string FormatMeanStd(const CellStat& cell) {
  if (!cell.has_value()) return "-";
  if (cell.n == 1) return FormatFixed(cell.mean, 2);
  return FormatFixed(cell.mean, 2) + " " + kPlusMinus + " " + FormatFixed(cell.stddev, 2);
}

std::string FormatDelta(const std::optional<double>& delta) {
  if (!delta) return "-";
  std::string text = FormatFixed(*delta, 2);
  if (text == "-0.00") text = "0.00";
  if (text[0] != '-') text = "+" + text;
  return text;
}

std::string FormatN(const ResultsRow& row) {
  std::vector<const CellStat*> cells;
  for (const CellStat* c : {&row.baseline, &row.kdci}) {
    if (c->present) cells.push_back(c);
  }
  if (cells.empty()) return "-";
  bool uniform = true;
  for (const CellStat* c : cells) {
    uniform = uniform && c->n == c->runs && c->n == cells.front()->n;
  }
  if (uniform) return std::to_string(cells.front()->n);
  std::string out;
  for (const CellStat* c : cells) {
    if (!out.empty()) out += ", ";
    out += std::to_string(c->n) + "/" + std::to_string(c->runs);
  }
  return out;
}

std::string RenderTable(const ResultsTable& table) {
  std::string out = TitleLine(table) + "\n";
  if (table.rows.empty()) return out + "(no experiments)\n";
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"method", "baseline", "+KDCI", "delta", "n"});
  for (const ResultsRow& row : table.rows) rows.push_back(RowCells(row));
  out += RenderColumns(rows, {Align::kLeft, Align::kRight, Align::kRight, Align::kRight,
                              Align::kRight});
  if (HasVariants(table)) out += std::string("(") + kVariantNote + ")\n";
  return out;
}

std::string RenderMarkdown(const ResultsTable& table) {
  std::string out = "**" + MarkdownCell(table.campaign_name) + "** (campaign " +
                    std::to_string(table.campaign_id) + "): final test top-1 (%), mean " +
                    kPlusMinus + " std over seeds\n\n";
  out += "| method | baseline | +KDCI | delta | n |\n";
  out += "| --- | ---: | ---: | ---: | ---: |\n";
  for (const ResultsRow& row : table.rows) {
    out += "|";
    for (const std::string& cell : RowCells(row)) out += " " + MarkdownCell(cell) + " |";
    out += "\n";
  }
  if (HasVariants(table)) out += std::string("\n_") + kVariantNote + "_\n";
  return out;
}

std::string RenderCsv(const ResultsTable& table) {
  std::string out =
      "kind,label,method,variant,axes,baseline_experiment,baseline_mean,baseline_std,"
      "baseline_n,baseline_runs,kdci_experiment,kdci_mean,kdci_std,kdci_n,kdci_runs,delta\n";
  auto stat = [](const CellStat& c) {
    if (!c.present) return std::string(",,,,");
    std::string s = std::to_string(c.experiment_id) + ",";
    s += c.n > 0 ? JsonNumber(c.mean) + "," + JsonNumber(c.stddev) + "," : std::string(",,");
    return s + std::to_string(c.n) + "," + std::to_string(c.runs);
  };
  for (const ResultsRow& row : table.rows) {
    out += std::string(RowKindName(row.kind)) + "," + CsvField(row.label) + "," +
           CsvField(row.method) + "," + CsvField(row.variant) + "," + CsvField(row.axes) + "," +
           stat(row.baseline) + "," + stat(row.kdci) + "," +
           (row.delta ? JsonNumber(*row.delta) : std::string()) + "\n";
  }
  return out;
}

nlohmann::json ResultsToJson(const ResultsTable& table) {
  nlohmann::json rows = nlohmann::json::array();
  for (const ResultsRow& row : table.rows) {
    rows.push_back({{"kind", RowKindName(row.kind)},
                    {"label", row.label},
                    {"method", row.method},
                    {"variant", row.variant},
                    {"axes", row.axes},
                    {"baseline", CellJson(row.baseline)},
                    {"kdci", CellJson(row.kdci)},
                    {"delta", row.delta ? nlohmann::json(*row.delta) : nlohmann::json(nullptr)}});
  }
  return {{"campaign_id", table.campaign_id},
          {"campaign_name", table.campaign_name},
          {"metric", "test_top1"},
          {"rows", rows}};
}

std::string RenderResults(const api::ResultsReply& reply, ResultsFormat format) {
  const ResultsTable table = BuildResultsTable(reply);
  switch (format) {
    case ResultsFormat::kTable: return RenderTable(table);
    case ResultsFormat::kMarkdown: return RenderMarkdown(table);
    case ResultsFormat::kCsv: return RenderCsv(table);
    case ResultsFormat::kJson: return ResultsToJson(table).dump(2) + "\n";
  }
  return RenderTable(table);
}

}  // namespace dfkd::client
