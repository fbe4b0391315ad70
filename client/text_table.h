// Box-free aligned text tables and CSV/Markdown escaping, shared by
// `dfkd results`, `dfkd ls` and `dfkd status`. Widths count UTF-8 code points
// (one terminal column each: "±" is one column, three bytes).
#ifndef DFKD_CLIENT_TEXT_TABLE_H_
#define DFKD_CLIENT_TEXT_TABLE_H_

#include <string>
#include <vector>

namespace dfkd::client {

enum class Align { kLeft, kRight };

// Terminal columns of a UTF-8 string (code points).
size_t DisplayWidth(const std::string& text);
// `text` padded with spaces to `width` columns.
std::string Pad(const std::string& text, size_t width, Align align);
// The longest prefix of `text` (whole code points) that fits in `width` columns.
std::string TruncateToWidth(const std::string& text, size_t width);

// Rows of cells in columns separated by two spaces, one line each (ending in
// '\n', no trailing spaces). Rows may be shorter than others; `align` names
// each column's alignment (missing = left).
std::string RenderColumns(const std::vector<std::vector<std::string>>& rows,
                          const std::vector<Align>& align);

// A CSV field (RFC 4180): quoted when it holds a comma, quote or line break.
std::string CsvField(const std::string& text);
// A Markdown table cell: '|' escaped, line breaks as spaces.
std::string MarkdownCell(const std::string& text);

}  // namespace dfkd::client

#endif  // DFKD_CLIENT_TEXT_TABLE_H_
