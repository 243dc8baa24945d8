#include "http/limit_sync.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <chrono>

#include <unistd.h>

#include "conf/registry.h"
#include "core/log.h"
#include "event/worker.h"
#include "http/limit_table.h"
#include "upstream/redis.h"

namespace gatehouse::http {

namespace {

// KEYS: the buckets; ARGV[1]: the rate (thousandths of a request per
// second); ARGV[2i], ARGV[2i + 1]: the requests accepted for KEYS[i]
// since the last batch, and how many ms before the batch left the first
// of them came. Answers each bucket's excess (thousandths) after them.
// The requests are added when the first came, not when the batch
// arrives: a bucket that sat empty meanwhile would otherwise count each
// request up to one interval late, and the next one would wait that
// much longer (the fleet would fall short of its rate). Redis'
// own clock leaks the buckets, so the nodes' clocks need not agree. The
// excess is kept fractional: at a low rate one interval leaks less than
// a thousandth, and rounding it away each batch would stop the leak.
// It may go down to -1000, not only 0: a node takes the answer as the
// key's state *now*, and "0 now" would make the next request wait a
// whole 1/rate although the bucket has been empty for long; -1000 is
// the state in which the next request passes at once (http/limiter.h:
// excess_after of a bucket is 0 once a request's worth leaked past 0).
constexpr std::string_view kReqScript = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local out = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('HMGET', k, 'e', 't')
  local e = tonumber(v[1]) or 0
  local last = tonumber(v[2]) or now
  local n = tonumber(ARGV[2 * i])
  local at = now
  if n > 0 then at = math.max(last, now - tonumber(ARGV[2 * i + 1])) end
  if at > last then e = e - rate * (at - last) / 1000 end
  if e < -1000 then e = -1000 end
  e = e + n * 1000
  if now > at then e = e - rate * (now - at) / 1000 end
  if e < -1000 then e = -1000 end
  redis.call('HSET', k, 'e', e, 't', now)
  redis.call('PEXPIRE', k, math.floor(e * 1000 / rate) + 60000)
  out[i] = math.floor(e)
end
return out
)lua";

// KEYS: the keys' hashes; ARGV[1]: this node's field; ARGV[2]: its
// heartbeat's lifetime (ms); ARGV[3]: the heartbeat keys' prefix (the
// field follows); ARGV[3 + i]: the requests this node holds for
// KEYS[i]. Answers, per key, the other live nodes' sum. The heartbeat
// keys are named in ARGV, not KEYS, which a Redis Cluster would refuse;
// a redis block is one standalone endpoint (upstream/redis.h), and the
// hash tag keeps them in the keys' slot anyway.
constexpr std::string_view kConnScript = R"lua(
local id = ARGV[1]
local hb = ARGV[3]
redis.call('SET', hb .. id, '1', 'PX', tonumber(ARGV[2]))
local out = {}
for i, k in ipairs(KEYS) do
  local c = tonumber(ARGV[3 + i])
  if c > 0 then redis.call('HSET', k, id, c) else redis.call('HDEL', k, id) end
  local all = redis.call('HGETALL', k)
  local others = 0
  for j = 1, #all, 2 do
    local f = all[j]
    if f ~= id then
      if redis.call('EXISTS', hb .. f) == 1 then others = others + tonumber(all[j + 1])
      else redis.call('HDEL', k, f) end
    end
  end
  if #all > 0 then redis.call('PEXPIRE', k, 86400000) end
  out[i] = others
end
return out
)lua";

std::string node_id() {
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
    return std::string(host) + ":" + std::to_string(getppid());
}

std::vector<std::unique_ptr<ZoneSync>>& syncs() {
    static std::vector<std::unique_ptr<ZoneSync>> s;
    return s;
}

}  // namespace

Result<bool> parse_sync_arg(std::string_view arg, SyncConf& c) {
    if (arg.starts_with("sync=") && arg.size() > 5) {
        c.redis_name = std::string(arg.substr(5));
        return true;
    }
    if (arg == "fail=open" || arg == "fail=closed") {
        c.fail_closed = arg == "fail=closed";
        return true;
    }
    if (arg.starts_with("fail=") || arg == "sync=") return make_error("invalid parameter \"" + std::string(arg) + "\"");
    return false;
}

Status resolve_sync(conf::Ctx& cx, SyncConf& c, std::string_view where) {
    if (!c.synced()) return {};
    c.redis = upstream::find_redis(cx, c.redis_name);
    if (!c.redis) return make_error("unknown redis \"" + c.redis_name + "\" in " + std::string(where));
    return {};
}

ZoneSync::ZoneSync(LimitTable& table, const SyncConf& c, std::string zone, int64_t rate)
    : table_(table), conf_(c), zone_(std::move(zone)), rate_(rate), rate_text_(std::to_string(rate)),
      client_(upstream::worker_redis(*c.redis)) {
    if (rate_ == 0) node_ = node_id();
    timer_.cb = event::Callback::to<&ZoneSync::tick>(this);
    event::worker_loop().arm(timer_, c.redis->sync_interval);
}

ZoneSync::~ZoneSync() { event::worker_loop().cancel(timer_); }

void ZoneSync::pause() { event::worker_loop().cancel(timer_); }

void ZoneSync::set_down(bool down, const char* why) {
    if (down == down_) return;
    down_ = down;
    table_.set_sync_down(down);
    if (down)
        GH_LOG(Warn, "%s zone \"%s\": redis \"%s\" %s, limiting %s until it is back", what(), zone_.c_str(),
               conf_.redis->name.c_str(), why, conf_.fail_closed ? "every request (fail=closed)" : "per node");
    else
        GH_LOG(Notice, "%s zone \"%s\": synchronizing with redis \"%s\" again", what(), zone_.c_str(),
               conf_.redis->name.c_str());
}

void ZoneSync::tick() {
    event::worker_loop().arm(timer_, conf_.redis->sync_interval);
    if (in_flight_) return;  // one batch at a time: the next one waits
    if (!client_.ready()) {
        // Not yet connected at startup is not an outage; a loss is.
        if (client_.down()) set_down(true, "is unreachable");
        collect(false);
        return;
    }
    set_down(false, "");
    collect(true);
}

void ZoneSync::collect(bool send) {
    keys_.clear();
    names_.clear();
    counts_.clear();
    {
        LimitTable::Lock lock(table_);
        const uint64_t seq = table_.seq();
        const uint64_t now = event::worker_loop().now();
        if (seq < since_) since_ = 0;  // the table was reset (LimitTable::Lock)
        bool capped = false;
        for (LimitTable::Node* n = table_.newest(); n && n->seen > since_; n = table_.older(n)) {
            if (!n->dirty) continue;
            if (keys_.size() >= conf_.redis->sync_batch) {
                capped = true;  // the rest waits for the next batch
                break;
            }
            n->dirty = 0;
            keys_.emplace_back(n->key());
            if (rate_ == 0) {
                counts_.push_back(std::to_string(n->count));
                continue;
            }
            counts_.push_back(std::to_string(n->unsynced));
            counts_.push_back(std::to_string(n->unsynced ? now - std::min(now, n->first) : 0));
            n->unsynced = 0;
        }
        if (!capped) since_ = seq;
        if (rate_ == 0 && !send) drop_idle();
    }
    if (!send) return;
    if (rate_ == 0) {
        send_conn();
        return;
    }
    if (keys_.empty()) return;
    const std::string prefix = "gatehouse:lr:{" + zone_ + "}:";
    names_.reserve(keys_.size());
    for (const std::string& k : keys_) names_.push_back(prefix + k);
    const std::string nkeys = std::to_string(keys_.size());
    std::vector<std::string_view> argv;
    argv.reserve(4 + 3 * keys_.size());
    argv.push_back("EVAL");
    argv.push_back(kReqScript);
    argv.push_back(nkeys);
    for (const std::string& n : names_) argv.push_back(n);
    argv.push_back(rate_text_);
    for (const std::string& c : counts_) argv.push_back(c);
    if (client_.command(argv, on_reply, this)) {
        in_flight_ = true;
        sent_at_ = event::worker_loop().now();
        ++sent_;
    }
}

// A limit_conn batch: sent every interval, keys or not (the heartbeat).
void ZoneSync::send_conn() {
    const std::string prefix = "gatehouse:lc:{" + zone_ + "}:";
    names_.reserve(keys_.size());
    for (const std::string& k : keys_) names_.push_back(prefix + k);
    const std::string nkeys = std::to_string(keys_.size());
    // A few intervals, so that one late batch does not make the others
    // forget this node's connections; at least 2 s.
    const std::string ttl =
        std::to_string(std::max<int64_t>(2000, 5 * static_cast<int64_t>(conf_.redis->sync_interval.count())));
    const std::string hb = prefix + "node:";
    std::vector<std::string_view> argv;
    argv.reserve(6 + 2 * keys_.size());
    argv.push_back("EVAL");
    argv.push_back(kConnScript);
    argv.push_back(nkeys);
    for (const std::string& n : names_) argv.push_back(n);
    argv.push_back(node_);
    argv.push_back(ttl);
    argv.push_back(hb);
    for (const std::string& c : counts_) argv.push_back(c);
    if (client_.command(argv, on_reply, this)) {
        in_flight_ = true;
        sent_at_ = event::worker_loop().now();
        ++sent_;
    }
}

// limit_conn: the batch's records whose count fell to 0 go, now that
// Redis was told (or could not be): limit_conn.cc's Hold leaves them to
// the sync, and the zone has no other eviction. Under the zone's lock.
void ZoneSync::drop_idle() {
    for (const std::string& k : keys_)
        if (LimitTable::Node* n = table_.find(LimitTable::hash_key(k), k); n && n->count == 0 && !n->dirty)
            table_.erase(n);
}

void ZoneSync::on_reply(void* data, redisReply* r) {
    auto* z = static_cast<ZoneSync*>(data);
    z->in_flight_ = false;
    const bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == z->keys_.size();
    if (!ok && z->rate_ == 0) {
        LimitTable::Lock lock(z->table_);
        z->drop_idle();
    }
    if (!r) return;  // lost (timeout, connection): the client logged it
    if (!ok) {
        if (!z->error_logged_)
            GH_LOG(Error, "%s zone \"%s\": redis \"%s\" answered the sync with %s%.*s", z->what(), z->zone_.c_str(),
                   z->conf_.redis->name.c_str(), r->type == REDIS_REPLY_ERROR ? "" : "an unexpected reply ",
                   r->type == REDIS_REPLY_ERROR ? static_cast<int>(r->len) : 0, r->str ? r->str : "");
        z->error_logged_ = true;
        return;
    }
    z->error_logged_ = false;
    // Redis' answer is the state about half a round trip after the batch
    // left; dated now, the bucket would lose the leak of the other half.
    const uint64_t now = event::worker_loop().now();
    const uint64_t at = z->sent_at_ + (now - std::min(now, z->sent_at_)) / 2;
    LimitTable::Lock lock(z->table_);
    for (size_t i = 0; i < r->elements; ++i) {
        const redisReply* e = r->element[i];
        if (e->type != REDIS_REPLY_INTEGER) continue;
        const std::string& key = z->keys_[i];
        LimitTable::Node* n = z->table_.find(LimitTable::hash_key(key), key);
        if (!n) continue;  // evicted meanwhile
        if (z->rate_ == 0) {
            n->remote = static_cast<uint32_t>(std::clamp<long long>(e->integer, 0, UINT32_MAX));
            if (n->count == 0 && !n->dirty) {
                // Idle here: the record goes once the fleet holds nothing
                // either. While others hold some it stays, and goes in the
                // next batch to refresh that count, else a request that
                // came and went would forget it and the next one would
                // pass whatever the fleet holds.
                if (n->remote == 0) {
                    z->table_.erase(n);
                } else {
                    z->table_.touch(n);
                    n->seen = z->table_.next_seq();
                    n->dirty = 1;
                }
            }
            continue;
        }
        // The fleet's excess, plus what this node accepted since the
        // batch left (not in Redis yet).
        n->excess = e->integer + static_cast<int64_t>(n->unsynced) * 1000;
        n->last = at;
    }
}

void start_sync(LimitTable& table, const SyncConf& c, std::string zone, int64_t rate, int slot) {
    if (slot != 0 || !c.redis) return;
    syncs().push_back(std::make_unique<ZoneSync>(table, c, std::move(zone), rate));
}

void pause_all_syncs() {
    for (auto& z : syncs()) z->pause();
}

void stop_all_syncs() { syncs().clear(); }

}  // namespace gatehouse::http
