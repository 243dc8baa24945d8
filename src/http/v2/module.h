// http_v2_module: the settings of HTTP/2 connections ("http2_*"
// directives) and $http2. "http2 on|off" and "listen ... http2" belong to
// http_core (core_module.h), as the TLS module reads them for ALPN.
#pragma once

#include <cstdint>
#include <optional>

#include "conf/module.h"

namespace gatehouse::http {

extern const conf::Module http_v2_module;

namespace v2 {

inline constexpr uint64_t kDefaultRecvBuffer = 256 * 1024;

struct H2MainConf {
    // "http2_recv_buffer_size": bytes read per recv(); unset: 256k
    // (kDefaultRecvBuffer).
    std::optional<uint64_t> recv_buffer_size;
};

struct H2SrvConf {
    std::optional<uint64_t> max_concurrent_streams;  // "http2_max_concurrent_streams"
    // "http2_body_preread_size": each stream's initial receive window, so
    // what a client may send of a body before a handler reads it.
    std::optional<uint64_t> body_preread_size;
};

struct H2LocConf {
    std::optional<uint64_t> chunk_size;  // "http2_chunk_size": most bytes per DATA frame
};

}  // namespace v2
}  // namespace gatehouse::http
