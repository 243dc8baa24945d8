#include "http/request.h"

#include <unistd.h>

#include "core/str.h"
#include "http/core_module.h"
#include "http/variables.h"

namespace gatehouse::http {

Header* ResponseHead::find(std::string_view name) {
    for (auto& h : headers)
        if (iequals(h.name, name)) return &h;
    return nullptr;
}

void ResponseHead::remove(std::string_view name) {
    std::erase_if(headers, [&](const Header& h) {
        return iequals(h.name, name);
    });
}

Request::Request(HttpConnection& hc, const conf::ConfArray main, const conf::ConfArray srv)
    : conn_(hc), main_confs(main), srv_confs(srv), out(arena_.resource()), body(arena_.resource()) {
    ctx_ = static_cast<void**>(arena_.alloc(sizeof(void*) * modules.size(), alignof(void*)));
    for (size_t i = 0; i < modules.size(); ++i) ctx_[i] = nullptr;
    if (HttpMainConf* m = http_main(main)) {
        size_t n = m->vars.size();
        vars = static_cast<VarValue*>(arena_.alloc(sizeof(VarValue) * (n ? n : 1), alignof(VarValue)));
        for (size_t i = 0; i < n; ++i) new (&vars[i]) VarValue();
    }
}

Request::~Request() {
    for (int fd : fds_)
        if (fd >= 0) ::close(fd);
}

void Request::add_fd(int fd) {
    for (int& f : fds_)
        if (f < 0) {
            f = fd;
            return;
        }
    // More files than slots is a module bug; do not leak the descriptor.
    GH_CHECK(false && "too many files for one request");
}

void Request::set_exten() {
    exten = {};
    for (size_t i = uri.size(); i-- > 0;) {
        if (uri[i] == '/') return;
        if (uri[i] == '.') {
            // A leading dot (/.htaccess) is a name, not an extension [nginx].
            if (i > 0 && uri[i - 1] != '/') exten = uri.substr(i + 1);
            return;
        }
    }
}

}  // namespace gatehouse::http
