// A store that another process keeps from being read (a WAL recovery in progress: readers wait too; see
// StoreLockHolder): connects are refused within a second instead of waiting for the lock, open connections are cut
// once the store has been unreadable for a second, and once the lock ends connects are admitted and revocation works
// as before.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cerrno>

#include "plugin_fixture.hpp"
#include "store_lock_holder.hpp"

namespace nbdxm::test {
namespace {

using namespace std::chrono_literals;

class PluginLockedStore : public PluginTest {
 protected:
  std::string volume_file(const std::string& name) {
    const std::string path = dir_.file(name + ".img");
    create_volume_file(path, kGiB);
    return path;
  }
};

TEST_F(PluginLockedStore, RefusesConnectsAndCutsOpenConnectionsWhileTheStoreIsLockedThenServesAgain) {
  store_.add({"export-a", volume_file("a")});
  store_.add({"export-b", volume_file("b")});
  auto server = serve();
  NbdClient open_a(server->socket(), "export-a");
  open_a.write(pattern(4096, 'a'), 0);

  // Held for at most 8 s: long enough for a slow (sanitized) server to answer within its 1 s bound, shorter than the
  // 10 s busy timeout a connect would wait without that bound, after which it would find export-b active and be
  // admitted.
  StoreLockHolder holder(dir_, store_.path(), StoreLockHolder::Lock::recovery, 8s);
  const auto refusal = NbdClient::connect_error(server->socket(), "export-b");
  EXPECT_TRUE(holder.holding()) << "the connect was answered only once the lock had ended";
  EXPECT_TRUE(refusal.has_value()) << "a connect was admitted without reading the store";
  EXPECT_NE(server->log().find(fmt::format("the state store {} could not be read within 1000 ms", store_.path())),
            std::string::npos)
      << server->log();
  EXPECT_NE(server->log().find("refusing the connection to export export-b"), std::string::npos) << server->log();

  // Unreadable for more than a second: nothing proves export-a live any more.
  int err = 0;
  ASSERT_TRUE(eventually([&] { return (err = open_a.try_write(pattern(4096, 'b'), 4096)) != 0; }, 20s));
  EXPECT_EQ(err, ESHUTDOWN);
  EXPECT_TRUE(holder.holding()) << "the connection was cut only once the lock had ended";
  EXPECT_NE(server->log().find(fmt::format("the state store {} could not be read for 1000 ms", store_.path())),
            std::string::npos)
      << server->log();

  // Once the lock ends, connects are admitted again and a revocation still cuts within its bound.
  holder.release();
  NbdClient again_a(server->socket(), "export-a");
  again_a.write(pattern(4096, 'e'), 8192);
  NbdClient open_b(server->socket(), "export-b");
  open_b.write(pattern(4096, 'c'), 0);
  store_.store().set_export_status("export-b", "revoked", "revoked after the lock");
  ASSERT_TRUE(eventually([&] { return (err = open_b.try_write(pattern(4096, 'd'), 4096)) != 0; }, 20s));
  EXPECT_EQ(err, ESHUTDOWN);
  EXPECT_NE(server->log().find("export export-b became revoked (revoked after the lock)"), std::string::npos)
      << server->log();
}

}  // namespace
}  // namespace nbdxm::test
