// "limit_req_zone ... sync=NAME [fail=open|closed]": a rate limit summed
// over the nodes of a fleet through Redis ("redis NAME { }",
// upstream/redis.h).
//
// The request path never waits on Redis. Each node decides at memory
// speed from its own shared zone, as without sync=; what sync= adds is
// a ZoneSync in one worker per node that, every sync_interval:
//   1. walks the records checked since its last batch (they are the
//      newest of the zone's LRU list, found by their check sequence
//      numbers, LimitTable::next_seq()), at most sync_batch of them, and
//      takes from each the count of requests the node accepted since;
//   2. sends them in one EVAL (one round trip, atomic in Redis): for each
//      key, a fleet-wide leaky bucket at the zone's rate takes the counts
//      and answers its excess;
//   3. when the answer comes, sets each record's excess to the fleet's
//      plus what the node accepted meanwhile.
// So every accepted request is counted once in Redis, whose buckets leak
// at exactly the rate: over time the fleet converges on the configured
// rate, not N times it.
//
// Why one worker per node and not each worker for its share: the counts
// are already summed per node in the shared zone, so one batch per zone
// per node and interval carries everything; Redis sees N nodes, not
// N x worker_processes clients, and there is one owner of each key's
// "accepted since the last batch" count. Worker 0 is that worker (as it
// runs the upstream health checks); during a reload the retiring and
// the new worker 0 may both sync for a moment, which is harmless: each
// count is taken under the zone's lock by one of them.
//
// The error bound. Between two batches a node sees only its own
// requests: the others' reach it one sync_interval plus one round trip
// (RTT) later. A key's fleet may thus accept, beyond its burst, at most
//     (N - 1) x (rate x (sync_interval + RTT) + burst + 1)
// requests more than one node would have, per interval; the excess
// comes back as a longer refusal afterwards (every accepted request is
// in Redis' bucket), so over a window W the fleet accepts at most
// rate x W + N x (burst + 1) + (N - 1) x rate x (sync_interval + RTT).
// A batch lost to a timeout is not counted again (at most one batch of
// requests per node goes uncounted).
//
// Redis unreachable (not ready, upstream/redis.h): the zone is marked down
// (LimitTable::set_sync_down), each node limits on its own ("fail=open",
// the default: up to N times the rate) or refuses the zone's requests
// ("fail=closed"), and the counts taken meanwhile are dropped rather
// than sent in one lump when Redis returns (which would shut the key out
// for as long as the outage lasted). Both are logged once per outage.
//
// limit_conn_zone ... sync=NAME works alike with absolute counts: each
// batch sets, in "gatehouse:lc:{ZONE}:KEY" hashes, this node's field
// (hostname:master pid) to the requests the node holds for the key, and
// answers the sum of the other nodes' fields, which becomes the record's
// `remote`; a request is refused when its node's count plus `remote`
// reaches the limit. Every batch, even an empty one, refreshes the
// node's heartbeat key "gatehouse:lc:{ZONE}:node:ID" (a few intervals,
// at least 2 s): the fields of a node whose heartbeat expired (stopped,
// crashed, cut off) are not counted and are deleted. Records whose count
// fell to 0 stay until their 0 has been sent, then go. The error bound
// is the same: another node's new requests are unseen for up to one
// interval plus a round trip, so the fleet may hold up to
// (N - 1) x (the requests started per interval) beyond the limit
// meanwhile; and a refusal may be based on counts one interval old.
//
// Redis keys: "gatehouse:lr:{ZONE}:KEY" hashes (fields "e", excess in
// thousandths of a request, and "t", Redis' TIME in ms), expiring once
// they leaked to nothing plus a minute. The zone in braces is a Redis
// Cluster hash tag: every key of a batch is in one slot.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "conf/fwd.h"
#include "core/result.h"
#include "event/timer.h"

struct redisReply;

namespace gatehouse::upstream {
struct RedisSpec;
class RedisClient;
}  // namespace gatehouse::upstream

namespace gatehouse::http {

class LimitTable;

// The sync= and fail= parameters of a zone directive. Owner: the zone's
// conf (generation arena).
struct SyncConf {
    std::string redis_name;                   // sync=NAME; empty: not synced
    const upstream::RedisSpec* redis = nullptr;  // found at postconfiguration
    bool fail_closed = false;                 // fail=closed
    bool synced() const { return !redis_name.empty(); }
};

// Takes "sync=NAME", "fail=open" or "fail=closed" into c: true when arg
// was one of them. Errors: invalid parameter "fail=x".
Result<bool> parse_sync_arg(std::string_view arg, SyncConf& c);

// Finds the redis block of c (any place in the http level). Error:
// unknown redis "NAME".
Status resolve_sync(conf::Ctx& cx, SyncConf& c, std::string_view where);

// One zone's sync in the worker that owns it; see above. Made by
// start_req_sync() in worker 0's init_worker, destroyed by stop_all().
class ZoneSync {
public:
    // `table`, `c` and the redis spec outlive it (the generation). A
    // batch in flight holds a pointer to it: destroy it only once the
    // worker's redis clients are gone (they answer what is in flight
    // with null replies), which exit_worker's order gives: redis_module
    // comes before the limit modules in the module list.
    // rate > 0: a limit_req zone (thousandths of a request per second);
    // 0: a limit_conn zone.
    ZoneSync(LimitTable& table, const SyncConf& c, std::string zone, int64_t rate);
    ~ZoneSync();
    // Sends no more batches (a retiring worker: the new worker 0 syncs).
    void pause();
    ZoneSync(const ZoneSync&) = delete;
    ZoneSync& operator=(const ZoneSync&) = delete;

    // For tests and the bench: batches sent and answered.
    uint64_t sent() const { return sent_; }

private:
    void tick();
    void collect(bool send);
    void send_conn();
    void drop_idle();
    const char* what() const { return rate_ ? "limit_req" : "limit_conn"; }
    static void on_reply(void* data, redisReply* r);
    void set_down(bool down, const char* why);

    LimitTable& table_;
    const SyncConf& conf_;
    std::string zone_;
    int64_t rate_;  // thousandths of a request per second
    std::string rate_text_;
    upstream::RedisClient& client_;
    event::Timer timer_;
    uint64_t since_ = 0;  // the table's seq() at the last complete walk
    bool in_flight_ = false;
    uint64_t sent_at_ = 0;  // ms, the batch in flight
    bool down_ = false;
    bool error_logged_ = false;
    uint64_t sent_ = 0;
    // The batch in flight: keys (as in the zone) and Redis' names.
    std::vector<std::string> keys_;
    std::vector<std::string> names_;
    std::vector<std::string> counts_;
    std::string node_;  // limit_conn: this node's field, hostname:master pid
};

// Worker 0's sync of a limit_req zone (rate > 0) or a limit_conn zone
// (rate 0); the others sync nothing.
void start_sync(LimitTable& table, const SyncConf& c, std::string zone, int64_t rate, int slot);
// Pauses every ZoneSync of this worker (quit_worker).
void pause_all_syncs();
// Destroys them (exit_worker, after redis_module's).
void stop_all_syncs();

}  // namespace gatehouse::http
