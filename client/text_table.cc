#include "client/text_table.h"

#include <algorithm>

namespace dfkd::client {
namespace {

bool IsContinuationByte(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

}  // namespace

size_t DisplayWidth(const std::string& text) {
  size_t width = 0;
  for (char c : text) {
    if (!IsContinuationByte(c)) ++width;
  }
  return width;
}

std::string Pad(const std::string& text, size_t width, Align align) {
  const size_t have = DisplayWidth(text);
  if (have >= width) return text;
  const std::string fill(width - have, ' ');
  return align == Align::kLeft ? text + fill : fill + text;
}

std::string TruncateToWidth(const std::string& text, size_t width) {
  size_t columns = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (IsContinuationByte(text[i])) continue;
    if (columns == width) return text.substr(0, i);
    ++columns;
  }
  return text;
}

std::string RenderColumns(const std::vector<std::vector<std::string>>& rows,
                          const std::vector<Align>& align) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (row.size() > widths.size()) widths.resize(row.size(), 0);
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], DisplayWidth(row[c]));
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      const Align a = c < align.size() ? align[c] : Align::kLeft;
      if (c > 0) line += "  ";
      line += Pad(row[c], widths[c], a);
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line;
    out += '\n';
  }
  return out;
}

std::string CsvField(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

std::string MarkdownCell(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '|') {
      out += "\\|";
    } else if (c == '\n' || c == '\r') {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace dfkd::client
