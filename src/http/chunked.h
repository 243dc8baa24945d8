// The chunked transfer coding (RFC 9112 7.1): an incremental decoder that
// hands out the body's bytes as views into its input, and the encoder's
// framing helpers.
//
// Use, from the read loop, with whatever bytes arrived:
//
//     ChunkedDecoder d(limits);                  // one per message body
//     while (!in.empty()) {
//         ChunkResult r = d.decode(in);
//         if (!r.data.empty()) append_to_body(r.data);   // a view into `in`
//         if (r.state == ChunkState::Error) return reply(r.status, r.reason);
//         in.remove_prefix(r.consumed);
//         if (r.state == ChunkState::Done) break;  // `in` holds the next request
//     }
//
// The decoder copies nothing and keeps no pointer into its input, so a
// piece may be dropped as soon as its data has been used. Any split of the
// input gives the same body bytes and the same outcome.
//
// Strictness: every line ends with CRLF, a bare LF or CR is an error, as
// is anything but CRLF after a chunk's data. Lenient line endings in chunked
// framing are what lets two hops see different bodies ("chunk extension"
// and "bare LF" request smuggling); there is no option for them here, unlike
// in the head parser. Extensions are checked for characters and skipped;
// trailer fields are checked for syntax and handed out as raw bytes
// (ChunkResult::trailer) for a caller that passes them on; the others drop
// them (RFC 9112 7.1.2 lets a recipient).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace gatehouse::http {

struct ChunkedLimits {
    // Larger chunk sizes are refused (400) before any data is read; the
    // default is the largest off_t, as in nginx.
    uint64_t max_chunk_size = static_cast<uint64_t>(INT64_MAX);
    // The body's decoded size (client_max_body_size): 413 as soon as a
    // chunk size announces more, before its data arrives.
    uint64_t max_body = UINT64_MAX;
    // A chunk-size line: digits and extensions, without CRLF (400).
    size_t max_line = 4096;
    // The trailer fields, their CRLFs included, not the final CRLF (400).
    size_t max_trailers = 8192;
};

// Whose body it is: the reasons say "client sent" or "upstream sent", and
// an upstream's error is a 502.
enum class Peer : uint8_t { Client, Upstream };

// More: call again with the input after `consumed` (if that is empty, with
// the next bytes to arrive). Done: the body and its trailers ended;
// `consumed` stops there and the rest of the input is not the body's.
enum class ChunkState : uint8_t { More, Done, Error };

struct ChunkResult {
    ChunkState state = ChunkState::More;
    // Bytes of the input used, framing and data; for Error, the offset of
    // the offending byte.
    size_t consumed = 0;
    std::string_view data;  // body bytes, a view into the input; maybe empty
    // Bytes of the trailer section decoded in this call, a view into the
    // input: whole "name: value\r\n" lines once the section is done, at
    // most ChunkedLimits::max_trailers in all; the final CRLF is not in.
    std::string_view trailer;
    uint16_t status = 0;    // Error: 400 or 413 (client), 502 (upstream)
    std::string_view reason;  // Error: static, e.g. "client sent invalid chunk size"
};

class ChunkedDecoder {
public:
    explicit ChunkedDecoder(const ChunkedLimits& limits = {}, Peer peer = Peer::Client)
        : limits_(limits), peer_(peer) {}

    // Decodes from the start of `in` up to the end of the next run of
    // data, the end of the body, or the end of `in`, whichever is first.
    // After Done or Error it returns the same state and consumes nothing.
    ChunkResult decode(std::string_view in);

    // The sizes of the chunks begun so far: the body's length once done.
    uint64_t body_size() const { return body_; }
    bool done() const { return state_ == St::Done; }
    void reset() { *this = ChunkedDecoder(limits_, peer_); }

private:
    enum class St : uint8_t {
        Size,        // the first hex digit of a chunk size
        SizeDigits,  // more digits, ';', BWS or CR
        ExtBws,      // BWS after the size: more, ';' or CR
        Ext,         // in the extensions, up to CR
        SizeLf,      // LF ending the size line
        Data,
        DataCr,      // CRLF after data
        DataLf,
        TrailerStart,  // a trailer field or the final CRLF
        TrailerName,
        TrailerValue,
        TrailerLf,
        FinalLf,
        Done,
        Error,
    };
    enum class Err : uint8_t;

    ChunkResult fail(Err e, size_t at);

    ChunkedLimits limits_;
    uint64_t size_ = 0;       // of the chunk being read; what is left of it in Data
    uint64_t body_ = 0;
    size_t line_ = 0;         // bytes of the current size line
    size_t trailers_ = 0;     // bytes of the trailer section
    St state_ = St::Size;
    Peer peer_;
    ChunkResult error_;       // once Error
};

// Encoding: a chunk is chunk_header(size) + data + kChunkEnd, and the body
// ends with kLastChunk (no trailers).
inline constexpr size_t kMaxChunkHeader = 18;  // 16 hex digits and CRLF
inline constexpr std::string_view kChunkEnd = "\r\n";
inline constexpr std::string_view kLastChunk = "0\r\n\r\n";

// Writes "<size in lower-case hex>\r\n" to `out`; returns the bytes
// written. size must not be 0 (that is kLastChunk).
size_t write_chunk_header(uint64_t size, std::span<char, kMaxChunkHeader> out);

}  // namespace gatehouse::http
