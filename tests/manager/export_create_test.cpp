// `nbdxm export create` end to end: the real daemon, real nbdkit servers with the built plugin, real clients.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <nlohmann/json.hpp>

#include <algorithm>

#include "manager_harness.hpp"

namespace nbdxm::test {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

class ExportCreateTest : public ManagerTest {};

std::string uri_of(const NbdExport& e) { return fmt::format("nbd://127.0.0.1:{}/{}", e.port, e.export_name); }

TEST_F(ExportCreateTest, NbdcopyFromASourceFileLandsInTheVolume) {
  manager_.start();
  const auto volume = add_volume("job-1", "disk-2000");
  const CliResult created = create(volume);
  ASSERT_EQ(created.code, 0) << created.err;
  const NbdExport e = export_of(volume);
  EXPECT_EQ(e.export_name, "migration-vol-" + volume.uuid);
  EXPECT_EQ(e.status, "active");
  EXPECT_EQ(e.port, ports_.low());  // the lowest port of the range
  EXPECT_NE(created.out.find("uri    " + uri_of(e)), std::string::npos) << created.out;
  EXPECT_NE(created.out.find("state  active"), std::string::npos) << created.out;

  const std::string source = dir_.file("source.img");
  write_file(source, pattern(48 * kMiB, 7));
  std::string output;
  ASSERT_EQ(run_program({"nbdcopy", source, uri_of(e)}, &output), 0) << output;
  // nbdcopy has closed its connections: everything it wrote is in the volume's file.
  EXPECT_TRUE(files_equal(source, volume.path, 48 * kMiB));
  EXPECT_EQ(read_file(volume.path, 48 * kMiB, kMiB), std::string(kMiB, '\0'));  // nothing beyond the source
}

TEST_F(ExportCreateTest, TwoDisksOfOneJobLandInTheirOwnVolumes) {
  manager_.start();
  const auto first = add_volume("job-2", "disk-2000");
  const auto second = add_volume("job-2", "disk-2001");
  ASSERT_EQ(create(first).code, 0);
  ASSERT_EQ(create(second).code, 0);
  const NbdExport a = export_of(first);
  const NbdExport b = export_of(second);
  EXPECT_NE(a.export_name, b.export_name);
  EXPECT_NE(a.port, b.port);

  const std::string source_a = dir_.file("a.img");
  const std::string source_b = dir_.file("b.img");
  write_file(source_a, pattern(16 * kMiB, 1));
  write_file(source_b, pattern(16 * kMiB, 2));
  std::string output;
  ASSERT_EQ(run_program({"nbdcopy", source_a, uri_of(a)}, &output), 0) << output;
  ASSERT_EQ(run_program({"nbdcopy", source_b, uri_of(b)}, &output), 0) << output;
  EXPECT_TRUE(files_equal(source_a, first.path, 16 * kMiB));
  EXPECT_TRUE(files_equal(source_b, second.path, 16 * kMiB));
}

TEST_F(ExportCreateTest, JsonOutputAndNbdinfoAgree) {
  manager_.start();
  const auto volume = add_volume("job-3", "disk-1");
  const CliResult created = nbdxm({"--json", "export", "create", "--job", "job-3", "--disk-id", "disk-1"});
  ASSERT_EQ(created.code, 0) << created.err;
  const Json out = Json::parse(created.out);
  EXPECT_EQ(out["name"], "migration-vol-" + volume.uuid);
  EXPECT_EQ(out["state"], "active");
  EXPECT_EQ(out["port"], ports_.low());
  EXPECT_EQ(out["uri"], fmt::format("nbd://127.0.0.1:{}/migration-vol-{}", ports_.low(), volume.uuid));
  std::string info;
  ASSERT_EQ(run_program({"nbdinfo", "--size", out["uri"].get<std::string>()}, &info), 0) << info;
  EXPECT_EQ(std::stoll(info), kGiB);
}

TEST_F(ExportCreateTest, NameOverrideIsValidatedAndUsed) {
  manager_.start();
  const auto volume = add_volume("job-4", "disk-1");
  const CliResult bad = create(volume, {"--name", "-starts-with-dash"});
  EXPECT_EQ(bad.code, 2) << bad.err;
  EXPECT_TRUE(store_.list_exports().empty());
  const CliResult good = create(volume, {"--name", "vm1.disk-1_a"});
  ASSERT_EQ(good.code, 0) << good.err;
  EXPECT_EQ(export_of(volume).export_name, "vm1.disk-1_a");
  EXPECT_EQ(TcpClient::connect_error(export_of(volume).port, "vm1.disk-1_a"), std::nullopt);
}

TEST_F(ExportCreateTest, RevokeThenCreateAgainGivesTheSameNameAndWorks) {
  manager_.start();
  const auto volume = add_volume("job-5", "disk-1");
  ASSERT_EQ(create(volume).code, 0);
  const NbdExport first = export_of(volume);
  ASSERT_EQ(nbdxm({"export", "revoke", first.export_name}).code, 0);
  const CliResult again = create(volume);
  ASSERT_EQ(again.code, 0) << again.err;
  const NbdExport second = export_of(volume);
  EXPECT_EQ(second.export_name, first.export_name);
  EXPECT_EQ(second.status, "active");
  EXPECT_EQ(store_.list_exports().size(), 1u);  // the revoked row was reused: names stay unique
  TcpClient client(second.port, second.export_name);
  client.write(pattern(4096, 3), 0);
  client.disconnect();
  EXPECT_EQ(read_file(volume.path, 0, 4096), pattern(4096, 3));
}

TEST_F(ExportCreateTest, APortHeldByAnotherListenerIsSkipped) {
  manager_.start();
  FileDescriptor other(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;  // as servers do, so that connections of an earlier test in TIME_WAIT do not get in the way
  ::setsockopt(other.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(ports_.low()));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(other.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(other.get(), 1), 0);

  const auto volume = add_volume("job-6", "disk-1");
  ASSERT_EQ(create(volume).code, 0);
  EXPECT_EQ(export_of(volume).port, ports_.low() + 1);
}

TEST_F(ExportCreateTest, AnExhaustedRangeIsAClearErrorWithExitCode4) {
  Manager small(db_path_, dir_.path(), ports_.range(2));
  small.start();
  const auto a = add_volume("job-7", "disk-1");
  const auto b = add_volume("job-7", "disk-2");
  const auto c = add_volume("job-7", "disk-3");
  ASSERT_EQ(create(a).code, 0);
  ASSERT_EQ(create(b).code, 0);
  // The manager records each export life's counters soon after they change; create's own handshake changes them
  // (a connection opened, then closed). The snapshot follows their settled record.
  ASSERT_TRUE(wait_until(
      [&] {
        const auto counters = store_.current_export_counters();
        return counters.size() == 2 && std::all_of(counters.begin(), counters.end(), [](const auto& life) {
                 return life.connections_total >= 1 && life.connections_open == 0;
               });
      },
      30s));
  const std::string before = dump(db_.sql());
  const CliResult exhausted = create(c);
  EXPECT_EQ(exhausted.code, 4);
  EXPECT_NE(exhausted.err.find("no free port in " + ports_.range(2)), std::string::npos) << exhausted.err;
  EXPECT_EQ(std::count(exhausted.err.begin(), exhausted.err.end(), '\n'), 1) << exhausted.err;
  EXPECT_EQ(dump(db_.sql()), before);
}

TEST_F(ExportCreateTest, WithoutAManagerItExits6AndLeavesNoLiveRowAndNoHeldPort) {
  const auto volume = add_volume("job-8", "disk-1");
  const CliResult created = create(volume);
  EXPECT_EQ(created.code, 6);
  EXPECT_NE(created.err.find("no manager is running"), std::string::npos) << created.err;
  EXPECT_NE(created.err.find("nbdxm serve"), std::string::npos) << created.err;
  EXPECT_TRUE(store_.live_exports().empty());
  EXPECT_TRUE(port_bindable(ports_.low()));

  // A manager that has gone away (its row is still in the store) is no manager either.
  manager_.start();
  manager_.kill();
  const CliResult after_crash = create(volume);
  EXPECT_EQ(after_crash.code, 6) << after_crash.err;
  EXPECT_TRUE(store_.live_exports().empty());
}

TEST_F(ExportCreateTest, ARefusedDeviceExits6WithTheReasonAndFreesThePort) {
  manager_.start();
  const auto volume = add_volume("job-9", "disk-1");
  std::filesystem::remove(volume.path);  // the volume is not attached (its device is missing)
  const CliResult created = create(volume);
  EXPECT_EQ(created.code, 6);
  EXPECT_NE(created.err.find(volume.path), std::string::npos) << created.err;
  EXPECT_TRUE(store_.live_exports().empty());
  const NbdExport e = export_of(volume);
  EXPECT_EQ(e.status, "failed");
  EXPECT_TRUE(wait_until([&] { return port_bindable(e.port); }, 30s));
}

TEST_F(ExportCreateTest, RefusalsNameTheProblemAndChangeNothing) {
  manager_.start();
  const auto volume = add_volume("job-10", "disk-1");
  store_.add_disk(new_disk("job-10", "disk-unlinked", 1));
  const std::string before = dump(db_.sql());

  const CliResult no_job = nbdxm({"export", "create", "--job", "nope", "--disk-id", "disk-1"});
  EXPECT_EQ(no_job.code, 3) << no_job.err;
  const CliResult no_disk = nbdxm({"export", "create", "--job", "job-10", "--disk-id", "nope"});
  EXPECT_EQ(no_disk.code, 3) << no_disk.err;
  const CliResult unlinked = nbdxm({"export", "create", "--job", "job-10", "--disk-id", "disk-unlinked"});
  EXPECT_EQ(unlinked.code, 4) << unlinked.err;
  EXPECT_NE(unlinked.err.find("nbdxm disk link"), std::string::npos) << unlinked.err;
  EXPECT_EQ(dump(db_.sql()), before);

  ASSERT_EQ(create(volume).code, 0);
  const CliResult twice = create(volume);
  EXPECT_EQ(twice.code, 4) << twice.err;
  EXPECT_NE(twice.err.find("already has the live export"), std::string::npos) << twice.err;

  const auto other = add_volume("job-10", "disk-2");
  const CliResult taken_port = create(other, {"--port", std::to_string(export_of(volume).port)});
  EXPECT_EQ(taken_port.code, 4) << taken_port.err;
  store_.set_job_status("job-10", "completed");
  const CliResult ended = create(other);
  EXPECT_EQ(ended.code, 4) << ended.err;
  EXPECT_NE(ended.err.find("has ended"), std::string::npos) << ended.err;
}

}  // namespace
}  // namespace nbdxm::test
