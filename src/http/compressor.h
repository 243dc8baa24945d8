// Streaming compressors for the response compression filter
// (modules/gzip_filter.cc): gzip (zlib's deflate with the gzip wrapper),
// brotli (libbrotlienc) and zstd (libzstd), behind one small interface so
// that the filter's buffering, back-pressure and flushing are written once.
//
// The codings are accept_encoding.h's (Coding). Pure: no request, no
// loop. A Compressor is made for one response, fed input and given room for output by its caller until the stream ends;
// its memory (the codec's state) is freed by its destructor. The state of
// each codec is bounded at creation: a window and a level, both from the
// configuration, and the response's length when known (a small body gets
// a small window).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include "http/accept_encoding.h"

namespace gatehouse::http {

// What the caller asks of one step.
enum class Op : uint8_t {
    Process,  // take input, write output when the codec has some
    Flush,    // everything taken so far out now, decodable (Z_SYNC_FLUSH,
              // BROTLI_OPERATION_FLUSH, ZSTD_e_flush)
    Finish,   // the end of the stream (trailer, checksum)
};

struct CompressorParams {
    Coding coding = Coding::Gzip;
    int level = 1;            // gzip 1-9, brotli 0-11, zstd 1-22
    int window_bits = 0;      // log2 of the window; 0: the codec's default for the level
    std::optional<uint64_t> length;  // the whole input's size, when known
};

class Compressor {
public:
    virtual ~Compressor() = default;
    // One step: takes from [*in, *in + *in_len) and writes into
    // [*out, *out + *out_len), advancing both. Returns false when the
    // codec failed (out of memory aside, which aborts: a bug). *done:
    // for Flush and Finish, everything is out (call again with more room
    // until it is); for Process, all input was taken.
    // Brotli's rule applies to all: once a Flush or Finish began, call
    // again with the same op and no new input until *done.
    virtual bool step(Op op, const char** in, size_t* in_len, char** out, size_t* out_len, bool* done) = 0;
};

// A compressor for `p`; null when the codec could not be set up (its
// allocation failed or a parameter was refused).
std::unique_ptr<Compressor> make_compressor(const CompressorParams& p);

// nginx's $gzip_ratio: in/out as "N.NN", rounded at the third decimal;
// out == 0 gives "0.00". Written to buf (at least 24 bytes).
std::string_view format_ratio(uint64_t in, uint64_t out, char* buf);

}  // namespace gatehouse::http
