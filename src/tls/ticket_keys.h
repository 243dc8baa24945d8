// Session ticket keys (RFC 5077): what encrypts the session state a
// client keeps, so that any worker holding the key can resume it.
//
// A key file is nginx's ("openssl rand 80 > ticket.key"): 80 bytes are a
// 16-byte name, a 32-byte HMAC-SHA256 secret and a 32-byte AES-256-CBC
// key; 48 bytes are a name, a 16-byte AES-128-CBC key and a 16-byte HMAC
// secret. The same file gives the same tickets in nginx and here.
#pragma once

#include <cstdint>
#include <ctime>
#include <span>
#include <string>

#include "core/result.h"
#include "core/shm_lock.h"

namespace gatehouse::tls {

struct TicketKey {
    uint8_t name[16] = {};
    uint8_t aes_key[32] = {};   // the first 16 bytes for a 48-byte key
    uint8_t hmac_key[32] = {};  // the first 16 bytes for a 48-byte key
    uint8_t size = 80;          // 48 or 80: the file's size

    size_t aes_len() const { return size == 48 ? 16 : 32; }
    size_t hmac_len() const { return size == 48 ? 16 : 32; }
};

// The key in a file's bytes. Error: "N bytes, it must be 80 or 48".
Result<TicketKey> parse_ticket_key(std::span<const uint8_t> bytes);

// Reads and parses `path`; the error names the file.
Result<TicketKey> read_ticket_key(const std::string& path);

// The key of contexts without "ssl_session_ticket_key" when no shared
// memory is available: 80 random bytes made on first use, in the master
// while it loads the first configuration with TLS. Workers inherit it
// through fork() and reloads keep it (it lives as long as the process).
const TicketKey& process_ticket_key();

// The keys of contexts without "ssl_session_ticket_key": a ring of random
// keys in a shared memory zone, so that every worker of every generation
// sees the same ones (the zone is reused across reloads; a binary upgrade
// starts a new ring). The newest key encrypts, all of them decrypt.
//
// Rotation: once `period` ("ssl_session_timeout") has passed since the
// newest key was made, the next caller puts a new key in front and drops
// the oldest beyond kKeys. A key thus encrypts for one period and still
// decrypts for two more, while a ticket lives one period at most: every
// ticket the server would still accept can be decrypted, and a stolen key
// opens at most three periods of tickets (forward secrecy, RFC 8446
// 4.6.1, RFC 5077 5.5). Rotation is lazy, on the first handshake after
// the period: no timer, no worker in charge, and an idle server rotates
// several times at once (never keeping a key past its time).
//
// Threads: attach() in the master before the workers fork; keys() in any
// worker, under the shm::Mutex in the zone. A worker dying with it held
// leaves nothing to repair: keys are copied whole, so at worst one is
// there twice until the next rotation.
class TicketRing {
public:
    static constexpr size_t kKeys = 3;
    static constexpr size_t kZoneSize = 4096;

    // The ring laid out in [addr, addr + size): the one already there (a
    // reused zone), else a new one holding one key made at `now`. Null if
    // `size` is too small.
    static TicketRing* attach(void* addr, size_t size, time_t now);

    // Rotates if due (see above), then copies the keys, newest first, to
    // `out`; returns how many (1 to kKeys). `period` <= 0: never rotates.
    size_t keys(time_t now, time_t period, std::span<TicketKey, kKeys> out);

private:
    TicketRing() = default;

    uint64_t magic_ = 0;
    shm::Mutex mutex_;
    int64_t made_ = 0;    // unix time the newest key was made
    uint32_t count_ = 0;  // keys_[0, count_) are in use
    TicketKey keys_[kKeys];
};

}  // namespace gatehouse::tls
