// The response side of a proxied exchange: the head (strictly parsed,
// filtered, Location rewritten), the body streamed to the client with
// bounded memory, and the tunnel after "101 Switching Protocols".
//
// Response body memory: a pool of at most 1 + proxy_buffers slabs (the
// head buffer of proxy_buffer_size first). A read goes into the tail of
// the current slab, or into a slab the writer no longer holds (only our
// reference left, or nothing queued for the client at all), or into a new
// one while the pool is not full. When every slab is held by the writer
// (the client is slower than the origin), reads go to a temp file instead
// (proxy_buffering on, up to proxy_max_temp_file_size), or stop until the
// client drains its queue. Data written to the file is queued to the
// client as one file range each time the client's queue empties, so the
// order of the stream never changes; once all of the file has been sent
// it is emptied and reused.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/log.h"
#include "core/str.h"
#include "event/worker.h"
#include "http/body.h"
#include "http/output.h"
#include "http/conditional.h"
#include "http/core_module.h"
#include "http/modules/proxy_exchange.h"
#include "http/phases.h"
#include "http/static_module.h"

namespace gatehouse::http::proxy {


namespace {

bool listed(const std::vector<std::string>* names, std::string_view name) {
    if (!names) return false;
    for (const std::string& n : *names)
        if (iequals(n, name)) return true;
    return false;
}

// Reads per callback before letting other connections run.
constexpr int kReadsPerTurn = 32;

// The tunnel's half close, on either side.
void shut(event::Connection& c) { ::shutdown(c.fd(), SHUT_WR); }
void shut(Duplex& d) { d.shutdown_send(); }

}  // namespace

// ---- the head ---------------------------------------------------------------------------------

void Exchange::read_head() {
    const size_t cap = *pc_.buffer_size;
    if (!head_buf_) head_buf_ = SlabRef::adopt(Slab::make(cap));
    if (!parser_) {
        Limits lim;
        lim.max_start_line = cap;
        lim.max_header_line = cap;
        lim.max_head = cap;
        lim.max_headers = kMaxFields;
        parser_.emplace(lim, std::span<HeaderField>(fields_));
    }
    char* data = head_buf_.get()->data();
    for (;;) {
        if (head_len_ == cap) {
            fail(Failure::InvalidHeader, 502, 0, "upstream sent too big header");
            return;
        }
        event::IoResult io = up_->recv({data + head_len_, cap - head_len_});
        if (io.kind == event::IoResult::Again) {
            if (request_done_) event::worker_loop().arm(up_->read_timer, *pc_.read_timeout);
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
            ParseResult pr = parser_->parse({data + head_start_, head_len_ - head_start_});
            if (pr.state == ParseState::NeedMore) break;
            if (pr.state == ParseState::Error) {
                fail(Failure::InvalidHeader, 502, 0, pr.reason);
                return;
            }
            const StatusHead& h = parser_->head();
            size_t end = head_start_ + pr.consumed;
            if (h.status >= 100 && h.status < 200 && h.status != 101) {
                // An interim response ("100 Continue", "103 Early Hints") is
                // not forwarded; the final one follows. Move what is left to
                // the front: the buffer bounds the final head alone.
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

void Exchange::process_head(size_t consumed) {
    const StatusHead& h = parser_->head();
    status_ = h.status;
    cur_try().status = status_;
    cur_try().header_ms = elapsed();
    if (picker_ && peer_) picker_->header_received(peer_, event::worker_loop().now());  // least_time header
    if (status_ == 101) {
        if (!upgrade_sent_) {
            fail(Failure::InvalidHeader, 502, 0, "upstream sent unexpected \"101 Switching Protocols\"");
            return;
        }
        copy_headers(h);
        // What came after the head is the origin's first bytes of the new
        // protocol: the head buffer becomes the origin-to-client pipe.
        u2c_.buf = head_buf_;
        u2c_.pos = consumed;
        u2c_.len = head_len_;
        start_tunnel();
        return;
    }
    if (check_next_status(status_)) return;
    if (*pc_.intercept_errors && status_ >= 300) {
        const auto& lc = r_.loc_conf<LocConf>(http_core_module);
        for (const ErrorPage& ep : lc.error_pages)
            if (ep.status == status_) {
                // The origin's answer is dropped for the error_page
                // [nginx proxy_intercept_errors]; $upstream_http_* still
                // tell what it was.
                record_fields(h);
                end_try(false);
                close_upstream();
                err_status_ = status_;
                stage_ = Stage::Done;
                schedule(&Exchange::respond_error);
                return;
            }
    }
    copy_headers(h);
    start_body(consumed);
}

// proxy_next_upstream http_NNN: another peer answers instead, when one may.
bool Exchange::check_next_status(int status) {
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

// The fields of a proxy_redirect rewrite, and where in the value it starts
// (Refresh: after "url=").
std::string_view Exchange::rewrite_redirect(std::string_view value, size_t from) {
    if (pc_.redirect_off.value_or(false)) return value;
    std::string_view head = value.substr(0, from);
    std::string_view v = value.substr(from);
    auto with_head = [&](std::string_view s) -> std::string_view {
        if (head.empty()) return s;
        std::pmr::string t(head, r_.mem());
        t += s;
        return r_.arena().dup(t);
    };
    auto apply_default = [&]() -> std::optional<std::string_view> {
        // "proxy_redirect default": the proxy_pass URL (with "/" when it has
        // no URI) becomes the location's prefix ("/" without a URI).
        if (pass_.url_value) return std::nullopt;
        if (pass_.has_uri) return rewrite_prefix(r_.arena(), v, pass_.url, pass_.location);
        std::pmr::string from_url(pass_.url, r_.mem());
        from_url += '/';
        return rewrite_prefix(r_.arena(), v, from_url, "/");
    };
    if (!pc_.redirects) {
        if (auto s = apply_default()) return with_head(*s);
        return value;
    }
    for (const Redirect* rd : *pc_.redirects) {
        std::optional<std::string_view> s;
        switch (rd->kind) {
            case Redirect::Kind::Default: s = apply_default(); break;
            case Redirect::Kind::Literal:
                s = rewrite_prefix(r_.arena(), v, rd->redirect.eval(r_), rd->replacement.eval(r_));
                break;
            case Redirect::Kind::Regex: {
                std::string_view subject = r_.arena().dup(v);
                if (rd->regex->exec(r_, subject)) s = rd->replacement.eval(r_);
                break;
            }
        }
        if (s) return with_head(*s);
    }
    return value;
}

// The head buffer takes body bytes next: the fields are kept as copies,
// for the response and for $upstream_http_*.
void Exchange::record_fields(const StatusHead& h) {
    log_.headers.clear();
    log_.headers.reserve(h.headers.size());
    for (const HeaderField& f : h.headers) log_.headers.push_back({r_.arena().dup(f.name), r_.arena().dup(f.value)});
}

void Exchange::copy_headers(const StatusHead& h) {
    ResponseHead& out = r_.out;
    out.status = status_;
    if (!h.reason.empty()) out.reason = r_.arena().dup(h.reason);
    record_fields(h);
    // Fields the origin's Connection names are hop-by-hop (RFC 9110 7.6.1).
    auto named_by_connection = [&](std::string_view name) {
        for (const HeaderField& f : h.headers)
            if (iequals(f.name, "Connection") && connection_lists(f.value, name)) return true;
        return false;
    };
    bool accel_set = false;
    for (const Header& x : log_.headers) {
        if (iequals(x.name, "X-Accel-Buffering") && !(*pc_.ignore_headers & kIgnoreXAccelBuffering)) {
            if (iequals(x.value, "no")) buffering_ = false, accel_set = true;
            else if (iequals(x.value, "yes")) buffering_ = true, accel_set = true;
        }
        if (status_ == 101 && iequals(x.name, "Upgrade")) {
            out.headers.push_back(x);
            continue;
        }
        if (is_hop_by_hop_response(x.name) || named_by_connection(x.name)) continue;
        bool hidden = (is_hidden_by_default(x.name) || listed(pc_.hide_headers, x.name)) &&
                      !listed(pc_.pass_headers, x.name);
        if (hidden) continue;
        if (iequals(x.name, "Content-Type")) {
            out.content_type = x.value;
        } else if (iequals(x.name, "Location")) {
            out.location = rewrite_redirect(x.value, 0);
        } else if (iequals(x.name, "Refresh")) {
            size_t at = refresh_url_offset(x.value);
            out.headers.push_back({x.name, at == std::string_view::npos ? x.value : rewrite_redirect(x.value, at)});
        } else if (iequals(x.name, "ETag")) {
            out.etag = x.value;
        } else if (iequals(x.name, "Last-Modified") && parse_http_date(x.value) >= 0) {
            // As a field the writer formats: not_modified_filter compares it.
            out.last_modified = parse_http_date(x.value);
        } else {
            out.headers.push_back(x);
        }
    }
    if (!accel_set) buffering_ = *pc_.buffering;

    // RFC 9112 6.3: no body after HEAD, 1xx, 204 and 304, whatever the
    // framing says; else chunked, a length, or until the origin closes.
    bool no_body = head_method_ || status_ == 204 || status_ == 304 || status_ < 200;
    const Framing& fr = h.framing;
    if (no_body) {
        framing_ = BodyFraming::None;
    } else if (fr.chunked) {
        framing_ = BodyFraming::Chunked;
        dec_.emplace(ChunkedLimits{}, Peer::Upstream);
    } else if (fr.content_length) {
        framing_ = *fr.content_length ? BodyFraming::Length : BodyFraming::None;
        remaining_ = *fr.content_length;
    } else {
        framing_ = BodyFraming::Close;
    }
    if (!fr.chunked && fr.content_length && (status_ != 204 && status_ != 304)) out.content_length = *fr.content_length;
    reusable_ = h.keep_alive() && h.version_minor >= 1 && !close_sent_ && framing_ != BodyFraming::Close;
}

// ---- the body ---------------------------------------------------------------------------------

void Exchange::start_body(size_t consumed) {
    stage_ = Stage::Body;
    const uint64_t nbufs = *pc_.buffers_num;
    pool_max_ = buffering_ ? 1 + nbufs : 1;
    temp_ok_ = buffering_ && *pc_.max_temp_file_size > 0;
    max_temp_ = *pc_.max_temp_file_size;
    pool_.reserve(pool_max_);
    // The head buffer becomes the pool's first slab (the pool must hold
    // the only reference of ours: a slab is free when the writer has none).
    pool_.push_back({std::move(head_buf_), head_len_});
    pool_cur_ = 0;
    SlabRef& first = pool_[0].s;

    if (send_header(r_) == Flow::Fail) {
        close_upstream();
        r_.stream().abort();
        return;
    }
    if (client_gone()) return;
    on_output_drained(r_, drained_cb);
    if (head_len_ > consumed) take(first.get()->data() + consumed, head_len_ - consumed, first);
    if (framing_ == BodyFraming::None) origin_done_ = true;
    if (out_.empty()) flush_output(r_);  // the head goes out now, not with the first body bytes
    else push_out();
    if (client_gone() || truncated_) return;
    if (origin_done_) {
        body_complete();
        return;
    }
    read_response_body();
}

// Where the next read goes: *spill says the temp file (through spill_buf_).
bool Exchange::next_region(char** p, size_t* n, SlabRef** slab, bool* spill) {
    auto use_spill = [&]() {
        if (!spill_buf_) spill_buf_ = SlabRef::adopt(Slab::make(*pc_.temp_file_write_size));
        *p = spill_buf_.get()->data();
        *n = std::min<uint64_t>(spill_buf_.get()->capacity(), max_temp_ - file_end_);
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
    // A slab nothing else holds (the writer drops what it sent) may be
    // filled again from its start.
    for (size_t i = 0; i < pool_.size(); ++i) {
        size_t k = (pool_cur_ + 1 + i) % pool_.size();
        if (pool_[k].s.get()->refs() == 1) {
            pool_[k].fill = 0;
            return region(k);
        }
    }
    if (pool_.size() < pool_max_) {
        pool_.push_back({SlabRef::adopt(Slab::make(*pc_.buffers_size)), 0});
        return region(pool_.size() - 1);
    }
    return spill_allowed(1) ? use_spill() : false;
}

bool Exchange::spill_allowed(size_t n) const { return temp_ok_ && file_end_ + n <= max_temp_; }

Status Exchange::spill(const char* data, size_t n) {
    if (tmp_fd_ < 0) {
        auto fd = open_temp_file(temp_dir(r_, pc_.temp_path, "proxy_temp"));
        if (!fd) return fd.error();
        tmp_fd_ = *fd;
        r_.use_sendfile = sendfile_enabled(r_);
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

// Reads as long as the origin has data and a buffer is free, collecting
// what it takes in out_: the client gets it in one send_body() (one
// writev) when the socket is drained, the buffers are all used, or the
// body ends.
void Exchange::read_response_body() {
    if (stage_ != Stage::Body || !up_ || paused_) return;
    for (int turn = 0; turn < kReadsPerTurn; ++turn) {
        if (origin_done_) {
            body_complete();  // out_ goes with the last buffer
            return;
        }
        char* p = nullptr;
        size_t n = 0;
        SlabRef* slab = nullptr;
        bool spill = false;
        if (!next_region(&p, &n, &slab, &spill)) {
            if (!out_.empty()) {
                // Written at once, maybe: their buffers are free again.
                push_out();
                if (client_gone()) return;
                continue;
            }
            // Every buffer is waiting for the client: on_drained resumes.
            paused_ = true;
            event::worker_loop().cancel(up_->read_timer);
            return;
        }
        event::IoResult io = up_->recv({p, n});
        if (io.kind == event::IoResult::Again) {
            push_out();
            if (client_gone()) return;
            if (output_pending(r_) == 0) queue_file_piece();
            event::worker_loop().arm(up_->read_timer, *pc_.read_timeout);
            return;
        }
        if (io.kind == event::IoResult::Eof) {
            if (framing_ == BodyFraming::Close) {
                origin_done_ = true;
                reusable_ = false;
                body_complete();
                return;
            }
            body_truncated(0, "upstream prematurely closed connection");
            return;
        }
        if (io.kind == event::IoResult::Error) {
            body_truncated(io.err, "recv() failed");
            return;
        }
        cur_try().bytes += io.bytes;
        spilling_ = spill;
        if (!spill) pool_[pool_cur_].fill += io.bytes;
        take(p, io.bytes, *slab);
        if (truncated_) return;
    }
    push_out();
    if (client_gone()) return;
    if (output_pending(r_) == 0) queue_file_piece();
    // Let other connections run; the socket may still hold data (its
    // readiness flag is still set), so come back without waiting for epoll.
    schedule(&Exchange::read_response_body);
}

// Body bytes as they came from the origin: the framing taken off.
void Exchange::take(const char* data, size_t n, SlabRef& slab) {
    switch (framing_) {
        case BodyFraming::Length: {
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
        case BodyFraming::Chunked:
            while (n > 0 && !origin_done_) {
                ChunkResult cr = dec_->decode({data, n});
                if (!cr.data.empty()) emit(cr.data.data(), cr.data.size(), slab);
                if (cr.state == ChunkState::Error) {
                    body_truncated(0, "upstream sent invalid chunked response");
                    return;
                }
                data += cr.consumed;
                n -= cr.consumed;
                if (cr.state == ChunkState::Done) origin_done_ = true;
                else if (cr.consumed == 0) break;
            }
            if (origin_done_ && n > 0) reusable_ = false;
            return;
        case BodyFraming::Close: emit(data, n, slab); return;
        case BodyFraming::None:
            if (n > 0) reusable_ = false;
            return;
    }
}

void Exchange::emit(const char* data, size_t n, SlabRef& slab) {
    if (truncated_) return;
    if (spilling_) {
        if (Status s = spill(data, n); !s) {
            GH_LOG(Crit, "%s, client: %s", s.message().c_str(), std::string(r_.remote_addr).c_str());
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

void Exchange::push_out() {
    if (out_.empty()) return;
    if (send_body(r_, out_) == Flow::Fail) r_.stream().abort();
    out_.clear();
}

// Queues the next piece of the temp file that is not queued yet, at most
// kFilePiece: the writer holds what it read of a file range until its
// whole queue is out, so a range is never larger than that. False when
// the file has nothing left to queue.
bool Exchange::queue_file_piece() {
    if (file_end_ == file_queued_) return false;
    uint64_t to = std::min<uint64_t>(file_end_, file_queued_ + kFilePiece);
    out_.push(Buf::file(tmp_fd_, static_cast<off_t>(file_queued_), static_cast<off_t>(to)));
    file_queued_ = to;
    push_out();
    return true;
}

void Exchange::body_complete() {
    if (stage_ != Stage::Body) return;
    // From here on_drained leaves the rest of the file to send_last.
    stage_ = Stage::Done;
    origin_done_ = true;
    end_try(false);
    release_upstream(reusable_ && request_done_);
    schedule(&Exchange::send_last);
}

// A step (or the tail of on_drained): the end of the body, once the file
// is all queued.
void Exchange::send_last() {
    if (file_end_ > file_queued_) {
        // on_drained comes back here when this piece is out.
        if (output_pending(r_) == 0) queue_file_piece();
        return;
    }
    on_output_drained(r_, nullptr);
    last_sent_ = true;
    Buf end;
    end.last_buf = true;
    out_.push(std::move(end));
    // May end the request, and this object with it: nothing after.
    send_body(r_, out_);
}

// The origin failed after the head went to the client. What arrived is
// still delivered; then the client connection closes without the body's
// proper end (no last chunk, fewer bytes than Content-Length), so the
// client cannot take it for complete.
void Exchange::body_truncated(int err, std::string_view what) {
    if (truncated_) return;
    truncated_ = true;
    origin_done_ = true;
    error_log(log::Level::Error, err, what, action());
    if (!log_.tries.empty()) cur_try().response_ms = elapsed();
    end_try(true);
    close_upstream();
    stage_ = Stage::Done;
    push_out();  // what came before the failure
    if (r_.stream().closed()) return;
    if (output_pending(r_) == 0 && !queue_file_piece()) {
        on_output_drained(r_, nullptr);
        r_.stream().abort();
    }
    // Else on_drained() goes on with the file, then aborts.
}

void Exchange::drained_cb(Request& r) {
    // Called from inside the writer: continue from the loop instead.
    if (auto* ex = r.ctx<Exchange>(proxy_module)) event::worker_loop().post(ex->drain_ev_);
}

void Exchange::on_drain_event() {
    if (client_gone()) return;
    on_drained();
}

void Exchange::on_drained() {
    if (output_pending(r_) != 0) return;
    if (stage_ == Stage::Upgrading) {
        begin_tunnel();
        return;
    }
    if (truncated_) {
        if (!queue_file_piece()) {
            on_output_drained(r_, nullptr);
            r_.stream().abort();
        }
        return;
    }
    if (stage_ == Stage::Done) {
        // The origin is done; the file still had pieces for the client.
        if (origin_done_ && !last_sent_ && step_ != &Exchange::send_last) send_last();  // may end the request
        return;
    }
    if (stage_ != Stage::Body) return;
    if (queue_file_piece()) {
        if (client_gone()) return;
    } else if (file_end_ > 0) {
        // Every byte of the file went out: start it over, so that a long
        // stream to a slow client needs proxy_max_temp_file_size of disk,
        // not the whole response.
        if (::ftruncate(tmp_fd_, 0) == 0) file_end_ = file_queued_ = 0;
    }
    if (paused_ && !origin_done_) {
        paused_ = false;
        read_response_body();
    }
}

// ---- the tunnel ----------------------------------------------------------------------------------

void Exchange::start_tunnel() {
    stage_ = Stage::Upgrading;
    r_.out.content_length.reset();
    event::worker_loop().cancel(up_->write_timer);
    event::worker_loop().cancel(up_->read_timer);
    if (send_header(r_) == Flow::Fail) {
        close_upstream();
        r_.stream().abort();
        return;
    }
    flush_output(r_);
    if (client_gone()) return;
    // The client must have the whole 101 before the first frame.
    if (output_pending(r_) == 0) {
        schedule(&Exchange::begin_tunnel);
        return;
    }
    on_output_drained(r_, drained_cb);
}

void Exchange::begin_tunnel() {
    if (stage_ != Stage::Upgrading) return;
    on_output_drained(r_, nullptr);
    stage_ = Stage::Tunnel;
    std::string_view leftover;
    client_ = &r_.stream().open_tunnel({tunnel_client_ready, this}, &leftover);
    const size_t cap = std::max<size_t>(*pc_.buffer_size, leftover.size());
    c2u_.buf = SlabRef::adopt(Slab::make(cap));
    if (!leftover.empty()) std::memcpy(c2u_.buf.get()->data(), leftover.data(), leftover.size());
    c2u_.pos = 0;
    c2u_.len = leftover.size();
    event::worker_loop().arm(up_->read_timer, *pc_.read_timeout);
    pump();
}

void Exchange::tunnel_client_ready(void* p) {
    auto* ex = static_cast<Exchange*>(p);
    if (ex->stage_ == Stage::Tunnel) ex->pump();
}

// Moves bytes both ways until both sides would block. An EOF is passed
// on as a half close (shutdown SHUT_WR) once its direction is flushed; the
// tunnel ends when both directions are closed, on an error, or after
// proxy_read_timeout without traffic.
void Exchange::pump() {
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
            if (pipe.eof) {
                if (!pipe.shut) {
                    shut(dst);
                    pipe.shut = true;
                }
                return true;
            }
            event::IoResult io = src.recv({pipe.buf.get()->data(), pipe.buf.get()->capacity()});
            if (io.kind == event::IoResult::Again) return true;
            if (io.kind == event::IoResult::Eof) {
                pipe.eof = true;
                continue;
            }
            if (io.kind != event::IoResult::Ok) return false;
            if (from_origin) cur_try().bytes += io.bytes;
            pipe.len = io.bytes;
            moved = true;
        }
        // More to move: come back after the other connections had a turn.
        schedule(&Exchange::pump);
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
    if (moved) event::worker_loop().arm(up_->read_timer, *pc_.read_timeout);
}

void Exchange::end_tunnel() {
    stage_ = Stage::Done;
    if (!log_.tries.empty()) cur_try().response_ms = elapsed();
    end_try(false);
    close_upstream();
    // Ends the request: the connection and this object go at the end of
    // the loop iteration.
    client_->close();
}

}  // namespace gatehouse::http::proxy
