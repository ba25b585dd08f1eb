#pragma once
// How nbdxm prints results: for people, tables (lists) and aligned "key  value" lines (one record); with --json,
// the same data as JSON objects keyed by column name (lists as arrays of them). Every command prints through here,
// so the text and the JSON of a command show the same fields.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "commands.hpp"
#include "nbdxm/records.hpp"

namespace nbdxm::cli {

using Json = nlohmann::ordered_json;  // keeps the columns in the store's order

// One object per row, keyed by the column names of its table (NbdExport: of the export_devices view). NULL columns
// are null; requires_device_correlation is a boolean.
Json to_json(const Job& job);
Json to_json(const DeviceMapping& mapping);
Json to_json(const VmDisk& disk);
Json to_json(const NbdExport& nbd_export);

template <class Record>
Json to_json(const std::vector<Record>& records) {
  Json array = Json::array();
  for (const auto& record : records) array.push_back(to_json(record));
  return array;
}

// A value as text: strings bare but printable() (store values come from outside), null as "-", arrays joined
// with ", ".
std::string text_value(const Json& value);
// A table of the given columns (their names as headings) with one line per object of rows; always has the heading.
std::string format_table(const Json& rows, const std::vector<std::string>& columns);
// The same table from text cells (one vector per row, in the order of columns, values as text_value gives them,
// store strings through printable()):
// for long lists, where building JSON objects only to print them costs more than the rest of the command.
std::string format_table(const std::vector<std::vector<std::string>>& cells, const std::vector<std::string>& columns);
// One "key  value" line per member, values aligned.
std::string format_record(const Json& object);

// Prints rows (a JSON array of objects) as a JSON array with --json, else as a table of the given columns.
void print_list(const GlobalOptions& options, const Json& rows, const std::vector<std::string>& columns);
// Prints one object as JSON with --json, else as "key  value" lines.
void print_record(const GlobalOptions& options, const Json& object);
// Prints object with --json, else text (which should end with a newline).
void print_result(const GlobalOptions& options, const Json& object, const std::string& text);

}  // namespace nbdxm::cli
