#include "http/ocsp_reply.h"

#include "core/str.h"

namespace gatehouse::http {

namespace {

Limits limits(size_t max_head) {
    Limits l;
    l.max_start_line = 1024;
    l.max_header_line = 4096;
    l.max_head = max_head;
    return l;
}

}  // namespace

ResponderReply::ResponderReply(size_t max_head) : parser_(limits(max_head), fields_.span()) {}

ResponderReply::State ResponderReply::feed(std::string_view buffered, bool eof) {
    if (state_ != State::NeedMore) return state_;
    auto fail = [&](std::string why) {
        error_ = std::move(why);
        return state_ = State::Error;
    };
    if (body_start_ == 0) {
        ParseResult r = parser_.parse(buffered);
        if (r.state == ParseState::Error)
            return fail("OCSP responder sent invalid response (" + std::string(r.reason) + ")");
        if (r.state == ParseState::NeedMore)
            return eof ? fail("OCSP responder prematurely closed connection") : state_;
        const StatusHead& h = parser_.head();
        if (h.status != 200) return fail("OCSP responder sent status " + std::to_string(h.status));
        const HeaderField* type = h.find("Content-Type");
        std::string_view t = type ? type->value : std::string_view();
        t = t.substr(0, t.find(';'));
        while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
        if (!iequals(t, "application/ocsp-response"))
            return fail("OCSP responder sent invalid \"Content-Type\" header: \"" +
                        std::string(type ? type->value : "") + "\"");
        // Chunked framing is for HTTP/1.1 recipients only (RFC 9112 7).
        if (h.framing.has_transfer_encoding) return fail("OCSP responder sent invalid response (chunked)");
        length_ = h.framing.content_length;
        body_start_ = r.consumed;
    }
    size_t have = buffered.size() - body_start_;
    if (length_) {
        if (have >= *length_) {
            body_ = buffered.substr(body_start_, static_cast<size_t>(*length_));
            return state_ = State::Done;
        }
        return eof ? fail("OCSP responder prematurely closed connection") : state_;
    }
    if (!eof) return state_;
    body_ = buffered.substr(body_start_);
    return state_ = State::Done;
}

}  // namespace gatehouse::http
