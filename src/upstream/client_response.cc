// The response side of the upstream client: the head (strictly parsed,
// interim responses skipped), the body with bounded memory (see client.h),
// and the tunnel after "101 Switching Protocols".
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "event/worker.h"
#include "upstream/client.h"

namespace gatehouse::upstream {

namespace {

// Reads per callback before letting other connections run.
constexpr int kReadsPerTurn = 32;

// The tunnel's half close, on either side.
void shut(event::Connection& c) { ::shutdown(c.fd(), SHUT_WR); }
void shut(event::Duplex& d) { d.shutdown_send(); }

}  // namespace

// ---- the head ---------------------------------------------------------------------------------

void Client::read_head() {
    const size_t cap = conf_.buffer_size;
    if (!head_buf_) head_buf_ = SlabRef::adopt(Slab::make(cap));
    if (!parser_) {
        http::Limits lim;
        lim.max_start_line = cap;
        lim.max_header_line = cap;
        lim.max_head = cap;
        parser_.emplace(lim, fields_.span());
    }
    char* data = head_buf_.get()->data();
    for (;;) {
        if (head_len_ == cap) {
            fail(Failure::InvalidHeader, 502, 0, "upstream sent too big header");
            return;
        }
        event::IoResult io = up_->recv({data + head_len_, cap - head_len_});
        if (io.kind == event::IoResult::Again) {
            if (request_done_) event::worker_loop().arm(up_->read_timer, conf_.read_timeout);
            return;
        }
        if (io.kind == event::IoResult::Eof) {
            fail(Failure::Error, 502, 0, "upstream prematurely closed connection");
            return;
        }
        if (io.kind == event::IoResult::Error) {
            fail(Failure::Error, 502, io.err, "recv() failed");
            return;
        }
        head_read_ = true;
        head_len_ += io.bytes;
        cur_try().bytes += io.bytes;
        // One read may hold a 1xx head, the final head and body bytes.
        for (;;) {
            http::ParseResult pr = parser_->parse({data + head_start_, head_len_ - head_start_});
            if (pr.state == http::ParseState::NeedMore) break;
            if (pr.state == http::ParseState::Error) {
                fail(Failure::InvalidHeader, 502, 0, pr.reason);
                return;
            }
            const http::StatusHead& h = parser_->head();
            size_t end = head_start_ + pr.consumed;
            if (h.status >= 100 && h.status < 200 && h.status != 101) {
                // An interim response: "100 Continue" is ours alone, others
                // ("103 Early Hints") the caller may pass on; the final one
                // follows. Move what is left to the front: the buffer
                // bounds the final head alone.
                if (h.status != 100) {
                    hooks_.on_interim(*this, h);
                    if (consumer_gone() || stopped_) return;
                }
                std::memmove(data, data + end, head_len_ - end);
                head_len_ -= end;
                head_start_ = 0;
                parser_->reset();
                continue;
            }
            event::worker_loop().cancel(up_->read_timer);
            process_head(end);
            return;
        }
    }
}

// The head buffer takes body bytes next: the fields are kept as copies,
// for the caller and for $upstream_http_*. The fields lie in the raw
// head, so one copy of it serves them all (a field's view moves with
// it); one the parser made elsewhere is copied alone.
void Client::record_fields(const http::StatusHead& h) {
    log_.headers.clear();
    log_.headers.reserve(h.headers.size());
    const char* base = raw_head_.data();
    const size_t len = raw_head_.size();
    char* copy = len ? static_cast<char*>(mem_->allocate(len, 1)) : nullptr;
    if (len) std::memcpy(copy, base, len);
    auto keep = [&](std::string_view s) -> std::string_view {
        if (s.empty()) return {};
        if (s.data() >= base && s.data() + s.size() <= base + len) return {copy + (s.data() - base), s.size()};
        char* p = static_cast<char*>(mem_->allocate(s.size(), 1));
        std::memcpy(p, s.data(), s.size());
        return {p, s.size()};
    };
    for (const http::HeaderField& f : h.headers) log_.headers.push_back({keep(f.name), keep(f.value)});
}

void Client::process_head(size_t consumed) {
    const http::StatusHead& h = parser_->head();
    status_ = h.status;
    cur_try().status = status_;
    cur_try().header_ms = elapsed();
    if (!fixed_ && peer_) picker_->header_received(peer_, event::worker_loop().now());  // least_time header
    raw_head_ = {head_buf_.get()->data() + head_start_, consumed - head_start_};
    record_fields(h);
    if (status_ == 101) {
        if (!out.upgrade) {
            fail(Failure::InvalidHeader, 502, 0, "upstream sent unexpected \"101 Switching Protocols\"");
            return;
        }
        if (hooks_.on_head(*this, h) != Hooks::Head::Tunnel) {
            cancel();
            return;
        }
        // What came after the head is the origin's first bytes of the new
        // protocol: the head buffer becomes the origin-to-client pipe.
        u2c_.buf = head_buf_;
        u2c_.pos = consumed;
        u2c_.len = head_len_;
        start_tunnel();
        return;
    }
    if (retry_on_status(status_)) return;

    // RFC 9112 6.3: no body after HEAD, 1xx, 204 and 304, whatever the
    // framing says; else chunked, a length, or until the origin closes.
    const bool no_body = out.head_method || status_ == 204 || status_ == 304 || status_ < 200;
    const http::Framing& fr = h.framing;
    if (no_body) {
        framing_ = Framing::None;
    } else if (fr.chunked) {
        framing_ = Framing::Chunked;
        dec_.emplace(http::ChunkedLimits{}, http::Peer::Upstream);
    } else if (fr.content_length) {
        framing_ = *fr.content_length ? Framing::Length : Framing::None;
        remaining_ = *fr.content_length;
    } else {
        framing_ = Framing::Close;
    }
    reusable_ = h.keep_alive() && h.version_minor >= 1 && out.may_keep && framing_ != Framing::Close;
    buffering_ = conf_.buffering;

    switch (hooks_.on_head(*this, h)) {
        case Hooks::Head::Body:
            if (consumer_gone()) return;
            start_body(consumed);
            return;
        case Hooks::Head::Tunnel:
        case Hooks::Head::Stop:
            // The caller answers otherwise; this origin connection is done
            // with (its unread body makes it unusable).
            end_try(false);
            cancel();
            return;
    }
}

// next_upstream http_NNN: another peer answers instead, when one may.
bool Client::retry_on_status(int status) {
    if (!may_retry(Failure::Status, status)) return false;
    // Only the codes the operator listed count against max_fails; 403 and
    // 404 never do [nginx].
    bool counted = status != 403 && status != 404;
    cur_try().response_ms = elapsed();
    end_try(counted);
    close_upstream();
    err_status_ = status;  // if no server is left after all
    connect();
    return true;
}

// ---- the body ---------------------------------------------------------------------------------

void Client::start_body(size_t consumed) {
    stage_ = Stage::Body;
    pool_max_ = buffering_ ? 1 + conf_.buffers_num : 1;
    temp_ok_ = buffering_ && conf_.max_temp_file_size > 0;
    pool_.reserve(pool_max_);
    // The head buffer becomes the pool's first slab (the pool must hold
    // the only reference of ours: a slab is free when the consumer has
    // none).
    raw_head_ = {};
    pool_.push_back({std::move(head_buf_), head_len_});
    pool_cur_ = 0;
    SlabRef& first = pool_[0].s;
    if (head_len_ > consumed) take(first.get()->data() + consumed, head_len_ - consumed, first);
    if (framing_ == Framing::None) origin_done_ = true;
    // nginx paces only a buffered body; the bytes that came with the head
    // count.
    rate_limited_ = buffering_ && conf_.limit_rate > 0 && !origin_done_;
    if (rate_limited_) {
        rate_start_ = event::worker_loop().now();
        rate_read_ = head_len_ - consumed;
        rate_timer_.cb = event::Callback::to<&Client::on_rate_timer>(this);
    }
    // Splicing, when the consumer takes pipe pieces: only for a body that
    // did not all come with the head (a small answer never costs a pipe),
    // framed so that its bytes go as they are (no chunks to decode), from
    // a plain socket.
    if (!origin_done_ && (framing_ == Framing::Length || framing_ == Framing::Close) && !up_->transport &&
        !rate_limited_ && hooks_.body_to_pipe(*this))
        pipe_ = event::pipes::take();
    if (out_.empty()) {
        // The head goes out now, not with the first body bytes.
        Buf f;
        f.flush = true;
        out_.push(std::move(f));
        push_out();
    } else if (origin_done_) {
        push_out();
    }
    // Else the body bytes that came with the head wait for what the reads
    // below bring at once: read_body() hands it all over together when the
    // socket is drained, so the client gets one write, not two (a 64 KiB
    // answer: head and body in one sendmsg) [nginx: postpone_output].
    if (consumer_gone() || truncated_ || stopped_) return;
    if (origin_done_) {
        body_complete();
        return;
    }
    read_body();
}

// Where the next read goes: *spill says the temp file (through spill_buf_).
bool Client::next_region(char** p, size_t* n, SlabRef** slab, bool* spill) {
    auto use_spill = [&]() {
        if (!spill_buf_) spill_buf_ = SlabRef::adopt(Slab::make(conf_.temp_file_write_size));
        *p = spill_buf_.get()->data();
        *n = std::min<uint64_t>(spill_buf_.get()->capacity(), conf_.max_temp_file_size - file_end_);
        *slab = &spill_buf_;
        *spill = true;
        return true;
    };
    // Data waiting in the file goes out first: new data follows it there.
    if (file_end_ > file_queued_) return spill_allowed(1) ? use_spill() : false;
    auto region = [&](size_t i) {
        PoolSlab& ps = pool_[i];
        pool_cur_ = i;
        *p = ps.s.get()->data() + ps.fill;
        *n = ps.s.get()->capacity() - ps.fill;
        *slab = &ps.s;
        *spill = false;
        return true;
    };
    PoolSlab& cur = pool_[pool_cur_];
    if (cur.fill < cur.s.get()->capacity()) return region(pool_cur_);
    // A slab nothing else holds (the consumer drops what it wrote) may be
    // filled again from its start.
    for (size_t i = 0; i < pool_.size(); ++i) {
        size_t k = (pool_cur_ + 1 + i) % pool_.size();
        if (pool_[k].s.get()->refs() == 1) {
            pool_[k].fill = 0;
            return region(k);
        }
    }
    if (pool_.size() < pool_max_) {
        pool_.push_back({SlabRef::adopt(Slab::make(conf_.buffers_size)), 0});
        return region(pool_.size() - 1);
    }
    return spill_allowed(1) ? use_spill() : false;
}

// Free pool space for the same read, after the region next_region() gave
// (pool_cur_; `have` bytes): free slabs already allocated, then new slabs
// for what the origin still announces (Content-Length), or one new slab
// when the length is unknown (as nginx allocates its buffers), within the
// pool's bound. One readv() then takes what a single 16k read would have
// left in the socket: a 64 KiB body is one read instead of four (strace:
// 8 -> 5 syscalls per proxied 64 KiB answer).
size_t Client::more_regions(Region* out, size_t max, size_t have) {
    size_t k = 0;
    const uint64_t want = framing_ == Framing::Length ? remaining_ : UINT64_MAX;
    for (size_t i = 0; i < pool_.size() && k < max && have < want; ++i) {
        if (i == pool_cur_ || pool_[i].s.get()->refs() != 1) continue;
        pool_[i].fill = 0;
        out[k++] = {pool_[i].s.get()->data(), pool_[i].s.get()->capacity(), i};
        have += out[k - 1].n;
    }
    while (k < max && have < want && pool_.size() < pool_max_) {
        pool_.push_back({SlabRef::adopt(Slab::make(conf_.buffers_size)), 0});
        out[k++] = {pool_.back().s.get()->data(), pool_.back().s.get()->capacity(), pool_.size() - 1};
        have += out[k - 1].n;
        if (want == UINT64_MAX) break;  // the length unknown: one
    }
    return k;
}

bool Client::spill_allowed(size_t n) const { return temp_ok_ && file_end_ + n <= conf_.max_temp_file_size; }

Status Client::spill(const char* data, size_t n) {
    if (tmp_fd_ < 0) {
        auto fd = hooks_.temp_file();
        if (!fd) return fd.error();
        tmp_fd_ = *fd;
    }
    while (n > 0) {
        ssize_t w = ::pwrite(tmp_fd_, data, n, static_cast<off_t>(file_end_));
        if (w < 0) {
            if (errno == EINTR) continue;
            int err = errno;
            return make_error("pwrite() to a temporary file failed (" + std::to_string(err) + ": " + strerror(err) +
                              ")");
        }
        data += w;
        n -= static_cast<size_t>(w);
        file_end_ += static_cast<uint64_t>(w);
    }
    return {};
}

// What the allowance lets the next read take: one second's worth up front,
// then `limit_rate` a second [nginx: the pipe's limit]. When it is spent,
// what was read goes to the consumer and a timer resumes reading once a
// buffer's worth (or a second's, if less) is allowed again, so that a low
// rate does not turn into a read per millisecond; the read timeout does
// not run meanwhile.
size_t Client::rate_allowance() {
    const uint64_t rate = conf_.limit_rate;
    const uint64_t ms = event::worker_loop().now() - rate_start_;
    const uint64_t allowed = rate + (rate / 1000) * ms + (rate % 1000) * ms / 1000;
    if (allowed > rate_read_) return static_cast<size_t>(std::min<uint64_t>(allowed - rate_read_, SIZE_MAX));
    const uint64_t want = rate_read_ - allowed + std::min<uint64_t>(rate, conf_.buffers_size);
    event::worker_loop().cancel(up_->read_timer);
    event::worker_loop().arm(rate_timer_, std::chrono::milliseconds(want * 1000 / rate + 1));
    return 0;
}

void Client::on_rate_timer() {
    log::Scope scope(hooks_.log_context());
    if (consumer_gone() || !up_ || stage_ != Stage::Body) return;
    if (!paused_) read_body();
}

// Reads as long as the origin has data and a buffer is free, collecting
// what it takes in out_: the consumer gets it in one on_body() (one
// writev) when the socket is drained, the buffers are all used, or the
// body ends.
void Client::read_body() {
    if (stage_ != Stage::Body || !up_ || paused_) return;
    for (int turn = 0; turn < kReadsPerTurn; ++turn) {
        if (origin_done_) {
            body_complete();  // out_ goes with the last buffer
            return;
        }
        // Through the pipe while it is empty (what waits in the file goes
        // first); else into memory, so that a slow client still frees the
        // origin as soon as without a pipe (proxy_buffering).
        if (pipe_ && pipe_->unsent == 0 && file_end_ == file_queued_) {
            Read next = splice_body();
            if (next == Read::More) continue;
            if (next == Read::Stop) return;
            // Memory: this socket cannot splice; the buffers take over.
        }
        size_t allow = SIZE_MAX;
        if (rate_limited_) {
            if (rate_timer_.armed()) return;
            allow = rate_allowance();
            if (allow == 0) {
                push_out();
                return;
            }
        }
        char* p = nullptr;
        size_t n = 0;
        SlabRef* slab = nullptr;
        bool spill = false;
        if (!next_region(&p, &n, &slab, &spill)) {
            if (!out_.empty()) {
                // Written at once, maybe: their buffers are free again.
                push_out();
                if (consumer_gone() || stopped_) return;
                continue;
            }
            // Every buffer is waiting for the consumer: downstream_drained
            // resumes.
            paused_ = true;
            event::worker_loop().cancel(up_->read_timer);
            return;
        }
        if (spill && !out_.empty()) {
            // The buffers are all taken: what they hold goes to the
            // consumer before anything goes to the file (which follows it
            // in order, and waits for the consumer to drain).
            push_out();
            if (consumer_gone() || stopped_) return;
            continue;
        }
        // A read into pool space may go on into more of it (more_regions());
        // not through a transport (TLS), which reads into one buffer.
        Region regions[1 + kGather];
        n = std::min(n, allow);
        regions[0] = {p, n, pool_cur_};
        size_t nr = 1;
        if (!spill && !origin_done_ && !up_->transport && !rate_limited_) nr += more_regions(regions + 1, kGather, n);
        iovec iov[1 + kGather];
        for (size_t i = 0; i < nr; ++i) iov[i] = {regions[i].p, regions[i].n};
        event::IoResult io = up_->readv({iov, nr});
        if (io.kind != event::IoResult::Ok) {
            read_ended(io, "recv() failed");
            return;
        }
        cur_try().bytes += io.bytes;
        rate_read_ += io.bytes;
        spilling_ = spill;
        if (spill) {
            take(p, io.bytes, *slab);
            if (truncated_) return;
            continue;
        }
        // The regions in order, each taken with its slab; the read ends
        // in the last one with bytes, where the next one goes on. (A
        // Content-Length body ends in the last region: more_regions()
        // stops at the length.)
        size_t left = io.bytes;
        for (size_t i = 0; i < nr && left > 0 && !truncated_; ++i) {
            const Region& g = regions[i];
            size_t got = std::min(left, g.n);
            left -= got;
            pool_cur_ = g.slab;
            pool_[g.slab].fill += got;
            take(g.p, got, pool_[g.slab].s);
        }
        if (truncated_) return;
    }
    push_out();
    if (consumer_gone() || stopped_) return;
    if (hooks_.downstream_pending() == 0) queue_file_piece();
    // Let other connections run; the socket may still hold data (its
    // readiness flag is still set), so come back without waiting for epoll.
    yield_to(&Client::read_body);
}

// A read that brought nothing: wait for the socket, or the body's end.
void Client::read_ended(const event::IoResult& io, const char* call) {
    if (io.kind == event::IoResult::Again) {
        ack_now();
        push_out();
        if (consumer_gone() || stopped_) return;
        if (hooks_.downstream_pending() == 0) queue_file_piece();
        if (!up_) return;
        event::worker_loop().arm(up_->read_timer, conf_.read_timeout);
        return;
    }
    if (io.kind == event::IoResult::Eof) {
        if (framing_ == Framing::Close) {
            origin_done_ = true;
            reusable_ = false;
            body_complete();
            return;
        }
        body_truncated(0, "upstream prematurely closed connection");
        return;
    }
    body_truncated(io.err, call);
}

// One splice() from the origin into the empty pipe, handed on at once as
// a pipe piece behind whatever out_ holds, so that the pipe empties
// while the next one waits: More. The body's last piece stays in out_
// for the last buffer (body_complete()). Memory: splice() is refused (a
// socket that cannot splice): the pipe is dropped and the buffers go on.
Client::Read Client::splice_body() {
    const size_t want =
        framing_ == Framing::Length ? std::min<uint64_t>(remaining_, event::pipes::kPiece) : event::pipes::kPiece;
    event::IoResult io = up_->splice_in(pipe_->wfd, want);
    if (event::pipes::refused(io)) {
        event::pipes::give(std::exchange(pipe_, nullptr));
        return Read::Memory;
    }
    if (io.kind != event::IoResult::Ok) {
        read_ended(io, "splice() failed");
        return Read::Stop;
    }
    cur_try().bytes += io.bytes;
    cur_try().body += io.bytes;
    pipe_->unsent += io.bytes;
    out_.push(Buf::pipe_piece(pipe_->rfd, io.bytes));
    if (framing_ == Framing::Length) {
        remaining_ -= io.bytes;
        if (remaining_ == 0) {
            origin_done_ = true;
            return Read::More;
        }
    }
    push_out();
    if (consumer_gone() || stopped_) return Read::Stop;
    return Read::More;
}

// The body is not all here and the socket is drained: acknowledge what
// came at once rather than after the delayed-ACK timer (40 ms). An origin
// that sent part of a response in a segment shorter than the MSS may hold
// the rest back until that segment is acknowledged (Nagle, in Minshall's
// form: nginx with sendfile and tcp_nopush leaves the last page of a file
// so), and a receiver that has just sent the request is in the kernel's
// "pingpong" mode, which delays ACKs. Measured here (wrk -c64, 64 KiB
// through a keep-alive upstream served so): p99 from 2.5-35 ms, varying
// from run to run, to about 2 ms. One setsockopt() per wait in a body;
// none for a response read whole.
void Client::ack_now() {
    const sa_family_t f = up_->peer.ss_family;
    if (f != AF_INET && f != AF_INET6) return;
    int one = 1;
    ::setsockopt(up_->fd(), IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
}

// Body bytes as they came from the origin: the framing taken off.
void Client::take(const char* data, size_t n, SlabRef& slab) {
    switch (framing_) {
        case Framing::Length: {
            size_t use = static_cast<size_t>(std::min<uint64_t>(n, remaining_));
            if (use) emit(data, use, slab);
            remaining_ -= use;
            if (use < n) {
                error_log(log::Level::Warn, 0, "upstream sent more data than specified in \"Content-Length\" header",
                          action());
                reusable_ = false;
            }
            if (remaining_ == 0) origin_done_ = true;
            return;
        }
        case Framing::Chunked:
            while (n > 0 && !origin_done_) {
                http::ChunkResult cr = dec_->decode({data, n});
                if (!cr.data.empty()) emit(cr.data.data(), cr.data.size(), slab);
                if (!cr.trailer.empty()) trailers_.append(cr.trailer);
                if (cr.state == http::ChunkState::Error) {
                    body_truncated(0, "upstream sent invalid chunked response");
                    return;
                }
                data += cr.consumed;
                n -= cr.consumed;
                if (cr.state == http::ChunkState::Done) origin_done_ = true;
                else if (cr.consumed == 0) break;
            }
            if (origin_done_ && n > 0) reusable_ = false;
            return;
        case Framing::Close: emit(data, n, slab); return;
        case Framing::None:
            if (n > 0) reusable_ = false;
            return;
    }
}

void Client::emit(const char* data, size_t n, SlabRef& slab) {
    if (truncated_) return;
    cur_try().body += n;
    if (spilling_) {
        if (Status s = spill(data, n); !s) {
            error_log(log::Level::Crit, 0, s.message(), action());
            body_truncated(0, "cannot buffer the response");
        }
        return;
    }
    Buf b;
    b.pos = data;
    b.last = data + n;
    b.slab = slab;
    out_.push(std::move(b));
}

void Client::push_out() {
    if (out_.empty() || stopped_) return;
    const bool last = out_.last();
    if (!hooks_.on_body(*this, out_)) {
        out_.clear();
        if (!last) {
            // The consumer wants no more: this connection is not reusable.
            end_try(false);
            cancel();
        }
        return;
    }
    out_.clear();
}

// Hands over the next piece of the temp file that is not handed over yet,
// at most kFilePiece: a writer holds what it read of a file range until
// its whole queue is out, so a range is never larger than that. False
// when the file has nothing left to hand over.
bool Client::queue_file_piece() {
    if (file_end_ == file_queued_ || stopped_) return false;
    uint64_t to = std::min<uint64_t>(file_end_, file_queued_ + kFilePiece);
    out_.push(Buf::file(tmp_fd_, static_cast<off_t>(file_queued_), static_cast<off_t>(to)));
    file_queued_ = to;
    push_out();
    return true;
}

void Client::body_complete() {
    if (stage_ != Stage::Body) return;
    // From here on_drained leaves the rest of the file to send_last.
    stage_ = Stage::Done;
    origin_done_ = true;
    end_try(false);
    release_upstream(reusable_ && request_done_);
    schedule(&Client::send_last);
}

// A step (or the tail of on_drained): the end of the body, once the file
// is all handed over.
void Client::send_last() {
    if (file_end_ > file_queued_) {
        // on_drained comes back here when this piece is out.
        if (hooks_.downstream_pending() == 0) queue_file_piece();
        return;
    }
    last_sent_ = true;
    Buf end;
    end.last_buf = true;
    out_.push(std::move(end));
    push_out();
}

// The origin failed after the head was taken. What arrived is still
// handed over, the file included; then the consumer is told.
void Client::body_truncated(int err, std::string_view what) {
    if (truncated_) return;
    truncated_ = true;
    origin_done_ = true;
    error_log(log::Level::Error, err, what, action());
    if (!log_.tries.empty()) cur_try().response_ms = elapsed();
    end_try(true);
    close_upstream();
    stage_ = Stage::Done;
    push_out();  // what came before the failure
    if (consumer_gone() || stopped_) return;
    if (hooks_.downstream_pending() == 0 && !queue_file_piece()) {
        stopped_ = true;
        hooks_.on_truncated(*this);
    }
    // Else on_drained() goes on with the file, then tells the consumer.
}

void Client::downstream_drained() {
    if (consumer_gone() || stopped_) return;
    on_drained();
}

void Client::on_drained() {
    if (hooks_.downstream_pending() != 0) return;
    if (stage_ == Stage::Upgrading) {
        begin_tunnel();
        return;
    }
    if (truncated_) {
        if (!queue_file_piece()) {
            stopped_ = true;
            hooks_.on_truncated(*this);
        }
        return;
    }
    if (stage_ == Stage::Done) {
        // The origin is done; the file still had pieces for the consumer.
        if (origin_done_ && !last_sent_ && step_ != &Client::send_last) send_last();
        return;
    }
    if (stage_ != Stage::Body) return;
    if (queue_file_piece()) {
        if (consumer_gone() || stopped_) return;
    } else if (file_end_ > 0) {
        // Every byte of the file went out: start it over, so that a long
        // stream to a slow consumer needs max_temp_file_size of disk, not
        // the whole response.
        if (::ftruncate(tmp_fd_, 0) == 0) file_end_ = file_queued_ = 0;
    }
    if (paused_ && !origin_done_) {
        paused_ = false;
        read_body();
    }
}

// ---- the tunnel ----------------------------------------------------------------------------------

void Client::start_tunnel() {
    stage_ = Stage::Upgrading;
    event::worker_loop().cancel(up_->write_timer);
    event::worker_loop().cancel(up_->read_timer);
    // The consumer must have passed on the whole 101 before the first
    // frame: downstream_drained() goes on, or at once when nothing waits.
    if (hooks_.downstream_pending() == 0) schedule(&Client::begin_tunnel);
}

void Client::begin_tunnel() {
    if (stage_ != Stage::Upgrading) return;
    stage_ = Stage::Tunnel;
    std::string_view leftover;
    client_ = &hooks_.open_tunnel(*this, {tunnel_ready, this}, &leftover);
    const size_t cap = std::max<size_t>(conf_.buffer_size, leftover.size());
    c2u_.buf = SlabRef::adopt(Slab::make(cap));
    if (!leftover.empty()) std::memcpy(c2u_.buf.get()->data(), leftover.data(), leftover.size());
    c2u_.pos = 0;
    c2u_.len = leftover.size();
    c2u_.splice = u2c_.splice = !up_->transport && client_->can_splice() && hooks_.tunnel_to_pipes(*this);
    event::worker_loop().arm(up_->read_timer, conf_.read_timeout);
    pump();
}

void Client::tunnel_ready(void* p) {
    auto* c = static_cast<Client*>(p);
    log::Scope scope(c->hooks_.log_context());
    if (c->stage_ == Stage::Tunnel) c->pump();
}

// Moves bytes both ways until both sides would block. An EOF is passed
// on as a half close once its direction is flushed; the tunnel ends when
// both directions are closed, on an error, or after read_timeout without
// traffic. With splicing, a direction whose buffer is empty moves its
// bytes through a kernel pipe instead, filled only when empty (as
// splice_body() does); without a pipe to take, through the buffer.
void Client::pump() {
    if (stage_ != Stage::Tunnel || !up_ || !client_) return;
    bool moved = false;
    auto run = [&](Pipe& pipe, auto& src, auto& dst, bool from_origin) -> bool {
        for (int turn = 0; turn < kReadsPerTurn; ++turn) {
            if (pipe.len > pipe.pos) {
                event::IoResult io = dst.send({pipe.buf.get()->data() + pipe.pos, pipe.len - pipe.pos});
                if (io.kind == event::IoResult::Again) return true;
                if (io.kind != event::IoResult::Ok) return false;
                pipe.pos += io.bytes;
                moved = true;
                continue;
            }
            pipe.pos = pipe.len = 0;
            if (pipe.kernel && pipe.kernel->unsent > 0) {
                event::IoResult io = dst.splice_out(pipe.kernel->rfd, pipe.kernel->unsent);
                if (io.kind == event::IoResult::Again) return true;
                if (io.kind != event::IoResult::Ok) return false;
                pipe.kernel->unsent -= io.bytes;
                moved = true;
                continue;
            }
            if (pipe.eof) {
                if (!pipe.shut) {
                    shut(dst);
                    pipe.shut = true;
                }
                return true;
            }
            if (pipe.splice && !pipe.kernel && !(pipe.kernel = event::pipes::take())) pipe.splice = false;
            event::IoResult io = pipe.kernel ? src.splice_in(pipe.kernel->wfd, event::pipes::kPiece)
                                             : src.recv({pipe.buf.get()->data(), pipe.buf.get()->capacity()});
            if (io.kind == event::IoResult::Again) return true;
            if (io.kind == event::IoResult::Eof) {
                pipe.eof = true;
                continue;
            }
            if (pipe.kernel && event::pipes::refused(io)) {
                // A socket splice() does not take: this way goes through
                // the buffer.
                event::pipes::give(std::exchange(pipe.kernel, nullptr));
                pipe.splice = false;
                continue;
            }
            if (io.kind != event::IoResult::Ok) return false;
            if (from_origin) cur_try().bytes += io.bytes;
            if (pipe.kernel) pipe.kernel->unsent += io.bytes;
            else pipe.len = io.bytes;
            moved = true;
        }
        // More to move: come back after the other connections had a turn.
        yield_to(&Client::pump);
        return true;
    };
    if (!run(u2c_, *up_, *client_, true) || !run(c2u_, *client_, *up_, false)) {
        end_tunnel();
        return;
    }
    if (u2c_.shut && c2u_.shut) {
        end_tunnel();
        return;
    }
    if (moved) event::worker_loop().arm(up_->read_timer, conf_.read_timeout);
}

void Client::end_tunnel() {
    stage_ = Stage::Done;
    // What a pipe still holds is dropped with it (give() closes it).
    event::pipes::give(std::exchange(u2c_.kernel, nullptr));
    event::pipes::give(std::exchange(c2u_.kernel, nullptr));
    if (!log_.tries.empty()) cur_try().response_ms = elapsed();
    end_try(false);
    close_upstream();
    stopped_ = true;
    hooks_.on_tunnel_end(*this);
}

}  // namespace gatehouse::upstream
