#include "process/listening.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include "core/log.h"

namespace gatehouse::process {

namespace {

Error sys_error(const char* call, const std::string& addr) {
    int e = errno;
    return make_error(std::string(call) + " to " + addr + " failed (" + std::to_string(e) + ": " + strerror(e) + ")");
}

bool same_address(const Listening& l, const conf::Address& a) {
    const sockaddr_storage& have = l.addr;
    const sockaddr_storage& want = a.sa;
    if (l.addr_len == 0 || have.ss_family != want.ss_family) return false;
    if (have.ss_family == AF_INET) {
        auto* h = reinterpret_cast<const sockaddr_in*>(&have);
        auto* w = reinterpret_cast<const sockaddr_in*>(&want);
        return h->sin_port == w->sin_port && h->sin_addr.s_addr == w->sin_addr.s_addr;
    }
    if (have.ss_family == AF_INET6) {
        auto* h = reinterpret_cast<const sockaddr_in6*>(&have);
        auto* w = reinterpret_cast<const sockaddr_in6*>(&want);
        return h->sin6_port == w->sin6_port && memcmp(&h->sin6_addr, &w->sin6_addr, sizeof(in6_addr)) == 0;
    }
    if (have.ss_family == AF_UNIX) {
        auto* h = reinterpret_cast<const sockaddr_un*>(&have);
        auto* w = reinterpret_cast<const sockaddr_un*>(&want);
        return strncmp(h->sun_path, w->sun_path, sizeof h->sun_path) == 0;
    }
    return false;
}

// The address a socket is bound to, and its text for messages.
bool local_address(Listening& l) {
    l.addr_len = sizeof l.addr;
    if (::getsockname(l.fd, reinterpret_cast<sockaddr*>(&l.addr), &l.addr_len) != 0) {
        l.addr_len = 0;
        return false;
    }
    if (l.text.empty()) {
        char host[INET6_ADDRSTRLEN] = {};
        if (l.addr.ss_family == AF_INET) {
            auto* in = reinterpret_cast<const sockaddr_in*>(&l.addr);
            inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
            l.text = std::string(host) + ":" + std::to_string(ntohs(in->sin_port));
        } else if (l.addr.ss_family == AF_INET6) {
            auto* in6 = reinterpret_cast<const sockaddr_in6*>(&l.addr);
            inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
            l.text = "[" + std::string(host) + "]:" + std::to_string(ntohs(in6->sin6_port));
        } else if (l.addr.ss_family == AF_UNIX) {
            l.text = std::string("unix:") + reinterpret_cast<const sockaddr_un*>(&l.addr)->sun_path;
        }
    }
    return true;
}

}  // namespace

std::string listening_env(const std::vector<Listening>& ls) {
    std::string s;
    for (const Listening& l : ls) s += std::to_string(l.fd) + ";";
    return s;
}

std::vector<Listening> inherit_listening(std::string_view env) {
    std::vector<Listening> out;
    while (!env.empty()) {
        size_t semi = env.find(';');
        std::string_view num = env.substr(0, semi);
        int fd = -1;
        auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), fd);
        if (ec != std::errc() || p != num.data() + num.size() || fd < 0) {
            GH_LOG(Emerg, "invalid socket number \"%.*s\" in %s environment variable, ignoring the rest of the variable",
                   static_cast<int>(num.size()), num.data(), kInheritEnv);
            break;
        }
        env.remove_prefix(semi == std::string_view::npos ? env.size() : semi + 1);
        Listening l;
        l.fd = fd;
        int type = 0, listening = 0;
        socklen_t len = sizeof type;
        if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM ||
            (len = sizeof listening, ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len)) != 0 ||
            !listening || !local_address(l)) {
            GH_LOG(Crit, "inherited fd %d is not a listening stream socket, ignored", fd);
            continue;
        }
        ::fcntl(fd, F_SETFD, FD_CLOEXEC);
        out.push_back(std::move(l));
    }
    return out;
}

namespace {

// "rcvbuf=" and "sndbuf=": a failure is logged and the socket kept, as
// nginx does (the kernel bounds the sizes by net.core.[rw]mem_max).
void set_buffers(int fd, const event::ListenSpec& l, const std::string& text) {
    auto set = [&](int opt, const std::optional<int>& v, const char* name) {
        if (!v) return;
        int size = *v;
        if (setsockopt(fd, SOL_SOCKET, opt, &size, sizeof size) != 0)
            GH_LOG(Alert, "setsockopt(%s, %d) %s failed, ignored (%d: %s)", name, size, text.c_str(), errno,
                   std::strerror(errno));
    };
    set(SO_RCVBUF, l.rcvbuf, "SO_RCVBUF");
    set(SO_SNDBUF, l.sndbuf, "SO_SNDBUF");
}

}  // namespace

Result<std::vector<Listening>> open_listening(const std::vector<event::ListenSpec>& specs,
                                             std::vector<Listening>* reuse) {
    std::vector<Listening> out;
    for (const event::ListenSpec& l : specs) {
        Listening li;
        li.text = l.addr.text();
        li.spec = &l;
        if (reuse) {
            for (auto it = reuse->begin(); it != reuse->end(); ++it)
                if (same_address(*it, l.addr)) {
                    li.fd = it->fd;
                    li.addr = it->addr;
                    li.addr_len = it->addr_len;
                    reuse->erase(it);
                    break;
                }
            if (li.fd >= 0) {
                set_buffers(li.fd, l, li.text);
                out.push_back(std::move(li));
                continue;
            }
        }
        int family = l.addr.sa.ss_family;
        int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            close_listening(out);
            return sys_error("socket()", li.text);
        }
        int one = 1;
        if (family != AF_UNIX) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (l.reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        if (family == AF_INET6) {
            int v6only = l.ipv6only.value_or(true) ? 1 : 0;
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
        }
        set_buffers(fd, l, li.text);
        if (l.so_keepalive) {
            int ka = *l.so_keepalive ? 1 : 0;
            setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &ka, sizeof ka);
        }
        if (family == AF_UNIX) {
            struct stat st;
            if (::stat(l.addr.path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(l.addr.path.c_str());
        }
        if (::bind(fd, reinterpret_cast<const sockaddr*>(&l.addr.sa), l.addr.sa_len) != 0) {
            Error e = sys_error("bind()", li.text);
            ::close(fd);
            close_listening(out);
            return e;
        }
        if (::listen(fd, l.backlog) != 0) {
            Error e = sys_error("listen()", li.text);
            ::close(fd);
            close_listening(out);
            return e;
        }
        if (l.deferred) {
            int secs = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof secs);
        }
        li.fd = fd;
        local_address(li);
        out.push_back(std::move(li));
    }
    return out;
}

void remove_unix_socket_files(const std::vector<Listening>& ls) {
    for (const Listening& l : ls) {
        if (l.addr.ss_family != AF_UNIX) continue;
        const auto& un = reinterpret_cast<const sockaddr_un&>(l.addr);
        // Abstract sockets (leading NUL) have no file.
        if (un.sun_path[0] == '\0') continue;
        std::string path(un.sun_path, strnlen(un.sun_path, sizeof un.sun_path));
        struct stat st;
        if (::stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && ::unlink(path.c_str()) != 0)
            GH_LOG(Alert, "unlink() \"%s\" failed (%d: %s)", path.c_str(), errno, strerror(errno));
    }
}

void close_listening(std::vector<Listening>& ls) {
    for (auto& l : ls)
        if (l.fd >= 0) ::close(l.fd);
    ls.clear();
}

}  // namespace gatehouse::process
