#pragma once
// MetricsServer: `GET /metrics` for `nbdxm serve --metrics-listen ADDR:PORT` (cpp-httplib). It binds when
// constructed, before the manager starts anything, so that a bad address or a port in use stops the manager with
// one line and nothing started; it serves on a thread of its own (one worker: scrapes are answered one at a time)
// from start() until stop() or its destruction. Only GET /metrics; anything else gets 404.
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

namespace httplib {
class Server;
}

namespace nbdxm::metrics {

struct ListenAddress {
  std::string host;  // an IPv4 or IPv6 address, without brackets
  int port = 0;
  // "127.0.0.1:9810" or "[::1]:9810". Throws Error(usage) naming --metrics-listen and the fix.
  static ListenAddress parse(const std::string& text);
};

class MetricsServer {
 public:
  using Render = std::function<std::string()>;  // the page; may throw (the scrape gets 500)

  // Binds the address. Throws Error(usage) naming --metrics-listen, the address and why (in use, not local).
  explicit MetricsServer(const std::string& listen);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  void start(Render render);
  void stop();  // idempotent; joins the thread

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::atomic<bool> finished_{false};  // the thread's listen loop has ended
};

}  // namespace nbdxm::metrics
