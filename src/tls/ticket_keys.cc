#include "tls/ticket_keys.h"

#include <openssl/rand.h>

#include <algorithm>
#include <cstring>
#include <new>

#include "conf/parser.h"

namespace gatehouse::tls {

Result<TicketKey> parse_ticket_key(std::span<const uint8_t> b) {
    if (b.size() != 80 && b.size() != 48)
        return make_error(std::to_string(b.size()) + " bytes, it must be 80 or 48");
    TicketKey k;
    k.size = static_cast<uint8_t>(b.size());
    memcpy(k.name, b.data(), 16);
    if (b.size() == 48) {
        memcpy(k.aes_key, b.data() + 16, 16);
        memcpy(k.hmac_key, b.data() + 32, 16);
    } else {
        memcpy(k.hmac_key, b.data() + 16, 32);
        memcpy(k.aes_key, b.data() + 48, 32);
    }
    return k;
}

Result<TicketKey> read_ticket_key(const std::string& path) {
    // Anything longer than 80 bytes is wrong; reading a little more tells
    // the size in the message without reading a huge file.
    auto text = conf::read_file(path, 4096);
    if (!text) return text.error();
    auto k = parse_ticket_key({reinterpret_cast<const uint8_t*>(text->data()), text->size()});
    if (!k) return make_error("\"" + path + "\" has " + k.message());
    return k;
}

namespace {

TicketKey random_key() {
    uint8_t raw[80];
    // RAND_bytes fails only without an entropy source, which OpenSSL
    // cannot work without anyway; OpenSSL 3 reseeds after fork().
    GH_CHECK(RAND_bytes(raw, sizeof raw) == 1);
    return *parse_ticket_key(raw);
}

constexpr uint64_t kRingMagic = 0x67682d746b722d32ull;  // "gh-tkr-2": the layout's version

}  // namespace

const TicketKey& process_ticket_key() {
    static const TicketKey key = random_key();
    return key;
}

TicketRing* TicketRing::attach(void* addr, size_t size, time_t now) {
    if (size < sizeof(TicketRing)) return nullptr;
    auto* r = static_cast<TicketRing*>(addr);
    if (r->magic_ == kRingMagic) return r;
    // A fresh (zeroed) zone: the master lays it out before any worker
    // maps it, so nobody holds the lock it constructs.
    r = ::new (addr) TicketRing();
    r->keys_[0] = random_key();
    r->count_ = 1;
    r->made_ = now;
    r->magic_ = kRingMagic;
    return r;
}

size_t TicketRing::keys(time_t now, time_t period, std::span<TicketKey, kKeys> out) {
    // Owner died: a worker died mid-rotation; nothing to repair (see the
    // header), the ring goes on.
    shm::Guard lock(mutex_);
    if (period > 0 && now >= made_ + period) {
        // Idle for several periods: as many new keys, at most a full ring.
        int64_t due = std::min<int64_t>((now - made_) / period, kKeys);
        for (int64_t i = 0; i < due; ++i) {
            for (size_t j = kKeys - 1; j > 0; --j) keys_[j] = keys_[j - 1];
            keys_[0] = random_key();
            if (count_ < kKeys) ++count_;
        }
        made_ = now;
    }
    size_t n = count_;
    for (size_t i = 0; i < n; ++i) out[i] = keys_[i];
    return n;
}

}  // namespace gatehouse::tls
