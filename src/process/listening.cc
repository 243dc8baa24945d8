#include "process/listening.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/log.h"

namespace gatehouse::process {

namespace {

Error sys_error(const char* call, const std::string& addr) {
    int e = errno;
    return make_error(std::string(call) + " to " + addr + " failed (" + std::to_string(e) + ": " + strerror(e) + ")");
}

}  // namespace

Result<std::vector<Listening>> open_listening(const http::HttpMainConf* m, std::vector<Listening>* reuse) {
    std::vector<Listening> out;
    if (!m) return out;
    for (const http::ListenPort& p : m->ports) {
        const http::ListenConf& l = p.bind;
        Listening li;
        li.text = l.addr.text();
        li.port = &p;
        if (reuse) {
            for (auto it = reuse->begin(); it != reuse->end(); ++it)
                if (it->text == li.text) {
                    li.fd = it->fd;
                    reuse->erase(it);
                    break;
                }
            if (li.fd >= 0) {
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
        out.push_back(std::move(li));
    }
    return out;
}

void close_listening(std::vector<Listening>& ls) {
    for (auto& l : ls)
        if (l.fd >= 0) ::close(l.fd);
    ls.clear();
}

}  // namespace gatehouse::process
