// Who may reach an export, end to end: `export create --tls` (a key of the export's own) and `--allow-from` (the
// allowlist its server checks), with the real manager (direct backend), real nbdkit servers and real libnbd clients
// (nbdinfo, nbdcopy, libnbd over sockets bound to a chosen source address).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "manager_harness.hpp"

namespace nbdxm::test {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

class ExportAccessTest : public ManagerTest {
 protected:
  // `export create --json` with the extra flags; the parsed output (an empty object when it failed).
  Json create_json(const Volume& volume, const std::vector<std::string>& extra, CliResult* result = nullptr) {
    std::vector<std::string> args{"--json", "export", "create", "--job", volume.job_id, "--disk-id", volume.disk_id};
    args.insert(args.end(), extra.begin(), extra.end());
    CliResult r = nbdxm(args);
    if (result != nullptr) *result = r;
    EXPECT_EQ(r.code, 0) << r.err;
    return r.code == 0 ? Json::parse(r.out) : Json::object();
  }
  Json show_json(const std::string& name) {
    const CliResult r = nbdxm({"--json", "export", "show", name});
    EXPECT_EQ(r.code, 0) << r.err;
    return r.code == 0 ? Json::parse(r.out) : Json::object();
  }
};

// nbdinfo --size URI: the size, or nullopt (with nbdinfo's words in *output) when it cannot connect.
std::optional<int64_t> nbdinfo_size(const std::string& uri, std::string* output = nullptr) {
  std::string out;
  if (run_program({"nbdinfo", "--size", uri}, &out) != 0) {
    if (output != nullptr) *output = out;
    return std::nullopt;
  }
  return std::stoll(out);
}

std::string tls_uri(int port, const std::string& name, const std::string& key) {
  return fmt::format("nbds://{}@127.0.0.1:{}/{}?tls-psk-file={}", name, port, name, key);
}

// The hex key of a PSK file (`identity:hexkey`).
std::string key_of(const std::string& psk_file) {
  std::string text = read_file(psk_file);
  const auto colon = text.find(':');
  return text.substr(colon + 1, 64);
}

bool file_contains(const std::string& path, const std::string& needle) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return false;
  return read_file(path).find(needle) != std::string::npos;
}

struct NbdCloser {
  void operator()(nbd_handle* h) const { nbd_close(h); }
};

// Connects to 127.0.0.1:port from `source` (a loopback address) and asks for the export; nullopt when the server
// serves it, else libnbd's error.
std::optional<std::string> connect_error_from(const std::string& source, int port, const std::string& name) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::string("socket failed");
  sockaddr_in local{};
  local.sin_family = AF_INET;
  ::inet_pton(AF_INET, source.c_str(), &local.sin_addr);
  sockaddr_in remote{};
  remote.sin_family = AF_INET;
  remote.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &remote.sin_addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&remote), sizeof remote) != 0) {
    ::close(fd);
    return std::string("cannot connect from ") + source;
  }
  std::unique_ptr<nbd_handle, NbdCloser> h(nbd_create());
  nbd_set_export_name(h.get(), name.c_str());
  if (nbd_connect_socket(h.get(), fd) == -1) return std::string(nbd_get_error());  // libnbd owns fd now
  return nbd_get_size(h.get()) < 0 ? std::optional<std::string>(nbd_get_error()) : std::nullopt;
}

TEST_F(ExportAccessTest, TlsExportServesOnlyClientsHoldingItsKey) {
  manager_.start();
  const auto volume = add_volume("job-tls", "disk-1");
  const Json out = create_json(volume, {"--tls"});
  ASSERT_FALSE(out.empty());
  const NbdExport e = export_of(volume);
  EXPECT_TRUE(e.tls);
  EXPECT_EQ(out["tls"], true);
  const std::string key_file = out["tls_psk_file"].get<std::string>();
  EXPECT_EQ(out["uri"], tls_uri(e.port, e.export_name, key_file));
  EXPECT_EQ(std::filesystem::path(key_file).parent_path(), std::filesystem::path(db_path_).parent_path() / "tls");

  // The key file: 0600, one line `NAME:64 hex digits`.
  struct stat st {};
  ASSERT_EQ(::stat(key_file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  const std::string key = key_of(key_file);
  EXPECT_EQ(read_file(key_file), e.export_name + ":" + key + "\n");
  EXPECT_EQ(key.find_first_not_of("0123456789abcdef"), std::string::npos);

  // `export show` gives the same; the URI works as is with nbdinfo and nbdcopy.
  const Json shown = show_json(e.export_name);
  EXPECT_EQ(shown["tls"], true);
  EXPECT_EQ(shown["tls_psk_file"], key_file);
  EXPECT_EQ(shown["uri"], out["uri"]);
  EXPECT_EQ(nbdinfo_size(out["uri"]), kGiB);
  const std::string source = dir_.file("source.img");
  write_file(source, pattern(8 * kMiB, 3));
  std::string output;
  ASSERT_EQ(run_program({"nbdcopy", source, out["uri"].get<std::string>()}, &output), 0) << output;
  EXPECT_TRUE(files_equal(source, volume.path, 8 * kMiB));

  // Without TLS, or with another key under the same identity, the server refuses.
  EXPECT_TRUE(TcpClient::connect_error(e.port, e.export_name).has_value());
  EXPECT_FALSE(nbdinfo_size(fmt::format("nbd://127.0.0.1:{}/{}", e.port, e.export_name)));
  const std::string wrong = dir_.file("wrong.psk");
  write_file(wrong, e.export_name + ":" + std::string(64, 'a') + "\n");
  ::chmod(wrong.c_str(), 0600);
  EXPECT_FALSE(nbdinfo_size(tls_uri(e.port, e.export_name, wrong)));

  // The key is nowhere in the store's files, the manager's log or the listings.
  for (const auto& path : {db_path_, db_path_ + "-wal", dir_.path() + "/manager.log"}) {
    EXPECT_FALSE(file_contains(path, key)) << path;
  }
  const CliResult list = nbdxm({"--json", "export", "list"});
  EXPECT_EQ(list.out.find(key), std::string::npos);
  EXPECT_EQ(list.out.find(key_file), std::string::npos);
  EXPECT_EQ(nbdxm({"export", "show", e.export_name}).out.find(key), std::string::npos);
}

TEST_F(ExportAccessTest, ACreatedAgainExportHasANewKeyAndTheOldOneOpensNothing) {
  manager_.start();
  const auto volume = add_volume("job-renew", "disk-1");
  const Json first = create_json(volume, {"--tls"});
  ASSERT_FALSE(first.empty());
  const std::string first_file = first["tls_psk_file"].get<std::string>();
  const std::string held = dir_.file("held.psk");  // what a client kept of the first key
  write_file(held, read_file(first_file));
  ::chmod(held.c_str(), 0600);
  const NbdExport e = export_of(volume);
  ASSERT_TRUE(nbdinfo_size(tls_uri(e.port, e.export_name, held)));

  ASSERT_EQ(nbdxm({"export", "revoke", e.export_name}).code, 0);
  EXPECT_TRUE(wait_until([&] { return !std::filesystem::exists(first_file); }, 10s))
      << "the key of an ended export must be deleted";

  const Json second = create_json(volume, {"--tls"});
  ASSERT_FALSE(second.empty());
  const std::string second_file = second["tls_psk_file"].get<std::string>();
  EXPECT_NE(second_file, first_file);
  EXPECT_NE(key_of(second_file), key_of(held));
  const NbdExport again = export_of(volume);
  EXPECT_EQ(again.export_name, e.export_name);
  std::string refusal;
  EXPECT_FALSE(nbdinfo_size(tls_uri(again.port, again.export_name, held), &refusal));
  EXPECT_EQ(nbdinfo_size(second["uri"]), kGiB);
}

TEST_F(ExportAccessTest, AKeyWriteThatACrashCutShortLeavesNoFileOnceAManagerStarts) {
  const std::string key_dir = (std::filesystem::path(db_path_).parent_path() / "tls").string();
  std::filesystem::create_directories(key_dir);
  const std::string partial = key_dir + "/migration-vol-9.20261130T141116123Z.psk.tmp";
  write_file(partial, "migration-vol-9:00");
  manager_.start();
  EXPECT_TRUE(wait_until([&] { return !std::filesystem::exists(partial); }, 10s)) << partial << " is left";
}

TEST_F(ExportAccessTest, ServeTlsRequireIsTheDefaultAndNoTlsOptsOut) {
  manager_.start();  // a manager without --tls: exports without TLS
  const auto plain = add_volume("job-default", "disk-1");
  EXPECT_EQ(create_json(plain, {})["tls"], false);
  EXPECT_FALSE(TcpClient::connect_error(export_of(plain).port, export_of(plain).export_name).has_value());
  manager_.stop();

  const std::string second_dir = dir_.path() + "/second";  // its own log and run directory
  std::filesystem::create_directories(second_dir);
  Manager requiring(db_path_, second_dir, ports_.range(), {"--tls", "require"});
  requiring.start();
  const auto secured = add_volume("job-default", "disk-2");
  const Json out = create_json(secured, {});
  EXPECT_EQ(out["tls"], true);
  const NbdExport s = export_of(secured);
  EXPECT_TRUE(s.tls);
  EXPECT_TRUE(TcpClient::connect_error(s.port, s.export_name).has_value());
  EXPECT_EQ(nbdinfo_size(out["uri"]), kGiB);

  const auto opted_out = add_volume("job-default", "disk-3");
  EXPECT_EQ(create_json(opted_out, {"--no-tls"})["tls"], false);
  const NbdExport o = export_of(opted_out);
  EXPECT_FALSE(TcpClient::connect_error(o.port, o.export_name).has_value());
}

TEST_F(ExportAccessTest, AllowFromAdmitsListedClientsOnly) {
  manager_.start();
  const auto local = add_volume("job-allow", "disk-1");
  const Json admitted = create_json(local, {"--allow-from", "127.0.0.1"});
  EXPECT_EQ(admitted["allow_from"], "127.0.0.1/32");
  const NbdExport a = export_of(local);
  EXPECT_EQ(a.allow_from, "127.0.0.1/32");
  EXPECT_EQ(connect_error_from("127.0.0.1", a.port, a.export_name), std::nullopt);
  EXPECT_TRUE(connect_error_from("127.0.0.2", a.port, a.export_name).has_value());

  const auto other = add_volume("job-allow", "disk-2");
  const Json elsewhere = create_json(other, {"--allow-from", "127.0.0.2/32,::1"});
  EXPECT_EQ(elsewhere["allow_from"], "127.0.0.2/32,::1/128");
  const NbdExport b = export_of(other);
  EXPECT_TRUE(connect_error_from("127.0.0.1", b.port, b.export_name).has_value());
  EXPECT_TRUE(TcpClient::connect_error(b.port, b.export_name).has_value());
  EXPECT_FALSE(connect_error_from("127.0.0.2", b.port, b.export_name).has_value());

  const Json shown = show_json(b.export_name);
  EXPECT_EQ(shown["allow_from"], "127.0.0.2/32,::1/128");
  const CliResult text = nbdxm({"export", "show", b.export_name});
  EXPECT_NE(text.out.find("127.0.0.2/32,::1/128"), std::string::npos) << text.out;
}

TEST_F(ExportAccessTest, ABadAllowFromIsRefusedAndChangesNothing) {
  manager_.start();
  const auto volume = add_volume("job-bad", "disk-1");
  // (uid:0 is a rule of unix exports: export_unix_test.cpp has its refusal for a tcp export.)
  for (const std::string bad : {"10.0.0.0/33", "all", "127.0.0.1,", "::1/129", "uid:", "10.0.0.0/"}) {
    const CliResult r =
        nbdxm({"export", "create", "--job", volume.job_id, "--disk-id", volume.disk_id, "--allow-from", bad});
    EXPECT_EQ(r.code, 2) << bad << ": " << r.err;
    EXPECT_NE(r.err.find("--allow-from item"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  EXPECT_TRUE(store_.list_exports().empty());

  // The schema keeps out what is no address list, for every writer.
  ASSERT_EQ(create(volume).code, 0);
  for (const std::string bad : {"all", "", "127.0.0.1,,::1", "uid:0", "anyipv4", "10.0.0.0/"}) {
    SQLite::Statement q(db_.sql(), "UPDATE nbd_exports SET allow_from = ?");
    q.bind(1, bad);
    EXPECT_THROW(q.exec(), SQLite::Exception) << bad;
  }
}

}  // namespace
}  // namespace nbdxm::test
