#include "metrics_server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <httplib.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>

#include "nbdxm/error.hpp"

namespace nbdxm::metrics {
namespace {

using namespace std::chrono_literals;

constexpr const char* kExample = "give ADDRESS:PORT such as 127.0.0.1:9810 or [::1]:9810";

Error bad_listen(const std::string& text, const std::string& why) {
  return Error(ExitCode::usage, fmt::format("--metrics-listen {}: {}; {}", text, why, kExample));
}

}  // namespace

ListenAddress ListenAddress::parse(const std::string& text) {
  ListenAddress address;
  std::string port;
  if (text.starts_with('[')) {
    const auto close = text.find("]:");
    if (close == std::string::npos) throw bad_listen(text, "an IPv6 address in brackets must be followed by :PORT");
    address.host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string::npos) throw bad_listen(text, "no port");
    address.host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (address.host.find(':') != std::string::npos) throw bad_listen(text, "an IPv6 address goes in brackets");
  }
  unsigned char buffer[sizeof(in6_addr)];
  const bool ip = ::inet_pton(AF_INET, address.host.c_str(), buffer) == 1 ||
                  (text.starts_with('[') && ::inet_pton(AF_INET6, address.host.c_str(), buffer) == 1);
  if (!ip) throw bad_listen(text, fmt::format("'{}' is not an IP address", address.host));
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), address.port);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || address.port < 1 ||
      address.port > 65535) {
    throw bad_listen(text, fmt::format("'{}' is not a port (1 to 65535)", port));
  }
  return address;
}

MetricsServer::MetricsServer(const std::string& listen) : server_(std::make_unique<httplib::Server>()) {
  const ListenAddress address = ListenAddress::parse(listen);
  // Not SO_REUSEPORT (httplib's default): a second manager must not share the port unnoticed. Close-on-exec: the
  // export servers the manager starts must not hold the port.
  server_->set_socket_options([](int sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    ::fcntl(sock, F_SETFD, FD_CLOEXEC);
  });
  errno = 0;
  if (!server_->bind_to_port(address.host, address.port)) {
    const int err = errno;
    throw Error(ExitCode::usage,
                fmt::format("--metrics-listen {}: cannot listen there: {}; give a free port of a local address", listen,
                            err != 0 ? std::strerror(err) : "bind failed"));
  }
}

MetricsServer::~MetricsServer() { stop(); }

void MetricsServer::start(Render render) {
  server_->new_task_queue = [] { return new httplib::ThreadPool(1); };
  server_->set_read_timeout(5s);
  server_->set_write_timeout(5s);
  server_->Get("/metrics", [render = std::move(render)](const httplib::Request&, httplib::Response& response) {
    try {
      response.set_content(render(), "text/plain; version=0.0.4; charset=utf-8");
    } catch (const std::exception& e) {
      response.status = 500;
      response.set_content(fmt::format("nbdxm: cannot render the metrics: {}\n", e.what()), "text/plain");
    }
  });
  thread_ = std::thread([this] {
    server_->listen_after_bind();
    finished_.store(true);
  });
}

void MetricsServer::stop() {
  if (!thread_.joinable()) return;
  // httplib's stop() does nothing before its loop runs: asked again until the loop has ended.
  while (!finished_.load()) {
    server_->stop();
    std::this_thread::sleep_for(10ms);
  }
  thread_.join();
}

}  // namespace nbdxm::metrics
