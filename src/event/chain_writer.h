// Writes a queue of Bufs to a Connection, in order: memory with writev(),
// file ranges with sendfile() when allowed (a plain socket and "sendfile
// on"), else read into memory first; pipe pieces (event/pipe.h) with
// splice() on a plain socket, else read into memory first. One writer serves both directions of
// the proxy: responses to clients and requests (with bodies) to origins.
//
// A file range read into memory is queued in its place as a memory Buf
// until written: a TLS write that must be retried (SSL_write after
// WANT_WRITE) is given the very same bytes again.
//
// Memory: the queue is a BufVec (two Bufs in place, then the owner's
// memory resource, a request arena); written Bufs are dropped as the
// queue advances, so a long stream holds only what is not yet written.
#pragma once

#include <cstdint>
#include <memory_resource>
#include <vector>

#include "core/buf.h"
#include "event/fwd.h"

namespace gatehouse::event {

class ChainWriter {
public:
    explicit ChainWriter(std::pmr::memory_resource* mem) : q_(mem) {}
    ChainWriter(const ChainWriter&) = delete;
    ChainWriter& operator=(const ChainWriter&) = delete;

    // Moves c's non-empty Bufs to the end of the queue.
    void push(Chain& c);
    void push(Buf b);
    bool empty() const { return head_ == q_.size(); }
    // Bytes not yet written.
    uint64_t pending() const;
    void clear();

    struct Result {
        enum Kind : uint8_t {
            Done,   // everything was written
            Again,  // the socket is full: wait for writability
            Yield,  // Limits::sendfile_max_chunk was sent: go on from the
                    // loop (a posted event), the socket is still writable
            Error,  // the connection failed, or a file: see below
        };
        Kind kind = Done;
        uint64_t bytes = 0;        // written to the connection by this call
        int err = 0;               // errno; 0 with Error: a file was shorter than its range
        const char* call = "";     // "writev()", "sendfile()", "pread()", "splice()", "read()"
    };
    // How files go out ("sendfile_max_chunk", "output_buffers").
    struct Limits {
        uint64_t sendfile_max_chunk = 0;  // per call; 0: no limit
        size_t file_piece = 32768;        // read into memory at a time
    };
    // Writes until the queue is empty or the connection would block.
    // `use_sendfile`: file ranges may go with sendfile() (never through a
    // transport such as TLS, whatever this says).
    Result write(Connection& c, bool use_sendfile, const Limits& limits);
    Result write(Connection& c, bool use_sendfile) { return write(c, use_sendfile, Limits{}); }

private:
    void drop_written();

    BufVec q_;
    size_t head_ = 0;  // first unwritten Buf
};

}  // namespace gatehouse::event
