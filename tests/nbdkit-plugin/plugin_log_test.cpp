// nbdkit's log gets one line per event from the plugin, whatever the store holds: a device path from the store
// reaches the log with its control characters escaped. (nbdkit itself replaces the control characters of an export
// name a client asks for, before the plugin sees it.)
#include <gtest/gtest.h>

#include <string>

#include "plugin_fixture.hpp"

namespace nbdxm::test {
namespace {

const std::string kForgery = "\x1b]0;pwned\x07\nnbdkit: forged line";
const std::string kEscaped = "\\x1b]0;pwned\\x07\\nnbdkit: forged line";

class PluginLog : public PluginTest {
 protected:
  // Connects to export_name, expects a refusal, and returns nbdkit's log line that contains `expected`.
  std::string refusal_line(NbdkitServer& server, const std::string& export_name, const std::string& expected) {
    EXPECT_TRUE(NbdClient::connect_error(server.socket(), export_name).has_value()) << "served " << export_name;
    const std::string log = server.log();
    EXPECT_EQ(log.find('\x1b'), std::string::npos) << log;
    EXPECT_EQ(log.find("\nnbdkit: forged line"), std::string::npos) << "a value started a line of its own:\n" << log;
    const size_t at = log.find(expected);
    if (at == std::string::npos) {
      ADD_FAILURE() << "expected \"" << expected << "\" in nbdkit's log:\n" << log;
      return "";
    }
    const size_t start = log.rfind('\n', at) + 1;
    return log.substr(start, log.find('\n', at) - start);
  }
};

TEST_F(PluginLog, AStoreDevicePathIsLoggedEscaped) {
  store_.add({"export-a", dir_.file("vdq" + kForgery)});
  auto server = serve();
  const std::string line = refusal_line(*server, "export-a", dir_.file("vdq" + kEscaped));
  EXPECT_NE(line.find("export export-a: device"), std::string::npos) << line;
}

}  // namespace
}  // namespace nbdxm::test
