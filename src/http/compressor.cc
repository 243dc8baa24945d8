// The three codecs behind http::Compressor (compressor.h).
#include "http/compressor.h"

#include <brotli/encode.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>

#include "core/assert.h"

namespace gatehouse::http {

namespace {

// The smallest window that holds the whole input (a 2 KiB page needs no
// 32 KiB window), within [lo, hi].
int window_for(std::optional<uint64_t> length, int lo, int hi) {
    if (!length) return hi;
    int w = lo;
    while (w < hi && (uint64_t{1} << w) < *length) ++w;
    return w;
}

class GzipCompressor final : public Compressor {
public:
    bool init(const CompressorParams& p) {
        // nginx's sizes: a 32 KiB window and 128 KiB of hash (memLevel 8)
        // at most, less for a short body; +16 asks zlib for the gzip
        // wrapper (header, CRC-32, length) instead of zlib's.
        int wbits = p.window_bits ? p.window_bits : 15;
        wbits = std::min(wbits, window_for(p.length, 9, 15));
        int mem_level = std::max(1, wbits - 7);
        ok_ = deflateInit2(&z_, p.level, Z_DEFLATED, wbits + 16, mem_level, Z_DEFAULT_STRATEGY) == Z_OK;
        return ok_;
    }
    ~GzipCompressor() override {
        if (ok_) deflateEnd(&z_);
    }
    bool step(Op op, const char** in, size_t* in_len, char** out, size_t* out_len, bool* done) override {
        z_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(*in));
        z_.avail_in = static_cast<uInt>(std::min<size_t>(*in_len, UINT32_MAX));
        z_.next_out = reinterpret_cast<Bytef*>(*out);
        z_.avail_out = static_cast<uInt>(std::min<size_t>(*out_len, UINT32_MAX));
        const uInt in0 = z_.avail_in, out0 = z_.avail_out;
        int flush = op == Op::Process ? Z_NO_FLUSH : op == Op::Flush ? Z_SYNC_FLUSH : Z_FINISH;
        int rc = deflate(&z_, flush);
        // Z_BUF_ERROR: no progress possible (no room, or nothing to do):
        // not an error for a stream, the caller gives room.
        if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) return false;
        *in += in0 - z_.avail_in;
        *in_len -= in0 - z_.avail_in;
        *out += out0 - z_.avail_out;
        *out_len -= out0 - z_.avail_out;
        switch (op) {
            case Op::Process: *done = *in_len == 0; break;
            // zlib: a flush is complete when it left room unused.
            case Op::Flush: *done = *in_len == 0 && z_.avail_out != 0; break;
            case Op::Finish: *done = rc == Z_STREAM_END; break;
        }
        return true;
    }

private:
    z_stream z_{};
    bool ok_ = false;
};

class BrotliCompressor final : public Compressor {
public:
    bool init(const CompressorParams& p) {
        s_ = BrotliEncoderCreateInstance(nullptr, nullptr, nullptr);
        if (!s_) return false;
        int lgwin = p.window_bits ? p.window_bits : 19;
        lgwin = std::clamp(std::min(lgwin, window_for(p.length, BROTLI_MIN_WINDOW_BITS, BROTLI_MAX_WINDOW_BITS)),
                           BROTLI_MIN_WINDOW_BITS, BROTLI_MAX_WINDOW_BITS);
        bool ok = BrotliEncoderSetParameter(s_, BROTLI_PARAM_QUALITY, static_cast<uint32_t>(p.level)) &&
                  BrotliEncoderSetParameter(s_, BROTLI_PARAM_LGWIN, static_cast<uint32_t>(lgwin));
        if (ok && p.length)
            ok = BrotliEncoderSetParameter(s_, BROTLI_PARAM_SIZE_HINT,
                                           static_cast<uint32_t>(std::min<uint64_t>(*p.length, 1u << 30)));
        return ok;
    }
    ~BrotliCompressor() override {
        if (s_) BrotliEncoderDestroyInstance(s_);
    }
    bool step(Op op, const char** in, size_t* in_len, char** out, size_t* out_len, bool* done) override {
        BrotliEncoderOperation bop = op == Op::Process ? BROTLI_OPERATION_PROCESS
                                     : op == Op::Flush ? BROTLI_OPERATION_FLUSH
                                                       : BROTLI_OPERATION_FINISH;
        auto* next_in = reinterpret_cast<const uint8_t*>(*in);
        auto* next_out = reinterpret_cast<uint8_t*>(*out);
        if (!BrotliEncoderCompressStream(s_, bop, in_len, &next_in, out_len, &next_out, nullptr)) return false;
        *in = reinterpret_cast<const char*>(next_in);
        *out = reinterpret_cast<char*>(next_out);
        switch (op) {
            case Op::Process: *done = *in_len == 0; break;
            case Op::Flush: *done = *in_len == 0 && !BrotliEncoderHasMoreOutput(s_); break;
            case Op::Finish: *done = BrotliEncoderIsFinished(s_); break;
        }
        return true;
    }

private:
    BrotliEncoderState* s_ = nullptr;
};

// ZSTD_WINDOWLOG_MIN is in zstd's experimental API only.
constexpr int kZstdMinWindow = 10;

class ZstdCompressor final : public Compressor {
public:
    bool init(const CompressorParams& p) {
        c_ = ZSTD_createCCtx();
        if (!c_) return false;
        // A bounded window (512 KiB unless configured), whatever the level
        // would choose: the window is most of a context's memory.
        int wlog = p.window_bits ? p.window_bits : 19;
        wlog = std::clamp(std::min(wlog, window_for(p.length, kZstdMinWindow, 27)),
                          kZstdMinWindow, 27);
        if (ZSTD_isError(ZSTD_CCtx_setParameter(c_, ZSTD_c_compressionLevel, p.level))) return false;
        if (ZSTD_isError(ZSTD_CCtx_setParameter(c_, ZSTD_c_windowLog, wlog))) return false;
        if (p.length && ZSTD_isError(ZSTD_CCtx_setPledgedSrcSize(c_, *p.length))) return false;
        return true;
    }
    ~ZstdCompressor() override {
        if (c_) ZSTD_freeCCtx(c_);
    }
    bool step(Op op, const char** in, size_t* in_len, char** out, size_t* out_len, bool* done) override {
        ZSTD_inBuffer ib{*in, *in_len, 0};
        ZSTD_outBuffer ob{*out, *out_len, 0};
        ZSTD_EndDirective d = op == Op::Process ? ZSTD_e_continue : op == Op::Flush ? ZSTD_e_flush : ZSTD_e_end;
        size_t left = ZSTD_compressStream2(c_, &ob, &ib, d);
        if (ZSTD_isError(left)) return false;
        *in += ib.pos;
        *in_len -= ib.pos;
        *out += ob.pos;
        *out_len -= ob.pos;
        *done = op == Op::Process ? *in_len == 0 : (left == 0 && *in_len == 0);
        return true;
    }

private:
    ZSTD_CCtx* c_ = nullptr;
};

}  // namespace

std::unique_ptr<Compressor> make_compressor(const CompressorParams& p) {
    switch (p.coding) {
        case Coding::Gzip: {
            auto c = std::make_unique<GzipCompressor>();
            if (!c->init(p)) return nullptr;
            return c;
        }
        case Coding::Br: {
            auto c = std::make_unique<BrotliCompressor>();
            if (!c->init(p)) return nullptr;
            return c;
        }
        case Coding::Zstd: {
            auto c = std::make_unique<ZstdCompressor>();
            if (!c->init(p)) return nullptr;
            return c;
        }
    }
    return nullptr;
}

std::string_view format_ratio(uint64_t in, uint64_t out, char* buf) {
    if (out == 0) {
        std::memcpy(buf, "0.00", 4);
        return {buf, 4};
    }
    // Hundredths, rounded half up at the thousandth.
    uint64_t milli = in * 1000 / out;
    uint64_t hundredths = milli / 10 + (milli % 10 > 4 ? 1 : 0);
    int n = snprintf(buf, 24, "%llu.%02llu", static_cast<unsigned long long>(hundredths / 100),
                     static_cast<unsigned long long>(hundredths % 100));
    return {buf, static_cast<size_t>(n)};
}

}  // namespace gatehouse::http
