#include "http/chunked.h"

#include <algorithm>

#include "core/assert.h"
#include "core/str.h"

namespace gatehouse::http {

enum class ChunkedDecoder::Err : uint8_t {
    BadSize,
    TooLargeChunk,
    BodyTooLarge,
    BadExt,
    LineTooLong,
    BadLineEnd,
    NoDataCrlf,
    BadTrailer,
    TrailersTooLarge,
};

namespace {

struct Reason {
    std::string_view client;
    std::string_view upstream;
};

bool is_tchar(char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    return c != 0 && std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// field-vchar, SP and HTAB (RFC 9110 5.5): no CTL, no DEL.
bool is_value_char(char c) {
    const auto u = static_cast<unsigned char>(c);
    return u == '\t' || (u >= 0x20 && u != 0x7f);
}

}  // namespace

ChunkResult ChunkedDecoder::fail(Err e, size_t at) {
    Reason r{};
    switch (e) {
    case Err::BadSize:
        r = {"client sent invalid chunk size", "upstream sent invalid chunk size"};
        break;
    case Err::TooLargeChunk:
        r = {"client sent too large chunk size", "upstream sent too large chunk size"};
        break;
    case Err::BodyTooLarge:
        r = {"client intended to send too large chunked body",
             "upstream sent too large chunked body"};
        break;
    case Err::BadExt:
        r = {"client sent invalid chunk extension", "upstream sent invalid chunk extension"};
        break;
    case Err::LineTooLong:
        r = {"client sent too long chunk size line", "upstream sent too long chunk size line"};
        break;
    case Err::BadLineEnd:
        r = {"client sent invalid line ending in chunked body",
             "upstream sent invalid line ending in chunked body"};
        break;
    case Err::NoDataCrlf:
        r = {"client sent chunk data without CRLF", "upstream sent chunk data without CRLF"};
        break;
    case Err::BadTrailer:
        r = {"client sent invalid trailer field", "upstream sent invalid trailer field"};
        break;
    case Err::TrailersTooLarge:
        r = {"client sent too large trailer section", "upstream sent too large trailer section"};
        break;
    }
    state_ = St::Error;
    error_.state = ChunkState::Error;
    error_.consumed = at;
    if (peer_ == Peer::Client) {
        error_.status = e == Err::BodyTooLarge ? 413 : 400;
        error_.reason = r.client;
    } else {
        error_.status = 502;
        error_.reason = r.upstream;
    }
    return error_;
}

ChunkResult ChunkedDecoder::decode(std::string_view in) {
    if (state_ == St::Error) {
        ChunkResult again = error_;
        again.consumed = 0;
        return again;
    }
    ChunkResult r;
    if (state_ == St::Done) {
        r.state = ChunkState::Done;
        return r;
    }
    const size_t n = in.size();
    // The trailer bytes of this call: [tfrom, tend).
    size_t tfrom = std::string_view::npos, tend = 0;
    auto trailer_byte = [&](size_t i) {
        if (tfrom == std::string_view::npos) tfrom = i;
        tend = i + 1;
    };
    auto with_trailer = [&](ChunkResult& res) -> ChunkResult& {
        if (tfrom != std::string_view::npos) res.trailer = in.substr(tfrom, tend - tfrom);
        return res;
    };
    for (size_t i = 0; i < n; ++i) {
        const char c = in[i];
        switch (state_) {
        case St::Data: {
            const size_t take = static_cast<size_t>(std::min<uint64_t>(size_, n - i));
            size_ -= take;
            if (size_ == 0) state_ = St::DataCr;
            r.consumed = i + take;
            r.data = in.substr(i, take);
            return r;
        }
        case St::Size:
        case St::SizeDigits: {
            const int d = hex_value(c);
            if (d >= 0) {
                // Overflow and limits are checked digit by digit, so
                // "fffff...." fails at the digit that crosses the line, and
                // leading zeros cost nothing but line length.
                const auto du = static_cast<uint64_t>(d);
                const uint64_t max = limits_.max_chunk_size;
                if (du > max || size_ > (max - du) / 16) return fail(Err::TooLargeChunk, i);
                size_ = size_ * 16 + du;
                if (size_ > limits_.max_body - body_) return fail(Err::BodyTooLarge, i);
                state_ = St::SizeDigits;
            } else if (state_ == St::Size) {
                // chunk-size = 1*HEXDIG: no sign, no "0x", no space first.
                return fail(Err::BadSize, i);
            } else if (c == ';') {
                state_ = St::Ext;
            } else if (c == ' ' || c == '\t') {
                state_ = St::ExtBws;  // BWS before ';' (RFC 9112 7.1.1)
            } else if (c == '\r') {
                state_ = St::SizeLf;
            } else if (c == '\n') {
                return fail(Err::BadLineEnd, i);
            } else {
                return fail(Err::BadSize, i);
            }
            if (c != '\r' && ++line_ > limits_.max_line) return fail(Err::LineTooLong, i);
            break;
        }
        case St::ExtBws:
            if (c == ';')
                state_ = St::Ext;
            else if (c == '\r')
                state_ = St::SizeLf;
            else if (c == '\n')
                return fail(Err::BadLineEnd, i);
            else if (c != ' ' && c != '\t')
                return fail(Err::BadExt, i);
            if (c != '\r' && ++line_ > limits_.max_line) return fail(Err::LineTooLong, i);
            break;
        case St::Ext:
            // Extensions are not interpreted, but the line must end at the
            // first CR and nowhere else: an LF or a CTL inside (a
            // quoted-string cannot hold one either) is refused, since
            // another parser could end the line there.
            if (c == '\r')
                state_ = St::SizeLf;
            else if (c == '\n')
                return fail(Err::BadLineEnd, i);
            else if (!is_value_char(c))
                return fail(Err::BadExt, i);
            if (c != '\r' && ++line_ > limits_.max_line) return fail(Err::LineTooLong, i);
            break;
        case St::SizeLf:
            if (c != '\n') return fail(Err::BadLineEnd, i);
            line_ = 0;
            state_ = size_ == 0 ? St::TrailerStart : St::Data;
            body_ += size_;
            break;
        case St::DataCr:
            if (c != '\r') return fail(Err::NoDataCrlf, i);
            state_ = St::DataLf;
            break;
        case St::DataLf:
            if (c != '\n') return fail(Err::NoDataCrlf, i);
            state_ = St::Size;
            break;
        case St::TrailerStart:
            if (c == '\r') {
                state_ = St::FinalLf;
                break;
            }
            // A leading SP or HTAB would be obs-fold (RFC 9112 5.2).
            if (!is_tchar(c)) return fail(c == '\n' ? Err::BadLineEnd : Err::BadTrailer, i);
            state_ = St::TrailerName;
            if (++trailers_ > limits_.max_trailers) return fail(Err::TrailersTooLarge, i);
            trailer_byte(i);
            break;
        case St::TrailerName:
            if (c == ':')
                state_ = St::TrailerValue;
            else if (!is_tchar(c))
                return fail(Err::BadTrailer, i);
            if (++trailers_ > limits_.max_trailers) return fail(Err::TrailersTooLarge, i);
            trailer_byte(i);
            break;
        case St::TrailerValue:
            if (c == '\r')
                state_ = St::TrailerLf;
            else if (c == '\n')
                return fail(Err::BadLineEnd, i);
            else if (!is_value_char(c))
                return fail(Err::BadTrailer, i);
            if (++trailers_ > limits_.max_trailers) return fail(Err::TrailersTooLarge, i);
            trailer_byte(i);
            break;
        case St::TrailerLf:
            if (c != '\n') return fail(Err::BadLineEnd, i);
            state_ = St::TrailerStart;
            if (++trailers_ > limits_.max_trailers) return fail(Err::TrailersTooLarge, i);
            trailer_byte(i);
            break;
        case St::FinalLf:
            if (c != '\n') return fail(Err::BadLineEnd, i);
            state_ = St::Done;
            r.state = ChunkState::Done;
            r.consumed = i + 1;
            return with_trailer(r);
        case St::Done:
        case St::Error:
            GH_CHECK(false);
        }
    }
    r.consumed = n;
    return with_trailer(r);
}

size_t write_chunk_header(uint64_t size, std::span<char, kMaxChunkHeader> out) {
    GH_CHECK(size != 0);
    constexpr std::string_view kDigits = "0123456789abcdef";
    char tmp[16];
    size_t n = 0;
    for (; size != 0; size >>= 4) tmp[n++] = kDigits[size & 0xf];
    for (size_t i = 0; i < n; ++i) out[i] = tmp[n - 1 - i];
    out[n] = '\r';
    out[n + 1] = '\n';
    return n + 2;
}

}  // namespace gatehouse::http
