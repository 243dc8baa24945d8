// Session ticket keys (RFC 5077): what encrypts the session state a
// client keeps, so that any worker holding the key can resume it.
//
// A key file is nginx's ("openssl rand 80 > ticket.key"): 80 bytes are a
// 16-byte name, a 32-byte HMAC-SHA256 secret and a 32-byte AES-256-CBC
// key; 48 bytes are a name, a 16-byte AES-128-CBC key and a 16-byte HMAC
// secret. The same file gives the same tickets in nginx and here.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "core/result.h"

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

// The key of contexts without "ssl_session_ticket_key": 80 random bytes
// made on first use, which is in the master while it loads the first
// configuration with TLS. Workers inherit it through fork() and reloads
// keep it (it lives as long as the process), so a ticket made by any
// worker of any generation resumes on all of them.
const TicketKey& process_ticket_key();

}  // namespace gatehouse::tls
