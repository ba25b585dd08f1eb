#include "nbdxm/port_allocator.hpp"

#include <fmt/format.h>
#include <grp.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <charconv>

#include "nbdxm/error.hpp"

namespace nbdxm {
namespace {

std::optional<int> parse_port(std::string_view text) {
  int value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < 1 || value > 65535) return std::nullopt;
  return value;
}

class Socket {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

class AddressInfo {
 public:
  AddressInfo(const std::string& host, int port) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    const std::string service = std::to_string(port);
    const int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &list_);
    if (rc != 0) {
      list_ = nullptr;
      throw Error(ExitCode::usage,
                  fmt::format("listen address {} cannot be used: {}; give an IP address such as 127.0.0.1", host,
                              gai_strerror(rc)));
    }
  }
  ~AddressInfo() {
    if (list_ != nullptr) freeaddrinfo(list_);
  }
  AddressInfo(const AddressInfo&) = delete;
  AddressInfo& operator=(const AddressInfo&) = delete;
  const addrinfo* begin() const { return list_; }

 private:
  addrinfo* list_ = nullptr;
};

// nbdkit sets SO_REUSEADDR, so connections of a server that just stopped (TIME_WAIT) do not block the port.
void set_server_options(int fd, int family) {
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
}

}  // namespace

PortRange PortRange::parse(const std::string& text) {
  const auto dash = text.find('-');
  const auto usage_error = [&] {
    return Error(ExitCode::usage,
                 fmt::format("port range '{}' is not valid; give LOW-HIGH with 1 <= LOW <= HIGH <= 65535, "
                             "e.g. 10810-10999",
                             text));
  };
  if (dash == std::string::npos) throw usage_error();
  const auto low = parse_port(std::string_view(text).substr(0, dash));
  const auto high = parse_port(std::string_view(text).substr(dash + 1));
  if (!low || !high || *low > *high) throw usage_error();
  return PortRange{*low, *high};
}

std::string PortRange::str() const { return fmt::format("{}-{}", low, high); }

FileDescriptor listen_on(const std::string& address, int port) {
  AddressInfo addresses(address, port);
  const addrinfo* a = addresses.begin();
  if (a == nullptr) {
    errno = EADDRNOTAVAIL;
    return {};
  }
  FileDescriptor fd(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
  if (!fd.valid()) return {};
  set_server_options(fd.get(), a->ai_family);
  if (::bind(fd.get(), a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd.get(), SOMAXCONN) != 0) return {};
  return fd;
}

FileDescriptor listen_on_unix(const std::string& path, const std::string& group) {
  const struct group* found = ::getgrnam(group.c_str());
  if (found == nullptr) {
    throw Error(
        ExitCode::unavailable,
        fmt::format("cannot listen on {}: group {} does not exist; create it (`addgroup --system {}`, the nbdxm "
                    "package does) and add the users that may connect",
                    path, group, group));
  }
  const gid_t gid = found->gr_gid;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof address.sun_path) {
    throw Error(ExitCode::unavailable, fmt::format("cannot listen on {}: the path is longer than {} bytes; use a "
                                                   "shorter --run-dir or export name",
                                                   path, sizeof address.sun_path - 1));
  }
  std::memcpy(address.sun_path, path.c_str(), path.size());
  auto failed = [&](const char* step) {
    return Error(ExitCode::unavailable, fmt::format("cannot listen on {}: {}: {}", path, step, std::strerror(errno)));
  };
  const std::string dir = path.substr(0, path.rfind('/'));
  if (::mkdir(dir.c_str(), 0755) == 0) {
    // Whatever the umask (nbdxm.service has 0027): clients outside the service user's group must reach the socket.
    if (::chmod(dir.c_str(), 0755) != 0) throw failed("chmod 0755 of its directory");
  } else if (errno != EEXIST) {
    throw failed("mkdir of its directory");
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(path.c_str());
  FileDescriptor fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) throw failed("socket");
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) throw failed("bind");
  if (::chown(path.c_str(), static_cast<uid_t>(-1), gid) != 0) throw failed(fmt::format("chgrp {}", group).c_str());
  if (::chmod(path.c_str(), 0660) != 0) throw failed("chmod 0660");
  if (::listen(fd.get(), SOMAXCONN) != 0) throw failed("listen");
  return fd;
}

bool PortAllocator::bindable(int port) const {
  // Every address the listen address resolves to must be free, as nbdkit binds them all.
  AddressInfo addresses(listen_address_, port);
  bool any = false;
  for (const addrinfo* a = addresses.begin(); a != nullptr; a = a->ai_next) {
    Socket s(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
    if (s.fd() < 0) continue;
    set_server_options(s.fd(), a->ai_family);
    if (::bind(s.fd(), a->ai_addr, a->ai_addrlen) != 0) return false;
    any = true;
  }
  return any;
}

int PortAllocator::lowest_free(const std::set<int>& held) const {
  int held_here = 0;
  for (int port = range_.low; port <= range_.high; ++port) {
    if (held.contains(port)) {
      ++held_here;
      continue;
    }
    if (bindable(port)) return port;
  }
  throw Error(ExitCode::conflict,
              fmt::format("no free port in {}: live exports hold {} and other programs hold the other {}; revoke "
                          "exports that are no longer needed or widen the manager's --port-range",
                          range_.str(), held_here, range_.size() - held_here));
}

}  // namespace nbdxm
