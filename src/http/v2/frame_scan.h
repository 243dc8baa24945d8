// A look at every frame header a client sends, ahead of nghttp2.
//
// nghttp2 calls no callback for a DATA frame on a stream that is no longer
// open (it skips the payload before on_begin_frame), so a client could
// send empty DATA frames to a closed stream without end and no flood
// bound of ours would see them. FrameScan follows the client's byte
// stream frame by frame (RFC 9113 4.1: a 9-octet header, then `length`
// octets) and reports each header; it keeps 9 octets and two counters,
// whatever the client sends, and never reads a payload.
//
// Who calls: v2::Connection, with every byte it reads from the client,
// before nghttp2 gets them; the first kPreface octets are skipped.
#pragma once

#include <cstddef>
#include <cstdint>

namespace gatehouse::http::v2 {

struct FrameHeader {
    uint32_t length = 0;
    uint8_t type = 0;
    uint8_t flags = 0;
    uint32_t stream_id = 0;
};

class FrameScan {
public:
    // skip: octets before the first frame header (the client preface).
    explicit FrameScan(size_t skip) : skip_(skip) {}

    // Calls on_header(header) for each frame header complete in
    // data, in order; a header split across calls is reported once whole.
    template <typename F>
    void feed(const uint8_t* data, size_t len, F&& on_header) {
        while (len > 0) {
            if (skip_ > 0) {
                const size_t n = skip_ < len ? skip_ : len;
                skip_ -= n;
                data += n;
                len -= n;
                continue;
            }
            hdr_[have_++] = *data++;
            --len;
            if (have_ < sizeof hdr_) continue;
            have_ = 0;
            FrameHeader h;
            h.length = uint32_t{hdr_[0]} << 16 | uint32_t{hdr_[1]} << 8 | hdr_[2];
            h.type = hdr_[3];
            h.flags = hdr_[4];
            h.stream_id = (uint32_t{hdr_[5]} << 24 | uint32_t{hdr_[6]} << 16 | uint32_t{hdr_[7]} << 8 | hdr_[8]) &
                          0x7fffffffu;
            skip_ = h.length;
            on_header(h);
        }
    }

private:
    size_t skip_;
    uint8_t hdr_[9] = {};
    size_t have_ = 0;
};

}  // namespace gatehouse::http::v2
