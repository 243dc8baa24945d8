// Pipes for splice(): bytes that go from one socket to another through
// the kernel, never copied into user space [HAProxy's splicing].
//
// The proxy moves a plain HTTP/1 response body from the origin's socket
// into a pipe with splice(), and the client's writer moves it from the
// pipe to the client's socket with splice() again (ChainWriter). Between
// the two, the bytes are a "pipe piece" Buf (core/buf.h) that travels
// down the response path like any other. On a 64 KiB answer this removes
// the two copies that took a third of the proxy's core (perf: the kernel's
// _copy_to_iter, _copy_from_iter and __check_object_size).
//
// A worker keeps its pipes in one table. `unsent` counts what a pipe
// holds: the filler adds what it put in, the writer takes off what it
// sent (sent()), so the filler knows without a syscall that the pipe is
// empty (it puts more in only then: a full pipe would make the socket
// splice block on it, which a nonblocking read cannot tell from an empty
// socket), and give() knows whether a pipe is fit to use again. A pipe
// that still holds bytes when given back belonged to a response cut
// short: it is closed, which drops them.
//
// Bounds: at most set_limit()'s pipes taken at once ("worker_pipes",
// 256 by default; two fds and up to the pipe's capacity, 64 KiB by
// default, of kernel memory each), and at most kMaxKept empty ones kept
// for the next response. Beyond that, take() says no and the caller reads
// into memory as it would without pipes.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>

#include "event/fwd.h"

namespace gatehouse::event {

struct Pipe {
    int rfd = -1;          // read end: what the pipe pieces name
    int wfd = -1;          // write end
    uint64_t unsent = 0;   // bytes in the pipe
};

namespace pipes {

inline constexpr size_t kDefaultLimit = 256;
inline constexpr size_t kMaxKept = 32;
// What a filler asks one splice() to move into an empty pipe: a pipe
// takes 16 pages by default, and asking for more than it can hold only
// makes the kernel stop at a full pipe.
inline constexpr size_t kPiece = 64 * 1024;

// Whether a failed splice() means this socket cannot splice at all (not
// an I/O error): the caller gives the pipe back and reads into memory.
inline bool refused(const IoResult& io) {
    return io.kind == IoResult::Error && (io.err == EINVAL || io.err == ENOSYS || io.err == EOPNOTSUPP);
}

// Pipes that may be taken at once; 0: none (no splicing).
void set_limit(size_t n);

// A pipe that holds nothing (nonblocking, close-on-exec), or null: the
// limit was reached or pipe2() failed (logged once per failure kind).
Pipe* take();
// Back to the table: kept when empty and there is room, else closed.
void give(Pipe* p);
// The writer sent `n` bytes out of the pipe whose read end is `rfd`.
void sent(int rfd, size_t n);
// Closes the kept pipes (a worker gone idle, or exiting).
void release_kept();

// For tests: pipes taken and not given back; pipes kept.
size_t in_use();
size_t kept();

}  // namespace pipes
}  // namespace gatehouse::event
