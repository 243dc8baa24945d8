#include "event/chain_writer.h"

#include <sys/sendfile.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <iterator>

#include "event/connection.h"
#include "event/pipe.h"

namespace gatehouse::event {

void ChainWriter::push(Chain& c) {
    for (Buf& b : c)
        if (!b.empty()) q_.push_back(std::move(b));
    c.clear();
}

void ChainWriter::push(Buf b) {
    if (!b.empty()) q_.push_back(std::move(b));
}

uint64_t ChainWriter::pending() const {
    uint64_t n = 0;
    for (size_t i = head_; i < q_.size(); ++i) n += q_[i].size();
    return n;
}

void ChainWriter::clear() {
    q_.clear();
    head_ = 0;
}

namespace {

// A socket write that could not go on: what the caller is told.
bool stopped(const IoResult& io, const char* call, ChainWriter::Result& res) {
    if (io.kind == IoResult::Again) {
        res.kind = ChainWriter::Result::Again;
        return true;
    }
    if (io.kind == IoResult::Error) {
        res.kind = ChainWriter::Result::Error;
        res.err = io.err;
        res.call = call;
        return true;
    }
    return false;
}

}  // namespace

// Written Bufs release their slabs now, and the vector does not grow with
// the length of a stream that never quite drains.
void ChainWriter::drop_written() {
    if (head_ == q_.size()) {
        clear();
        return;
    }
    if (head_ >= 16 && head_ * 2 >= q_.size()) {
        q_.erase_front(head_);
        head_ = 0;
    }
}

ChainWriter::Result ChainWriter::write(Connection& c, bool use_sendfile, const Limits& limits) {
    Result res;
    const bool direct = use_sendfile && c.transport == nullptr;
    uint64_t sent_by_sendfile = 0;
    while (head_ < q_.size()) {
        Buf& b = q_[head_];
        if (b.pipe && c.transport == nullptr) {
            // A pipe piece: socket to socket without a copy, whatever
            // "sendfile" says (it is about files). Only what is queued
            // behind it may hold its tail back (MSG_MORE): bytes yet to
            // come from the origin could be long in coming.
            const bool more = head_ + 1 < q_.size();
            IoResult io = c.splice_out(b.fd, b.size(), more);
            if (stopped(io, "splice()", res)) break;
            res.bytes += io.bytes;
            pipes::sent(b.fd, io.bytes);
            b.file_pos += static_cast<off_t>(io.bytes);
            if (b.file_pos == b.file_last) ++head_;
            continue;
        }
        if (b.in_file() && !direct) {
            // Through memory: a piece in front of the rest of the range
            // (with "sendfile off" or over TLS; "output_buffers" sizes it).
            size_t want = std::min<size_t>(b.size(), std::max<size_t>(limits.file_piece, 1));
            // A pipe piece through TLS: read from the pipe, which holds at
            // least `want` bytes, so a read never waits.
            SlabRef slab = SlabRef::adopt(Slab::make(want));
            ssize_t n = b.pipe ? ::read(b.fd, slab.get()->data(), want)
                               : ::pread(b.fd, slab.get()->data(), want, b.file_pos);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                res.kind = Result::Error;
                res.err = n < 0 ? errno : 0;
                res.call = b.pipe ? "read()" : "pread()";
                break;
            }
            if (b.pipe) pipes::sent(b.fd, static_cast<size_t>(n));
            Buf m = Buf::in_slab(std::move(slab), static_cast<size_t>(n));
            b.file_pos += n;
            if (b.file_pos == b.file_last)
                q_[head_] = std::move(m);
            else
                q_.insert(q_.begin() + head_, std::move(m));
            continue;
        }
        if (b.in_file()) {
            if (limits.sendfile_max_chunk && sent_by_sendfile >= limits.sendfile_max_chunk) {
                // One fast client must not keep the worker to itself
                // ("sendfile_max_chunk"): the rest from the loop.
                res.kind = Result::Yield;
                break;
            }
            size_t cap = 1u << 30;
            if (limits.sendfile_max_chunk)
                cap = static_cast<size_t>(std::min<uint64_t>(cap, limits.sendfile_max_chunk - sent_by_sendfile));
            off_t off = b.file_pos;
            ssize_t n = ::sendfile(c.fd(), b.fd, &off, std::min<size_t>(b.size(), cap));
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && errno == EAGAIN) {
                c.io.clear_writable();
                res.kind = Result::Again;
                break;
            }
            if (n <= 0) {
                // n == 0: the file shrank under us, the range cannot be sent.
                res.kind = Result::Error;
                res.err = n < 0 ? errno : 0;
                res.call = "sendfile()";
                break;
            }
            res.bytes += static_cast<uint64_t>(n);
            sent_by_sendfile += static_cast<uint64_t>(n);
            b.file_pos += n;
            if (b.file_pos == b.file_last) ++head_;
            continue;
        }
        iovec iov[64];
        size_t cnt = 0;
        size_t i = head_;
        for (; i < q_.size() && cnt < std::size(iov); ++i) {
            Buf& m = q_[i];
            if (m.in_file()) break;
            iov[cnt].iov_base = const_cast<char*>(m.pos);
            iov[cnt].iov_len = m.size();
            ++cnt;
        }
        // A head before a pipe piece: they leave in one segment.
        IoResult io = c.writev({iov, cnt}, i < q_.size() && q_[i].pipe);
        if (stopped(io, "writev()", res)) break;
        res.bytes += io.bytes;
        size_t sent = io.bytes;
        while (sent > 0) {
            Buf& m = q_[head_];
            size_t take = std::min(sent, m.size());
            m.pos += take;
            sent -= take;
            if (m.pos == m.last) ++head_;
        }
    }
    drop_written();
    return res;
}

}  // namespace gatehouse::event
