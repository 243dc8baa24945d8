// The keepalive pool of one worker: per upstream group, at most
// "keepalive N" idle connections, most recently kept first [nginx
// ngx_http_upstream_keepalive_module].
//
// A pool's entries are made as connections are first kept, reused after,
// and never move: a pooled Connection's read handler and timer point at
// its entry. An idle connection is watched for two things:
// readiness to read (the origin closed it, or sent bytes no request asked
// for: either way it cannot carry another request) and keepalive_timeout.
// Both close it and give the entry back.
#include "upstream/upstream.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <memory>
#include <utility>
#include <vector>

#include "core/log.h"
#include "event/connection.h"
#include "event/loop.h"
#include "event/worker.h"
#include "upstream/balancer.h"

namespace gatehouse::upstream {

struct IdleEntry {
    // In the pool's idle list (most recent first) or its free list.
    IdleEntry* prev = nullptr;
    IdleEntry* next = nullptr;
    IdlePool* pool = nullptr;
    event::Connection* c = nullptr;  // owner: the worker's ConnectionTable
    sockaddr_storage sa{};           // the peer's address, to match take_idle
    socklen_t sa_len = 0;
    const void* tag = nullptr;       // keep_idle's: what else must match
    event::Msec opened = 0;          // keep_idle's: when c was made
};

struct IdlePool {
    explicit IdlePool(UpstreamConf& u) : u(u) { idle.prev = idle.next = &idle; }

    UpstreamConf& u;              // owner: the generation
    // Made as needed, up to u.keepalive (a deque never moves them): a
    // large "keepalive" costs nothing until connections fill it, and they
    // are bounded by worker_connections.
    std::deque<IdleEntry> entries;
    IdleEntry idle;               // sentinel: idle.next is the newest
    IdleEntry* free = nullptr;    // singly linked through next
    uint32_t count = 0;           // in the idle list
};

namespace {

// Every pool this worker made, for close_idle().
std::vector<std::unique_ptr<IdlePool>>& pools() {
    static std::vector<std::unique_ptr<IdlePool>> p;
    return p;
}

// Set by retire_idle(): the worker is shutting down gracefully, and a
// connection kept now would hold it up until keepalive_timeout.
bool g_retired = false;

IdlePool& pool_of(UpstreamConf& u) {
    if (!u.idle) {
        pools().push_back(std::make_unique<IdlePool>(u));
        u.idle = pools().back().get();
    }
    return *u.idle;
}

bool same_address(const IdleEntry& e, const Peer& p) {
    return e.sa_len == p.sa_len && std::memcmp(&e.sa, &p.sa, p.sa_len) == 0;
}

void unlink(IdleEntry& e) {
    e.prev->next = e.next;
    e.next->prev = e.prev;
    IdlePool& pool = *e.pool;
    --pool.count;
    e.prev = nullptr;
    e.next = pool.free;
    pool.free = &e;
}

// Takes c out of the pool's hands: its handlers no longer point at e.
event::Connection& release(IdleEntry& e) {
    event::Connection& c = *e.c;
    event::worker_loop().cancel(c.read_timer);
    c.io.on_read = {};
    c.io.on_write = {};
    c.read_timer.cb = {};
    c.write_timer.cb = {};
    event::worker_connections().set_reusable(c, false);
    c.reclaim = {};
    e.c = nullptr;
    unlink(e);
    return c;
}

// Closes c, disposing of a transport its owner handed over with it (TLS
// to the origin: close_notify, then the session is freed).
void close_conn(event::Connection& c) {
    if (event::Transport* t = std::exchange(c.transport, nullptr)) t->dispose(c);
    event::worker_connections().close(c);
}

void drop(IdleEntry& e) { close_conn(release(e)); }

void on_idle_timeout(IdleEntry* e) { drop(*e); }

void on_idle_read(IdleEntry* e) {
    event::Connection& c = *e->c;
    char b;
    for (;;) {
        ssize_t n = ::recv(c.fd(), &b, 1, MSG_PEEK);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            // Nothing there after all (the flag was left from the
            // response): keep it, and wait for the next edge.
            c.io.clear_readable();
            return;
        }
        break;
    }
    // EOF: the origin closed it; data: a response nobody asked for (or
    // the rest of one the caller misjudged); error: unusable.
    drop(*e);
}

}  // namespace

event::Connection* take_idle(UpstreamConf& u, const Peer& p, const void* tag, event::Msec* opened) {
    if (!u.idle) return nullptr;
    IdlePool& pool = *u.idle;
    for (IdleEntry* e = pool.idle.next; e != &pool.idle; e = e->next) {
        if (!same_address(*e, p) || e->tag != tag) continue;
        if (opened) *opened = e->opened;
        return &release(*e);
    }
    return nullptr;
}

void keep_idle(UpstreamConf& u, const Peer& p, event::Connection& c, uint64_t requests, const void* tag,
               event::Msec opened) {
    if (!c.is_open()) return;
    event::Loop& loop = event::worker_loop();
    loop.cancel(c.read_timer);
    loop.cancel(c.write_timer);
    c.data = nullptr;
    c.io.on_read = {};
    c.io.on_write = {};
    c.read_timer.cb = {};
    c.write_timer.cb = {};
    c.requests = requests > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(requests);
    const bool too_old = opened != 0 && loop.now() >= opened &&
                         loop.now() - opened >= static_cast<event::Msec>(u.keepalive_time.count());
    if (u.keepalive == 0 || requests >= u.keepalive_requests || too_old || c.io.error() ||
        c.io.peer_closed() || g_retired || !present(p)) {
        // !present: a slot whose address was removed (draining): its last
        // requests finish, its connections go with them.
        close_conn(c);
        return;
    }
    IdlePool& pool = pool_of(u);
    if (pool.count >= u.keepalive) {
        GH_DEBUG_LOG("upstream \"%s\": keepalive pool full, closing the oldest", u.name.c_str());
        drop(*pool.idle.prev);
    }
    if (!pool.free) {
        pool.entries.emplace_back().pool = &pool;
        pool.free = &pool.entries.back();
        pool.free->next = nullptr;
    }
    IdleEntry& e = *pool.free;
    pool.free = e.next;
    e.c = &c;
    std::memcpy(&e.sa, &p.sa, p.sa_len);
    e.sa_len = p.sa_len;
    e.tag = tag;
    e.opened = opened;
    e.prev = &pool.idle;
    e.next = pool.idle.next;
    pool.idle.next->prev = &e;
    pool.idle.next = &e;
    ++pool.count;

    c.io.on_read = event::Callback::to<&on_idle_read>(&e);
    c.read_timer.cb = event::Callback::to<&on_idle_timeout>(&e);
    // Idle like a client's keep-alive: a full worker may take the slot.
    c.reclaim = event::Callback::to<&on_idle_timeout>(&e);
    event::worker_connections().set_reusable(c, true);
    loop.arm(c.read_timer, u.keepalive_timeout);
    // The flag is left set when the last read was not short: no new edge
    // will come for what may already be there, so look now.
    if (c.io.readable()) on_idle_read(&e);
}

void close_idle() {
    for (auto& pool : pools()) {
        while (pool->idle.next != &pool->idle) drop(*pool->idle.next);
        pool->u.idle = nullptr;
    }
    pools().clear();
    // A fresh start (a worker's exit, a test's end): pooling allowed again.
    g_retired = false;
}

void close_idle_to(UpstreamConf& u, const Peer& p) {
    if (!u.idle) return;
    for (IdleEntry* e = u.idle->idle.next; e != &u.idle->idle;) {
        IdleEntry* next = e->next;
        if (same_address(*e, p)) drop(*e);
        e = next;
    }
}

void retire_idle() {
    close_idle();
    g_retired = true;
}

}  // namespace gatehouse::upstream
