// `dfkd results` layout: rows, ±, delta sign, n, and the table in every
// format parsed back.
#include "client/results_table.h"

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/text_table.h"

namespace dfkd::client {
namespace {

const std::string kPm = "\xc2\xb1";   // ±

api::ResultCell* AddCell(api::ResultsReply* reply, int64_t id, const std::string& name,
                         const std::string& kind, const std::string& method, bool kdci,
                         const std::string& variant, int64_t baseline, double mean, double sd,
                         int n, int runs, const std::string& axes = "{}") {
  api::ResultCell* c = reply->add_cells();
  c->set_experiment_id(id);
  c->set_name(name);
  c->set_kind(kind);
  c->set_method(method);
  c->set_kdci(kdci);
  c->set_variant(variant);
  c->set_baseline_experiment_id(baseline);
  c->set_mean(mean);
  c->set_std(sd);
  c->set_n(n);
  c->set_runs(runs);
  c->set_axes_json(axes);
  return c;
}

// Teacher, scratch, noise and dafl without and with KDCI, and the no_prior
// ablation of each KDCI cell, in the scheduler's expansion order.
api::ResultsReply DemoReply() {
  api::ResultsReply r;
  r.set_campaign_id(7);
  r.set_campaign_name("fmnist-demo");
  AddCell(&r, 1, "teacher:t", "train_teacher", "teacher", false, "", 0, 93.05, 0, 1, 1);
  AddCell(&r, 2, "scratch", "train_student_scratch", "scratch", false, "", 0, 91.9, 0.1, 2, 2);
  AddCell(&r, 3, "noise/base", "distill", "noise", false, "", 0, 70.12, 1.2, 2, 2,
          R"({"distill.method":"noise","kdci.enabled":false})");
  AddCell(&r, 4, "noise/kdci", "distill", "noise", true, "", 3, 72.30, 0.8, 2, 2,
          R"({"distill.method":"noise","kdci.enabled":true})");
  AddCell(&r, 8, "noise/kdci/no_prior", "distill", "noise", true, "no_prior", 3, 0, 0, 0, 2,
          R"({"distill.method":"noise","kdci.enabled":true})");
  AddCell(&r, 5, "dafl/base", "distill", "dafl", false, "", 0, 80.10, 0.5, 2, 2,
          R"({"distill.method":"dafl","kdci.enabled":false})");
  AddCell(&r, 6, "dafl/kdci", "distill", "dafl", true, "", 5, 79.60, 0.4, 2, 2,
          R"({"distill.method":"dafl","kdci.enabled":true})");
  AddCell(&r, 7, "dafl/kdci/no_prior", "distill", "dafl", true, "no_prior", 5, 80.40, 0, 1, 2,
          R"({"distill.method":"dafl","kdci.enabled":true})");
  return r;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

// A small RFC 4180 reader: fields may be quoted, "" is a quote.
std::vector<std::vector<std::string>> ParseCsv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      row.push_back(field);
      field.clear();
    } else if (c == '\n') {
      row.push_back(field);
      field.clear();
      rows.push_back(row);
      row.clear();
    } else {
      field += c;
    }
  }
  return rows;
}

// Markdown table rows ("| a | b |") as cells.
std::vector<std::vector<std::string>> ParseMarkdownTable(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  for (const std::string& line : Lines(text)) {
    if (line.empty() || line[0] != '|') continue;
    std::vector<std::string> cells;
    std::string body = line.substr(1);
    size_t pos = 0;
    while (pos < body.size()) {
      const size_t bar = body.find(" |", pos);
      if (bar == std::string::npos) break;
      std::string cell = body.substr(pos, bar - pos);
      if (!cell.empty() && cell[0] == ' ') cell = cell.substr(1);
      cells.push_back(cell);
      pos = bar + 2;
    }
    rows.push_back(cells);
  }
  return rows;
}

TEST(ResultsTableTest, RowsInTableOneOrder) {
  const ResultsTable table = BuildResultsTable(DemoReply());
  EXPECT_EQ(table.campaign_id, 7);
  EXPECT_EQ(table.campaign_name, "fmnist-demo");
  std::vector<std::string> labels;
  for (const ResultsRow& row : table.rows) labels.push_back(row.label);
  EXPECT_EQ(labels, (std::vector<std::string>{"Teacher", "Student (scratch)", "noise", "dafl",
                                              "noise/no_prior", "dafl/no_prior"}));
  EXPECT_EQ(table.rows[0].kind, ResultsRow::Kind::kTeacher);
  EXPECT_EQ(table.rows[1].kind, ResultsRow::Kind::kScratch);
  EXPECT_EQ(table.rows[2].kind, ResultsRow::Kind::kMethod);
  EXPECT_EQ(table.rows[5].kind, ResultsRow::Kind::kVariant);
  EXPECT_EQ(table.rows[5].variant, "no_prior");
}

TEST(ResultsTableTest, MethodRowPairsBaselineWithKdci) {
  const ResultsTable table = BuildResultsTable(DemoReply());
  const ResultsRow& noise = table.rows[2];
  EXPECT_EQ(noise.baseline.experiment_id, 3);
  EXPECT_EQ(noise.kdci.experiment_id, 4);
  ASSERT_TRUE(noise.delta.has_value());
  EXPECT_NEAR(*noise.delta, 2.18, 1e-9);
  EXPECT_EQ(FormatMeanStd(noise.baseline), "70.12 " + kPm + " 1.20");
  EXPECT_EQ(FormatMeanStd(noise.kdci), "72.30 " + kPm + " 0.80");
  EXPECT_EQ(FormatDelta(noise.delta), "+2.18");
  EXPECT_EQ(FormatN(noise), "2");

  const ResultsRow& dafl = table.rows[3];
  EXPECT_EQ(FormatDelta(dafl.delta), "-0.50");
}

TEST(ResultsTableTest, ReferenceRowsHaveOneValue) {
  const ResultsTable table = BuildResultsTable(DemoReply());
  const ResultsRow& teacher = table.rows[0];
  EXPECT_EQ(FormatMeanStd(teacher.baseline), "93.05");   // n = 1: no ±
  EXPECT_EQ(FormatMeanStd(teacher.kdci), "-");
  EXPECT_FALSE(teacher.delta.has_value());
  EXPECT_EQ(FormatN(teacher), "1");
  EXPECT_EQ(FormatMeanStd(table.rows[1].baseline), "91.90 " + kPm + " 0.10");
}

TEST(ResultsTableTest, VariantRowsCompareWithTheirBaseline) {
  const ResultsTable table = BuildResultsTable(DemoReply());
  const ResultsRow& dafl_np = table.rows[5];
  EXPECT_EQ(dafl_np.baseline.experiment_id, 5);   // dafl/base, not dafl/kdci
  EXPECT_EQ(dafl_np.kdci.experiment_id, 7);
  EXPECT_EQ(FormatMeanStd(dafl_np.kdci), "80.40");
  EXPECT_EQ(FormatDelta(dafl_np.delta), "+0.30");
  EXPECT_EQ(FormatN(dafl_np), "2/2, 1/2");   // some seeds have not succeeded

  const ResultsRow& noise_np = table.rows[4];   // no seed succeeded yet
  EXPECT_EQ(FormatMeanStd(noise_np.kdci), "-");
  EXPECT_FALSE(noise_np.delta.has_value());
  EXPECT_EQ(FormatDelta(noise_np.delta), "-");
  EXPECT_EQ(FormatN(noise_np), "2/2, 0/2");
}

TEST(ResultsTableTest, DeltaSigns) {
  EXPECT_EQ(FormatDelta(1.234), "+1.23");
  EXPECT_EQ(FormatDelta(-1.5), "-1.50");
  EXPECT_EQ(FormatDelta(0.0), "+0.00");
  EXPECT_EQ(FormatDelta(-0.001), "+0.00");   // no "-0.00"
  EXPECT_EQ(FormatDelta(std::nullopt), "-");
}

TEST(ResultsTableTest, LoneKdciCellVariantWithoutKdciAndOtherAxes) {
  api::ResultsReply r;
  r.set_campaign_id(1);
  r.set_campaign_name("x");
  // kdci.enabled is not an axis: the base runs with KDCI, no baseline.
  AddCell(&r, 1, "dafl/0.1", "distill", "dafl", true, "", 0, 50, 1, 3, 3,
          R"({"distill.dafl.lr_g":0.1,"distill.method":"dafl","model.depth":16})");
  AddCell(&r, 2, "dafl/0.1/fast_lr", "distill", "dafl", false, "fast_lr", 1, 48, 2, 3, 3,
          R"({"distill.dafl.lr_g":0.1,"distill.method":"dafl","model.depth":16})");
  AddCell(&r, 3, "teacher:a", "train_teacher", "teacher", false, "", 0, 90, 0, 1, 1);
  AddCell(&r, 4, "teacher:b", "train_teacher", "teacher", false, "", 0, 91, 0, 1, 1);
  const ResultsTable table = BuildResultsTable(r);
  ASSERT_EQ(table.rows.size(), 4u);
  EXPECT_EQ(table.rows[0].label, "Teacher (a)");
  EXPECT_EQ(table.rows[1].label, "Teacher (b)");
  EXPECT_EQ(table.rows[2].label, "dafl (lr_g=0.1, depth=16)");
  EXPECT_FALSE(table.rows[2].baseline.present);
  EXPECT_EQ(FormatMeanStd(table.rows[2].kdci), "50.00 " + kPm + " 1.00");
  EXPECT_EQ(table.rows[3].label, "dafl/fast_lr (lr_g=0.1, depth=16, KDCI off)");
  EXPECT_EQ(FormatDelta(table.rows[3].delta), "-2.00");

  // The label holds commas: CSV quotes it and reads back whole.
  const auto csv = ParseCsv(RenderCsv(table));
  ASSERT_EQ(csv.size(), 5u);
  EXPECT_EQ(csv[3][1], "dafl (lr_g=0.1, depth=16)");
  EXPECT_EQ(csv[3][4], "lr_g=0.1, depth=16");
}

TEST(ResultsTableTest, TextTableIsAligned) {
  const std::string text = RenderResults(DemoReply(), ResultsFormat::kTable);
  const std::vector<std::string> lines = Lines(text);
  ASSERT_GE(lines.size(), 8u);
  EXPECT_NE(lines[0].find("campaign 7 \"fmnist-demo\""), std::string::npos);
  EXPECT_EQ(lines[1].rfind("method", 0), 0u);
  // Header and six rows; the last column is right-aligned, so every line of
  // the table has the same width.
  const size_t width = DisplayWidth(lines[1]);
  for (size_t i = 1; i <= 7; ++i) EXPECT_EQ(DisplayWidth(lines[i]), width) << lines[i];
  EXPECT_EQ(lines[2].rfind("Teacher", 0), 0u);
  EXPECT_EQ(lines[4].rfind("noise ", 0), 0u);
  EXPECT_NE(lines[4].find("70.12 " + kPm + " 1.20"), std::string::npos);
  EXPECT_NE(lines[4].find("+2.18"), std::string::npos);
  EXPECT_EQ(lines[5].rfind("dafl ", 0), 0u);
  EXPECT_NE(lines[5].find("-0.50"), std::string::npos);
  EXPECT_NE(text.find("variant rows"), std::string::npos);
  // No box drawing.
  EXPECT_EQ(text.find('|'), std::string::npos);
}

TEST(ResultsTableTest, MarkdownParsesBack) {
  const auto rows = ParseMarkdownTable(RenderResults(DemoReply(), ResultsFormat::kMarkdown));
  ASSERT_EQ(rows.size(), 8u);   // header, separator, six rows
  EXPECT_EQ(rows[0], (std::vector<std::string>{"method", "baseline", "+KDCI", "delta", "n"}));
  EXPECT_EQ(rows[1], (std::vector<std::string>{"---", "---:", "---:", "---:", "---:"}));
  EXPECT_EQ(rows[4], (std::vector<std::string>{"noise", "70.12 " + kPm + " 1.20",
                                               "72.30 " + kPm + " 0.80", "+2.18", "2"}));
  EXPECT_EQ(rows[7], (std::vector<std::string>{"dafl/no_prior", "80.10 " + kPm + " 0.50",
                                               "80.40", "+0.30", "2/2, 1/2"}));
}

TEST(ResultsTableTest, CsvParsesBack) {
  const auto rows = ParseCsv(RenderResults(DemoReply(), ResultsFormat::kCsv));
  ASSERT_EQ(rows.size(), 7u);
  ASSERT_EQ(rows[0].size(), 16u);
  EXPECT_EQ(rows[0][0], "kind");
  EXPECT_EQ(rows[0][15], "delta");
  for (const auto& row : rows) EXPECT_EQ(row.size(), 16u);
  // noise: kind, label, method, variant, axes, baseline (5), kdci (5), delta
  const auto& noise = rows[3];
  EXPECT_EQ(noise[0], "method");
  EXPECT_EQ(noise[1], "noise");
  EXPECT_EQ(noise[5], "3");
  EXPECT_DOUBLE_EQ(std::stod(noise[6]), 70.12);
  EXPECT_DOUBLE_EQ(std::stod(noise[7]), 1.2);
  EXPECT_EQ(noise[8], "2");
  EXPECT_EQ(noise[10], "4");
  EXPECT_DOUBLE_EQ(std::stod(noise[11]), 72.30);
  EXPECT_NEAR(std::stod(noise[15]), 2.18, 1e-9);
  // teacher: no +KDCI column, no delta
  EXPECT_EQ(rows[1][0], "teacher");
  EXPECT_EQ(rows[1][10], "");
  EXPECT_EQ(rows[1][15], "");
  // noise/no_prior: present, no value yet
  const auto& pending = rows[5];
  EXPECT_EQ(pending[0], "variant");
  EXPECT_EQ(pending[3], "no_prior");
  EXPECT_EQ(pending[10], "8");
  EXPECT_EQ(pending[11], "");
  EXPECT_EQ(pending[13], "0");
  EXPECT_EQ(pending[14], "2");
}

TEST(ResultsTableTest, JsonParsesBack) {
  const nlohmann::json j =
      nlohmann::json::parse(RenderResults(DemoReply(), ResultsFormat::kJson));
  EXPECT_EQ(j["campaign_id"], 7);
  EXPECT_EQ(j["campaign_name"], "fmnist-demo");
  EXPECT_EQ(j["metric"], "test_top1");
  ASSERT_EQ(j["rows"].size(), 6u);
  const nlohmann::json& teacher = j["rows"][0];
  EXPECT_EQ(teacher["kind"], "teacher");
  EXPECT_TRUE(teacher["kdci"].is_null());
  EXPECT_TRUE(teacher["delta"].is_null());
  const nlohmann::json& noise = j["rows"][2];
  EXPECT_EQ(noise["label"], "noise");
  EXPECT_DOUBLE_EQ(noise["baseline"]["mean"].get<double>(), 70.12);
  EXPECT_EQ(noise["baseline"]["n"], 2);
  EXPECT_EQ(noise["kdci"]["experiment_id"], 4);
  EXPECT_NEAR(noise["delta"].get<double>(), 2.18, 1e-9);
  EXPECT_LT(j["rows"][3]["delta"].get<double>(), 0);   // dafl: KDCI lost here
  EXPECT_TRUE(j["rows"][4]["delta"].is_null());
  EXPECT_EQ(j["rows"][5]["variant"], "no_prior");
}

TEST(ResultsTableTest, EmptyCampaignAndFormats) {
  api::ResultsReply r;
  r.set_campaign_id(3);
  r.set_campaign_name("empty");
  EXPECT_NE(RenderResults(r, ResultsFormat::kTable).find("(no experiments)"), std::string::npos);
  EXPECT_EQ(ParseCsv(RenderResults(r, ResultsFormat::kCsv)).size(), 1u);
  EXPECT_EQ(ParseResultsFormat("markdown"), ResultsFormat::kMarkdown);
  EXPECT_EQ(ParseResultsFormat("md"), ResultsFormat::kMarkdown);
  EXPECT_EQ(ParseResultsFormat("csv"), ResultsFormat::kCsv);
  EXPECT_EQ(ParseResultsFormat("json"), ResultsFormat::kJson);
  EXPECT_EQ(ParseResultsFormat("table"), ResultsFormat::kTable);
  EXPECT_FALSE(ParseResultsFormat("xml").has_value());
}

TEST(TextTableTest, WidthPadTruncateAndEscapes) {
  EXPECT_EQ(DisplayWidth("a" + kPm + "b"), 3u);
  EXPECT_EQ(Pad("ab", 4, Align::kLeft), "ab  ");
  EXPECT_EQ(Pad("ab", 4, Align::kRight), "  ab");
  EXPECT_EQ(TruncateToWidth("x" + kPm + "yz", 2), "x" + kPm);
  EXPECT_EQ(RenderColumns({{"a", "bb"}, {"ccc", "d"}}, {Align::kLeft, Align::kRight}),
            "a    bb\nccc   d\n");
  EXPECT_EQ(CsvField("plain"), "plain");
  EXPECT_EQ(CsvField("a,b"), "\"a,b\"");
  EXPECT_EQ(CsvField("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(MarkdownCell("a|b"), "a\\|b");
}

}  // namespace
}  // namespace dfkd::client
