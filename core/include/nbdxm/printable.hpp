#pragma once
// Text made safe to show on a terminal or in a log line. Store values come from outside: VM names and VMDK paths
// from the customer's VMware, any column from any writer with raw SQL; export names from clients. Printed raw, an
// escape sequence in one of them would drive the operator's terminal, and a line feed would forge a log line.
#include <string>
#include <string_view>

namespace nbdxm {

// text with everything a terminal or a log reader would act on written as a visible escape, on one line:
// C0 controls and DEL as \n, \r, \t or \xNN (ESC is \x1b); C1 controls (U+0080 to U+009F), line and paragraph
// separators and bidirectional overrides as \uXXXX; bytes that are not UTF-8 as \xNN; and the backslash as \\,
// so that an escape in the output always means one in the value. Other UTF-8 passes unchanged. JSON output does
// not use this: its own escaping is exact.
std::string printable(std::string_view text);

}  // namespace nbdxm
