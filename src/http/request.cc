#include "http/request.h"

#include <unistd.h>

#include <algorithm>

#include "core/str.h"
#include "event/worker.h"
#include "http/core_module.h"
#include "http/phases.h"
#include "http/variables.h"
#include "upstream/client.h"

namespace gatehouse::http {

Header* ResponseHead::find(std::string_view name) {
    for (auto& h : headers)
        if (iequals(h.name, name)) return &h;
    return nullptr;
}

void ResponseHead::remove(std::string_view name) {
    std::erase_if(headers, [&](const Header& h) { return iequals(h.name, name); });
}

// ---- HeaderList ---------------------------------------------------------------------

void HeaderList::reset(std::span<const HeaderField> fields) {
    base_ = fields;
    if (own_) own_->clear();
    own_ = nullptr;
}

std::pmr::vector<HeaderField>& HeaderList::own() {
    if (!own_) {
        // The arena outlives the list (both belong to the request); the
        // vector's storage is the arena's too.
        void* p = mem_->allocate(sizeof(std::pmr::vector<HeaderField>), alignof(std::pmr::vector<HeaderField>));
        own_ = ::new (p) std::pmr::vector<HeaderField>(mem_);
        own_->reserve(base_.size() + 4);
        own_->assign(base_.begin(), base_.end());
    }
    return *own_;
}

const HeaderField* HeaderList::find(std::string_view name) const {
    for (const HeaderField& f : all())
        if (iequals(f.name, name)) return &f;
    return nullptr;
}

void HeaderList::add(std::string_view name, std::string_view value) { own().push_back({name, value}); }

void HeaderList::set(std::string_view name, std::string_view value) {
    auto& v = own();
    auto it = std::find_if(v.begin(), v.end(), [&](const HeaderField& f) { return iequals(f.name, name); });
    if (it == v.end()) {
        v.push_back({name, value});
        return;
    }
    it->value = value;
    std::erase_if(v, [&](const HeaderField& f) { return &f != &*it && iequals(f.name, name); });
}

size_t HeaderList::remove(std::string_view name) {
    if (!find(name)) return 0;
    return std::erase_if(own(), [&](const HeaderField& f) { return iequals(f.name, name); });
}

// ---- Request --------------------------------------------------------------------------

namespace {

void resume_phases(Request* r) {
    log::Scope scope(&r->log_ctx);
    if (!r->stream().closed() && !r->done) run_phases(*r);
}

void describe_thunk(const void* r, FixedWriter& out) { describe_request(*static_cast<const Request*>(r), out); }

}  // namespace

void describe_request(const Request& r, FixedWriter& out) {
    out.put(", client: ");
    out.put(r.remote_addr());
    // The server's first name, "" when it has none [nginx].
    out.put(", server: ");
    if (r.srv) out.put(primary_server_name(*r.srv));
    if (!r.request_line.empty()) {
        out.put(", request: \"");
        out.put(r.request_line);
        out.put("\"");
    }
    if (r.parent) {
        out.put(", subrequest: \"");
        out.put(r.uri);
        out.put("\"");
    }
    if (r.upstream) r.upstream->describe_peer(out);
    if (!r.in.host.empty()) {
        out.put(", host: \"");
        out.put(r.in.host);
        out.put("\"");
    }
    if (const HeaderField* ref = r.headers.find("Referer")) {
        out.put(", referrer: \"");
        out.put(ref->value);
        out.put("\"");
    }
}

Request::Request(Stream& s, const conf::ConfArray main, SrvConf* server)
    : stream_(s),
      // "request_pool_size" of the server the request starts on [nginx]:
      // its default fits in the cached first block (core/arena.h).
      arena_(Arena::RequestBlock{}, static_cast<size_t>(server->request_pool_size.value_or(4096))),
      headers(arena_.resource()),
      srv(server),
      main_confs(main),
      srv_confs(server->srv_confs),
      loc_confs(server->loc_confs),
      resume_ev(event::Callback::to<&resume_phases>(this)),
      out(arena_.resource()),
      body(arena_.resource()) {
    // The count read once: stores through ctx_ could alias the module
    // list's size, which made the loop reread it for each of ~70 slots.
    const size_t nmod = modules.size();
    ctx_ = static_cast<void**>(arena_.alloc(sizeof(void*) * nmod, alignof(void*)));
    std::fill_n(ctx_, nmod, nullptr);
    if (HttpMainConf* m = http_main(main)) {
        size_t n = m->vars.size();
        vars = static_cast<VarValue*>(arena_.alloc(sizeof(VarValue) * (n ? n : 1), alignof(VarValue)));
        for (size_t i = 0; i < n; ++i) new (&vars[i]) VarValue();
    }
    log_ctx = {s.connection_number(), describe_thunk, this};
    remote_port = s.peer_port();
    remote_sockaddr = s.peer_sockaddr();
    event::Loop& loop = event::worker_loop();
    counters.start_msec = loop.now();
    auto w = loop.wall();
    counters.start_sec = w.sec;
    counters.start_ms = w.msec;
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
