// proxy_cache_module: the proxy's shared cache [nginx ngx_http_file_cache
// with the proxy_cache_* directives], on the store of src/cache (the
// shared index, the entry files) and the RFC 9111 policy of
// http/cache_policy.h.
//
// One proxied request in a location with "proxy_cache" goes through a
// Front (below), which the proxy's Exchange (proxy_exchange.h) consults at
// each step of its work:
//
//   start      the key ("proxy_cache_key") and its index node; a usable
//              entry answers at once (HIT, or STALE/UPDATING while one
//              request refreshes it); otherwise the request goes to the
//              origin (MISS, EXPIRED, BYPASS), alone or, with
//              proxy_cache_lock, after the request that fills the entry
//              (its file appears and is served, or the wait times out)
//   head       the request to the origin: GET for a HEAD
//              (proxy_cache_convert_head), without the client's
//              conditionals and Range (the cache wants the whole
//              response), with the stored validators when revalidating
//   response   a 304 to a revalidation refreshes the entry and serves it
//              (REVALIDATED); an error proxy_cache_use_stale lists serves
//              the stale entry instead (STALE); otherwise, when the policy
//              allows, the body is written to a temp file as it goes to
//              the client, which becomes the entry once complete (renamed:
//              never a partial entry)
//   $upstream_cache_status  tells which
//
// Files: the cache directory holds the entries in nginx's levels= layout
// and temp files ("*.tmp", same file system: the rename is atomic); the
// cache manager process removes the inactive entries and keeps the
// directory under max_size, the cache loader process fills a fresh index
// from the files after a start (see proxy_cache.cc).
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cache/index.h"
#include "cache/entry.h"
#include "cache/key.h"
#include "conf/module.h"
#include "conf/values.h"
#include "http/cache_policy.h"
#include "http/fwd.h"
#include "http/h1_parser.h"
#include "http/variables.h"
#include "event/timer.h"
#include "upstream/client.h"

namespace gatehouse::shm {
class Zone;
}

namespace gatehouse::http {

extern const conf::Module proxy_cache_module;
struct ProxyConf;
namespace proxy {
struct Pass;
}

namespace proxy_cache {

// One "proxy_cache_path". Owner: the generation arena.
struct CachePath {
    std::string path;  // absolute, no trailing slash
    cache::Levels levels;
    std::string zone_name;
    shm::Zone* zone = nullptr;  // owner: the zone registry
    std::optional<cache::Index> index;
    // The memory tier ("memory=", "memory_max_object="): 0 when none.
    uint64_t memory = 0;
    uint64_t memory_max_object = 0;
    int64_t inactive = 600;              // seconds
    uint64_t max_size = UINT64_MAX;
    uint64_t min_free = 0;
    bool use_temp_path = true;           // accepted; see the man page
    uint64_t manager_files = 100;
    std::chrono::milliseconds manager_threshold{200};
    std::chrono::milliseconds manager_sleep{50};
    uint64_t loader_files = 100;
    std::chrono::milliseconds loader_threshold{200};
    std::chrono::milliseconds loader_sleep{50};
    const conf::Node* node = nullptr;
};

// "proxy_cache_use_stale" conditions.
enum UseStale : uint16_t {
    kStaleError = 1 << 0,
    kStaleTimeout = 1 << 1,
    kStaleInvalidHeader = 1 << 2,
    kStaleUpdating = 1 << 3,
    kStaleHttp500 = 1 << 4,
    kStaleHttp502 = 1 << 5,
    kStaleHttp503 = 1 << 6,
    kStaleHttp504 = 1 << 7,
    kStaleHttp403 = 1 << 8,
    kStaleHttp404 = 1 << 9,
    kStaleHttp429 = 1 << 10,
};

// $upstream_cache_status.
enum class CacheStatus : uint8_t { None, Miss, Bypass, Expired, Stale, Updating, Revalidated, Hit };
std::string_view status_name(CacheStatus s);

class Front;

}  // namespace proxy_cache

// proxy_cache_module's location-level struct.
struct CacheLocConf {
    // "proxy_cache": a zone, a variable naming one, or off.
    std::optional<bool> enabled;
    // The zone named: a slot shared by every level that inherits it,
    // filled once every proxy_cache_path is read (postconfiguration).
    proxy_cache::CachePath** path = nullptr;
    const ComplexValue* path_value = nullptr;
    const ComplexValue* key = nullptr;                      // "proxy_cache_key"
    std::vector<CacheValid>* valid = nullptr;               // "proxy_cache_valid"
    std::optional<uint32_t> methods;                        // "proxy_cache_methods": method bits (core_module.h)
    std::optional<uint64_t> min_uses;                       // "proxy_cache_min_uses"
    std::vector<ComplexValue>* bypass = nullptr;            // "proxy_cache_bypass"
    std::vector<ComplexValue>* no_cache = nullptr;          // "proxy_no_cache"
    std::optional<bool> lock;                               // "proxy_cache_lock"
    std::optional<conf::Duration> lock_timeout;             // "proxy_cache_lock_timeout"
    std::optional<conf::Duration> lock_age;                 // "proxy_cache_lock_age"
    std::optional<uint16_t> use_stale;                      // "proxy_cache_use_stale"
    std::optional<bool> background_update;                  // "proxy_cache_background_update"
    std::optional<bool> revalidate;                         // "proxy_cache_revalidate"
    std::optional<bool> convert_head;                       // "proxy_cache_convert_head"
    std::optional<uint64_t> max_range_offset;               // "proxy_cache_max_range_offset"
    const ComplexValue* purge = nullptr;                    // "proxy_cache_purge"
};

namespace proxy_cache {
struct LoaderState;  // proxy_cache.cc
}

struct CacheMainConf {
    std::vector<proxy_cache::CachePath*> paths;  // owner: the generation arena
    // "proxy_cache NAME" read before its proxy_cache_path: resolved by
    // postconfiguration.
    std::vector<std::pair<proxy_cache::CachePath**, const conf::Node*>> pending;
    // The cache loader's walk, in the loader process.
    std::shared_ptr<proxy_cache::LoaderState> loader;
};

namespace proxy_cache {

// What the Exchange hands over about the origin's response.
struct OriginHead {
    int status = 0;
    std::string_view reason;
    std::span<const upstream::TryLog::Field> fields;
};

// A response on its way into the cache: a temp file in the cache
// directory, renamed into place (and told to the index, and copied into
// the memory tier when small) once complete. Not tied to a request: the
// Front's and a background update's. Logs in the caller's log scope.
class Fill {
public:
    Fill() = default;
    Fill(const Fill&) = delete;
    Fill& operator=(const Fill&) = delete;
    ~Fill() { drop(); }

    // Starts the file with the entry's header (`vary`: the response's Vary
    // value, `variant` the request's values for it). False when it is not
    // stored (too large a head, the disk).
    bool begin(CachePath& cp, const cache::Hash& hash, std::string_view key, time_t now, const OriginHead& h,
               const CacheVerdict& v, std::string_view vary, const cache::Hash& variant);
    enum class Step : uint8_t { Off, Going, Stored };
    // Body bytes, in order; the last chain (or the `expected` length)
    // completes the entry.
    Step body(const Chain& data);
    // Nothing is stored; the temp file goes.
    void drop();
    bool active() const { return fd_ >= 0; }

    std::optional<uint64_t> expected;  // the origin's Content-Length

private:
    bool write_all(const char* p, size_t n);
    bool copy_range(int from, off_t pos, off_t last);
    bool finish();
    bool make_level_dirs();

    CachePath* cp_ = nullptr;
    cache::Hash hash_{};
    time_t now_ = 0;
    int fd_ = -1;
    std::string tmp_path_;
    uint64_t written_ = 0;
    cache::Stored pending_;
    std::string mem_copy_;  // for the memory tier, while small enough
    bool mem_fill_ = false;
};

// What a background update sends to the origin (built by the Exchange
// from the request, copied by the update).
struct RefreshRequest {
    std::string_view head;
    std::string_view uri;
    bool may_keep = false;
    std::string_view tls_name;
    std::string_view hash_key;  // "hash" balancing's key
};

// The cache's part of one proxied request. Made by begin() in the
// request arena; the Exchange keeps a pointer and calls it as described
// at the top. Every method is called from the Exchange's own callbacks.
class Front {
public:
    // The first step, from the Exchange's start(): Decline when the
    // location does not cache this request (it is proxied as without a
    // cache), Respond when the cache answered (r.out and r.body are set),
    // Suspend when it waits for another request's fill (`resume` runs
    // when the request is to go to the origin after all), Proceed when the
    // request goes to the origin now (*front is set).
    static Next begin(Request& r, const ProxyConf& pc, const proxy::Pass& pass, std::string_view proxy_host,
                      void (*resume)(Request&, Next), Front** front);

    // The method to send (GET for a HEAD, when converted).
    std::string_view method(std::string_view m) const;
    // Request fields: whether the client's conditionals and Range go to
    // the origin (only when a background fill fetches the whole response
    // for the cache), and the validators to add.
    // The client's If-* and Range fields go to the origin: a range miss
    // whose entry a background fetch fills, and a miss that will not be
    // stored because its key is not yet asked for often enough
    // (proxy_cache_min_uses), as nginx sends its own headers then.
    bool keeps_conditionals() const { return (refreshing_ || scarce_) && status_ == CacheStatus::Miss; }
    std::string_view if_none_match() const;
    std::string_view if_modified_since() const;

    enum class Verdict : uint8_t { Pass, Stale, FromCache };
    // The origin's final head: Pass (the Exchange goes on, the body maybe
    // stored), or the cache answers instead (Stale: an error
    // proxy_cache_use_stale lists; FromCache: a 304 to a revalidation):
    // r.out and r.body are set, the Exchange stops the origin and
    // finalizes with Next::Respond.
    Verdict on_head(const OriginHead& h);
    // The Exchange hands the origin's error to its error_page
    // (proxy_intercept_errors): the status is cached when it may be.
    void on_intercept(const OriginHead& h);
    // After copy_response_head: what the cache adds to r.out (ranges are
    // allowed for a stored 200).
    void after_head();
    // Body bytes on their way to the client (before send_body moves them).
    void on_body(const Chain& data);
    // The body goes into the cache too: it must pass through memory.
    bool filling() const { return fill_.active(); }
    // The exchange failed with `status` (502, 504): true when a stale
    // entry answered (r.out, r.body set).
    bool on_error(int status, bool timeout);
    // The response was cut short: nothing is stored.
    void on_truncated();

    CacheStatus status() const { return status_; }
    // The request's cache key (proxy_cache_key, evaluated once).
    std::string_view key() const { return key_; }
    // The stale entry answered and a background update is due
    // (proxy_cache_background_update): the Exchange hands over what the
    // origin is to be sent, and start_refresh() runs it apart from the
    // request, which ends as usual.
    bool wants_refresh() const { return refresh_; }
    void start_refresh(upstream::UpstreamConf& u, const upstream::ClientConf& cc, const RefreshRequest& rr);

    // Made by begin() only (public for the arena's make).
    Front(Request& r, CachePath& cp, const CacheLocConf& cl) : r_(r), cp_(cp), cl_(cl) {}
    // With the request (its end, or an abort): a fill in progress is
    // dropped, claims still held are released.
    ~Front();
    Front(const Front&) = delete;
    Front& operator=(const Front&) = delete;

private:
    struct Impl;  // proxy_cache.cc: the steps, with access to the state
    friend struct Impl;
    // A revalidated entry's new freshness, into its file and node.
    void refresh_meta();
    void start_fill(const OriginHead& h, const CacheVerdict& v);

    Request& r_;
    CachePath& cp_;
    const CacheLocConf& cl_;
    std::string_view key_;
    cache::Hash hash_;
    CacheStatus status_ = CacheStatus::None;
    time_t now_ = 0;
    bool store_allowed_ = true;   // proxy_no_cache said nothing
    bool convert_head_ = false;   // a HEAD sent as GET
    bool fill_claimed_ = false;   // proxy_cache_lock: this request fills
    bool update_claimed_ = false; // this request refreshes a stale entry
    bool revalidating_ = false;   // the validators of the entry went
    // The entry found (served stale, or revalidated): its open file.
    int fd_ = -1;
    std::string_view mem_;        // or the whole entry in memory (request arena)
    uint64_t file_size_ = 0;
    bool have_entry_ = false;
    uint32_t file_gen_ = 0;       // the index's file_gen when the entry was found
    cache::EntryMeta meta_;
    std::string_view entry_head_;  // the origin's head, in the arena
    std::string_view head_index_;  // that head parsed, from the memory tier or a kept file (see memory_copy)
    std::string_view entry_etag_;
    std::string_view entry_vary_;
    bool secondary_ = false;      // key_ and hash_ are a variant's (Vary)
    std::string_view primary_key_;  // then: the key's own, and its entry's Vary
    cache::Hash primary_hash_{};
    std::string_view primary_vary_;
    bool refresh_ = false;        // a background update is due
    bool refreshing_ = false;     // and it was started
    bool scarce_ = false;         // a miss below proxy_cache_min_uses
    uint64_t body_start_ = 0;
    Fill fill_;                   // the response on its way into the cache
    const ProxyConf* pc_ = nullptr;
    const proxy::Pass* pass_ = nullptr;
    // Waiting for another request's fill (proxy_cache_lock).
    void (*resume_)(Request&, Next) = nullptr;
    int64_t wait_until_ = 0;      // monotonic ms
    event::Timer wait_timer_;
};

}  // namespace proxy_cache
}  // namespace gatehouse::http
