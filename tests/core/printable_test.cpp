// printable(): what every text output and log line passes store values and client input through.
#include "nbdxm/printable.hpp"

#include <gtest/gtest.h>

#include <string>

namespace nbdxm::test {
namespace {

using namespace std::string_literals;

TEST(Printable, KeepsPlainTextAndUtf8) {
  EXPECT_EQ(printable("web01 [ds1] web01/web01.vmdk"), "web01 [ds1] web01/web01.vmdk");
  EXPECT_EQ(printable("Größe 日本 🙂"), "Größe 日本 🙂");
  EXPECT_EQ(printable(""), "");
}

TEST(Printable, EscapesTerminalSequencesAndLineBreaks) {
  EXPECT_EQ(printable("vm\x1b]0;pwned\x07name\nsecond line\r"), "vm\\x1b]0;pwned\\x07name\\nsecond line\\r");
  EXPECT_EQ(printable("a\tb\x7f"), "a\\tb\\x7f");
  EXPECT_EQ(printable("nul\0byte"s), "nul\\x00byte");
  EXPECT_EQ(printable("\x1b[2J\x1b[31mred"), "\\x1b[2J\\x1b[31mred");
}

TEST(Printable, EscapesTheBackslashSoThatEscapesAreUnambiguous) {
  EXPECT_EQ(printable("C:\\vm\\n"), "C:\\\\vm\\\\n");
  EXPECT_NE(printable("\\n"), printable("\n"));
}

TEST(Printable, EscapesC1ControlsSeparatorsAndBidiOverrides) {
  EXPECT_EQ(printable("\xc2\x9b"
                      "31m"),
            "\\u009b31m");                      // 8-bit CSI, encoded as UTF-8
  EXPECT_EQ(printable("\xc2\x85"), "\\u0085");  // NEL
  EXPECT_EQ(printable("a\xe2\x80\xa8"
                      "b"),
            "a\\u2028b");  // line separator
  EXPECT_EQ(printable("\xe2\x80\xae"
                      "gpj.exe"),
            "\\u202egpj.exe");
  EXPECT_EQ(printable("\xc2\xa0"), "\xc2\xa0");  // U+00A0 is printable
}

TEST(Printable, EscapesBytesThatAreNotUtf8) {
  EXPECT_EQ(printable("\x9b"
                      "31m"),
            "\\x9b31m");                                             // raw 8-bit CSI
  EXPECT_EQ(printable("\xc0\x8a"), "\\xc0\\x8a");                    // overlong line feed
  EXPECT_EQ(printable("\xed\xa0\x80"), "\\xed\\xa0\\x80");           // surrogate
  EXPECT_EQ(printable("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // above U+10FFFF
  EXPECT_EQ(printable("ab\xe6\x97"), "ab\\xe6\\x97");                // cut short at the end
  EXPECT_EQ(printable("\xff"), "\\xff");
}

TEST(Printable, NeverLeavesAControlByte) {
  std::string all;
  for (int byte = 0; byte < 256; ++byte) all += static_cast<char>(byte);
  for (const std::string& text : {all, all + "\xc2\x80\xc2\x9f"}) {
    for (const char c : printable(text)) {
      const auto byte = static_cast<unsigned char>(c);
      EXPECT_FALSE(byte < 0x20 || byte == 0x7F) << int{byte};
    }
  }
}

}  // namespace
}  // namespace nbdxm::test
