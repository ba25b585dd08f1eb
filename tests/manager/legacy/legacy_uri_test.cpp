// LegacyUri: the two forms of a source URI, and one clear refusal (exit 2) for anything else.
#include <gtest/gtest.h>

#include "legacy_uri.hpp"
#include "nbdxm/error.hpp"

namespace nbdxm::legacy {
namespace {

TEST(LegacyUri, HostForm) {
  const auto uri = LegacyUri::parse("mariadb://oma@db.example:3307/migratekit_oma");
  EXPECT_EQ(uri.user, "oma");
  EXPECT_EQ(uri.host, "db.example");
  EXPECT_EQ(uri.port, 3307u);
  EXPECT_EQ(uri.database, "migratekit_oma");
  EXPECT_EQ(uri.socket, "");
  EXPECT_EQ(uri.display(), "mariadb://oma@db.example:3307/migratekit_oma");
}

TEST(LegacyUri, SocketForm) {
  const auto uri = LegacyUri::parse("mariadb:///migratekit_oma?socket=/run/mysqld/mysqld.sock");
  EXPECT_FALSE(uri.user);
  EXPECT_EQ(uri.host, "");
  EXPECT_EQ(uri.port, 0u);
  EXPECT_EQ(uri.socket, "/run/mysqld/mysqld.sock");
  EXPECT_EQ(uri.display(), "mariadb:///migratekit_oma?socket=/run/mysqld/mysqld.sock");
}

TEST(LegacyUri, RefusesWhatIsNotOneOfTheForms) {
  for (const char* bad :
       {"mysql://h/db", "mariadb://h", "mariadb://h/", "mariadb:///db", "mariadb://h:0/db", "mariadb://h:99999/db",
        "mariadb://h:x/db", "mariadb://h/db?socket=/s", "mariadb:///db?socket=relative", "mariadb:///db?sock=/s",
        "mariadb://@h/db", "mariadb://u:pw@h/db", "mariadb://h/d/b"}) {
    try {
      LegacyUri::parse(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ExitCode::usage) << bad;
      EXPECT_NE(std::string(e.what()).find("mariadb://[USER@]HOST[:PORT]/DATABASE"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace nbdxm::legacy
