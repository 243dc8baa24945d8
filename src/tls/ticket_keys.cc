#include "tls/ticket_keys.h"

#include <openssl/rand.h>

#include <cstring>

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

const TicketKey& process_ticket_key() {
    static const TicketKey key = [] {
        uint8_t raw[80];
        // RAND_bytes fails only without an entropy source, which OpenSSL
        // cannot work without anyway.
        GH_CHECK(RAND_bytes(raw, sizeof raw) == 1);
        return *parse_ticket_key(raw);
    }();
    return key;
}

}  // namespace gatehouse::tls
