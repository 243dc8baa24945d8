// Modules and their directives: a module is data (STYLE.md, section 2).
//
// A module declares its directives (name, contexts, argument count, the
// handler that turns arguments into typed configuration) and the conf
// structs it keeps at each level. The core parses, checks context and arity
// and prints "[emerg] ... in file:line"; the module only declares.
//
// Levels follow nginx's: a struct per module at the main ("core") level,
// in the events block, and in http at three levels (main, server,
// location). Entering "server {" makes fresh Srv and Loc structs; entering
// "location {" a fresh Loc struct; after the http block each child is
// merged with its parent, so a location sees the inherited value of every
// directive it did not set.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "conf/fwd.h"
#include "conf/parser.h"
#include "conf/process_spec.h"
#include "conf/values.h"
#include "core/arena.h"
#include "core/result.h"

namespace gatehouse {
namespace http {
struct ModuleHooks;  // phases and filters of an HTTP module (src/http)
}
namespace event {
struct ListenSpec;  // a listening socket a module asks for (event/listen_spec.h)
}

namespace conf {

// Where a directive may appear. One bit per kind of block.
enum Context : uint32_t {
    kMain = 1u << 0,
    kEvents = 1u << 1,
    kHttp = 1u << 2,
    kServer = 1u << 3,
    kLocation = 1u << 4,
    kUpstream = 1u << 5,
    kServerIf = 1u << 6,    // "if" in a server block
    kIf = 1u << 7,          // "if" in a location
    kLimitExcept = 1u << 8,
    kTypes = 1u << 9,       // inside "types { }": not directives, see http
    kMap = 1u << 10,        // inside "map { }"
};
constexpr uint32_t kHttpSrvLoc = kHttp | kServer | kLocation;
constexpr uint32_t kAnyHttp = kHttpSrvLoc | kServerIf | kIf | kLimitExcept;

std::string_view context_name(uint32_t single_context);

// How many arguments a directive takes, and whether it opens a block.
struct Arity {
    uint8_t min = 0;
    uint8_t max = 0;
    bool block = false;
};
inline constexpr Arity Take0{0, 0, false};
inline constexpr Arity Take1{1, 1, false};
inline constexpr Arity Take2{2, 2, false};
inline constexpr Arity Take3{3, 3, false};
inline constexpr Arity Take12{1, 2, false};
inline constexpr Arity Take13{1, 3, false};
inline constexpr Arity Take23{2, 3, false};
inline constexpr Arity Take1More{1, 255, false};
inline constexpr Arity Take2More{2, 255, false};
inline constexpr Arity Block{0, 0, true};
inline constexpr Arity Block1{1, 1, true};
inline constexpr Arity Block12{1, 2, true};

// The type tag of a conf struct: lets a setter find the struct it writes
// among a module's levels without RTTI.
template <typename T>
struct TypeTag {
    static constexpr char tag = 0;
};
template <typename T>
constexpr const void* tag_of() {
    return &TypeTag<T>::tag;
}

// The handler of a directive: `conf` is the module's struct of the level
// whose tag matches `tag`, in the current block (null when tag is null).
struct Setter {
    Status (*fn)(Ctx& cx, const Node& n, void* conf) = nullptr;
    const void* tag = nullptr;
};

struct Directive {
    std::string_view name;
    uint32_t contexts = 0;
    Arity args;
    Setter set;
    // A block whose "include" lines the handler reads itself: the parser
    // leaves them in the block unexpanded (ParseOptions::keeps_includes).
    // For blocks of data that may be huge, as nginx's "geo" reads its own
    // includes: a million lines are not worth a million tree nodes.
    bool reads_includes = false;
};

enum class Level : uint8_t { Core, Events, Main, Srv, Loc };
inline constexpr int kLevels = 5;

// Who the worker processes run as, when the master runs as root ("user",
// or ./configure's --user and --group): what the master makes for them
// (temp directories, log files it reopens) must be theirs. Unset when the
// master is not root: the workers are then the master's user, as is all
// it makes.
struct WorkerUser {
    uid_t uid = 0;
    gid_t gid = 0;
};

// The root struct arrays of one configuration generation, one per level
// (process::Cycle::roots): what the lifecycle hooks below are given. An
// array is null when its block is absent (no "http" block, say).
using Roots = std::array<ConfArray, kLevels>;

struct LevelOps {
    const void* tag = nullptr;
    void* (*create)(Arena& a) = nullptr;
    // Fills what `child` did not set from `parent` (the enclosing block).
    void (*merge)(const void* parent, void* child) = nullptr;
    explicit operator bool() const { return create != nullptr; }
};

template <typename T, void (*Merge)(const T&, T&) = nullptr>
constexpr LevelOps level() {
    LevelOps ops;
    ops.tag = tag_of<T>();
    ops.create = [](Arena& a) -> void* { return a.make<T>(); };
    if constexpr (Merge != nullptr)
        ops.merge = [](const void* p, void* c) {
            Merge(*static_cast<const T*>(p), *static_cast<T*>(c));
        };
    return ops;
}

struct Module {
    std::string_view name;
    std::span<const Directive> directives;
    LevelOps core, events, main, srv, loc;
    // Runs after the whole configuration has been read and merged, in
    // module order: build lookup tables, check cross-directive rules.
    Status (*postconfiguration)(Ctx& cx) = nullptr;
    // Phase handlers and filters, for HTTP modules.
    const http::ModuleHooks* http = nullptr;

    // ---- lifecycle --------------------------------------------------------
    // The process layer (src/process) calls these through the module list,
    // in module order, and names no module (STYLE.md section 1). Each may
    // be null. `g` is the generation being started or served.
    //
    // Master, while it loads a generation: the listening sockets it needs
    // (appended to `out`, owner of each spec's data: the generation). The
    // master binds them (or takes them over from the running generation
    // or an old binary) and every worker accepts on them.
    void (*listens)(const Roots& g, std::vector<event::ListenSpec>& out) = nullptr;
    // Master, while it loads a generation: the processes it needs besides
    // the workers (appended to `out`; see conf/process_spec.h), started
    // after the workers, with their user.
    void (*processes)(const Roots& g, std::vector<ProcessSpec>& out) = nullptr;
    // Master, once a generation has loaded and before its workers fork:
    // what must exist before any worker runs (directories, files), owned
    // by `workers` when set, so that they can write there. An error is
    // logged at emerg; the generation is refused as if its configuration
    // were invalid.
    Status (*init_master)(const Roots& g, const std::optional<WorkerUser>& workers) = nullptr;
    // Worker, before it gives up root's user: the Linux capabilities it
    // keeps (bits 1 << CAP_X of <linux/capability.h>), e.g. CAP_NET_RAW
    // for "proxy_bind ... transparent" [nginx 1.13.8].
    uint64_t (*worker_capabilities)(const Roots& g) = nullptr;
    // Worker (worker number `slot`, 0-based), once event::worker_loop()
    // and worker_connections() are set and before it accepts. An error
    // ends the worker (logged at emerg).
    Status (*init_worker)(const Roots& g, int slot) = nullptr;
    // Worker, graceful shutdown (QUIT: a reload, an upgrade, a stop), once
    // the listeners are stopped: start nothing new, let what runs finish,
    // close what only waits (idle connections, pools, probes). The worker
    // exits when no connection is left or at worker_shutdown_timeout.
    void (*quit_worker)() = nullptr;
    // Worker, when worker_shutdown_timeout passed before the graceful
    // shutdown ended, just before the loop stops: end what still runs as
    // if its client had gone (each request with its log line, 499 when no
    // head was sent) [nginx closes every connection then].
    void (*stop_worker)() = nullptr;
    // Worker, when its loop has had nothing to do for a moment after some
    // activity (event::Loop::set_idle), before it gives its free heap
    // back: close or free what only the next burst would reuse (kept
    // descriptors, per-worker caches). Never under steady load.
    void (*idle_worker)() = nullptr;
    // Worker, after its loop stopped and its client connections were
    // closed, before the connection table goes: release what is left
    // (pooled connections, timers) and flush buffers.
    void (*exit_worker)() = nullptr;
    // Any process, on USR1: reopen the module's log files. The master,
    // which reopens first, gives a file it creates to `workers` (set when
    // it runs as root), so that they can open it after it [nginx]; a
    // worker passes nothing.
    void (*reopen_logs)(const std::optional<WorkerUser>& workers) = nullptr;
    // Position in the module list; assigned once by init_modules().
    mutable uint16_t index = 0xffff;

    const LevelOps& ops(Level l) const {
        switch (l) {
            case Level::Core: return core;
            case Level::Events: return events;
            case Level::Main: return main;
            case Level::Srv: return srv;
            default: return loc;
        }
    }
};

// ---- typed setters --------------------------------------------------------

template <typename M>
struct MemberTraits;
template <typename C, typename V>
struct MemberTraits<V C::*> {
    using Class = C;
    using Value = V;
};

// A setter that reports a duplicate when the field is already set and
// otherwise stores parse(arg).
Status set_failed(Ctx& cx, const Node& n, const Error& e);
Status set_duplicate(Ctx& cx, const Node& n);

template <auto Member, auto Parse>
constexpr Setter typed() {
    using C = typename MemberTraits<decltype(Member)>::Class;
    return Setter{[](Ctx& cx, const Node& n, void* p) -> Status {
                      C& c = *static_cast<C*>(p);
                      if ((c.*Member).has_value()) return set_duplicate(cx, n);
                      auto v = Parse(n.args[0].text);
                      if (!v) return set_failed(cx, n, v.error());
                      c.*Member = *v;
                      return {};
                  },
                  tag_of<C>()};
}

inline Result<std::string> parse_string(std::string_view s) { return std::string(s); }
inline Result<uint64_t> parse_count(std::string_view s) { return parse_number(s); }

template <auto Member>
constexpr Setter duration() {
    return typed<Member, parse_duration>();
}
template <auto Member>
constexpr Setter size() {
    return typed<Member, parse_size>();
}
template <auto Member>
constexpr Setter flag() {
    return typed<Member, parse_flag>();
}
template <auto Member>
constexpr Setter number() {
    return typed<Member, parse_count>();
}
template <auto Member>
constexpr Setter string() {
    return typed<Member, parse_string>();
}

// A handler written by hand: Status f(Ctx&, const Node&, T& conf), or
// Status f(Ctx&, const Node&) for directives that need no conf struct
// (block openers).
template <typename F>
struct HandlerTraits;
template <typename T>
struct HandlerTraits<Status (*)(Ctx&, const Node&, T&)> {
    using Conf = T;
};
template <>
struct HandlerTraits<Status (*)(Ctx&, const Node&)> {
    using Conf = void;
};

template <auto F>
constexpr Setter custom() {
    using T = typename HandlerTraits<decltype(F)>::Conf;
    if constexpr (std::is_void_v<T>) {
        return Setter{[](Ctx& cx, const Node& n, void*) -> Status { return F(cx, n); }, nullptr};
    } else {
        return Setter{[](Ctx& cx, const Node& n, void* p) -> Status {
                          return F(cx, n, *static_cast<T*>(p));
                      },
                      tag_of<T>()};
    }
}

// Fills `c` from `parent` when unset, else from `def`.
template <typename V, typename D>
void inherit(std::optional<V>& c, const std::optional<V>& parent, D def) {
    if (!c) c = parent ? *parent : static_cast<V>(def);
}
template <typename V>
void inherit(std::optional<V>& c, const std::optional<V>& parent) {
    if (!c && parent) c = parent;
}

}  // namespace conf

// The module list written by ./configure (objs/modules.cc), in execution
// order, and the one-time assignment of Module::index.
using conf::Module;
extern const std::span<const Module* const> modules;
void init_modules();

}  // namespace gatehouse
