#include "http/v2/request_head.h"

#include <cstring>

#include "core/str.h"

namespace gatehouse::http::v2 {

RequestHeadBuilder::RequestHeadBuilder(std::pmr::memory_resource* mem, size_t max_bytes, size_t max_fields)
    : mem_(mem), max_bytes_(max_bytes), max_fields_(max_fields), fields_(mem), cookies_(mem) {}

std::string_view RequestHeadBuilder::copy(std::string_view s) {
    if (s.empty()) return {};
    char* p = static_cast<char*>(mem_->allocate(s.size(), 1));
    std::memcpy(p, s.data(), s.size());
    return {p, s.size()};
}

bool RequestHeadBuilder::count(std::string_view name, std::string_view value) {
    if (too_large_) return false;
    // RFC 9113 6.5.2: the size of a header list counts 32 octets of
    // overhead per field, so empty fields are not free either.
    bytes_ += name.size() + value.size() + 32;
    const bool pseudo = !name.empty() && name[0] == ':';
    if (!pseudo && fields_.size() + cookies_.size() >= max_fields_) too_many_ = true;
    if (bytes_ > max_bytes_ || too_many_ || name.size() > max_field_ || value.size() > max_field_) {
        too_large_ = true;
        return false;
    }
    return true;
}

bool RequestHeadBuilder::add(std::string_view name, std::string_view value) {
    if (!count(name, value)) return false;
    if (!name.empty() && name[0] == ':') {
        // nghttp2 has checked that each appears once, before the others.
        if (name == ":method") method_ = copy(value);
        else if (name == ":scheme") scheme_ = copy(value);
        else if (name == ":authority") authority_ = copy(value);
        else if (name == ":path") path_ = copy(value);
        else if (name == ":protocol") protocol_ = copy(value);
        return true;
    }
    // A token with '_' is a valid name for nghttp2, not for nginx unless
    // underscores_in_headers says so (the HTTP/1 parser's rule too).
    if (!underscores_ && ignore_invalid_ && name.find('_') != std::string_view::npos) return true;
    return keep(name, value);
}

bool RequestHeadBuilder::add_unchecked(std::string_view name, std::string_view value) {
    if (!count(name, value)) return false;
    bool plain = !name.empty();
    for (unsigned char c : name) {
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || (c == '_' && underscores_)) continue;
        // What an HTTP/1 field line could not carry either (RFC 9113
        // 8.2.1 asks to treat it as malformed) [nginx: 400].
        if (c <= 0x20 || c == 0x7f || c == ':' || (c >= 'A' && c <= 'Z')) {
            if (bad_.empty()) bad_ = "client sent invalid header name";
            return true;
        }
        plain = false;
    }
    // RFC 9113 8.2.1: NUL, CR and LF split a field when it is passed on
    // in HTTP/1 (an intermediary encapsulation attack, RFC 9113 10.3).
    if (value.find_first_of(std::string_view("\0\r\n", 3)) != std::string_view::npos) {
        if (bad_.empty()) bad_ = "client sent header with invalid value";
        return true;
    }
    if (!plain && ignore_invalid_) return true;
    return keep(name, value);
}

bool RequestHeadBuilder::keep(std::string_view name, std::string_view value) {
    if (name == "cookie") {
        if (cookies_.empty()) cookie_pos_ = fields_.size();
        cookies_.push_back(copy(value));
        return true;
    }
    fields_.push_back({copy(name), copy(value)});
    return true;
}

bool RequestHeadBuilder::websocket() const {
    // An Upgrade token, compared as HTTP/1.1 compares them (RFC 9110 7.8).
    return extended_connect() && iequals(protocol_, "websocket");
}

bool RequestHeadBuilder::finish(RequestHead& h, std::string_view& request_line, std::string_view& reason,
                                std::string_view ws_key) {
    if (extended_connect()) {
        if (!websocket()) {
            reason = "client sent unsupported :protocol header";
            return false;
        }
        method_ = "GET";
        std::erase_if(fields_, [](const HeaderField& f) { return f.name == "sec-websocket-key"; });
        fields_.push_back({"upgrade", "websocket"});
        fields_.push_back({"connection", "upgrade"});
        fields_.push_back({"sec-websocket-key", copy(ws_key)});
    }
    h.method_name = method_;
    h.method = parse_method(method_);
    h.version_major = 2;
    h.version_minor = 0;
    if (h.method == Method::Connect && protocol_.empty()) {
        // RFC 9113 8.5: authority only; this server does not tunnel.
        h.form = TargetForm::Authority;
        h.target = authority_;
    } else if (path_ == "*" && h.method == Method::Options) {
        h.form = TargetForm::Asterisk;
        h.target = path_;
    } else if (path_.empty() || path_[0] != '/') {
        reason = "client sent invalid :path header";
        return false;
    } else {
        h.form = TargetForm::Origin;
        h.target = path_;
        h.path = path_;
    }
    // ":authority" stands for Host (RFC 9113 8.3.1); a Host field is
    // added for the modules that read it ($http_host, proxy_set_header).
    const HeaderField* host = nullptr;
    for (const HeaderField& f : fields_)
        if (f.name == "host") host = &f;
    bool inserted = false;
    if (!authority_.empty()) {
        h.host = authority_;
        if (!host) {
            fields_.insert(fields_.begin(), HeaderField{"host", authority_});
            inserted = true;
        }
    } else if (host) {
        h.host = host->value;
    }
    // RFC 9113 8.3.1: a Host field must not differ from :authority; which
    // of the two a later hop would use is anyone's guess [nginx: 400].
    if (host && !authority_.empty() && !iequals(host->value, authority_)) {
        reason = "client sent \":authority\" and \"Host\" headers with different values";
        return false;
    }
    // The same rules as for HTTP/1's Host: no userinfo, no "..", no
    // leading '.', a port of digits (h1_parser.h) [nginx: 400].
    if ((host || !authority_.empty()) && (h.host.empty() || !parse_authority(h.host))) {
        reason = "client sent invalid host header";
        return false;
    }
    if (!cookies_.empty()) {
        // One field, as HTTP/1.1 carries it (RFC 9113 8.2.3).
        size_t len = 0;
        for (std::string_view c : cookies_) len += c.size() + 2;
        char* p = static_cast<char*>(mem_->allocate(len, 1));
        size_t at = 0;
        for (std::string_view c : cookies_) {
            if (at) {
                std::memcpy(p + at, "; ", 2);
                at += 2;
            }
            std::memcpy(p + at, c.data(), c.size());
            at += c.size();
        }
        size_t pos = cookie_pos_ + (inserted ? 1 : 0);
        fields_.insert(fields_.begin() + static_cast<std::ptrdiff_t>(pos), HeaderField{"cookie", {p, at}});
    }
    for (const HeaderField& f : fields_)
        if (f.name == "content-length") {
            // nghttp2 checked it is a number and that DATA matches it.
            uint64_t v = 0;
            for (char c : f.value) v = v * 10 + static_cast<uint64_t>(c - '0');
            h.framing.content_length = v;
        }
    h.headers = std::span<const HeaderField>(fields_.data(), fields_.size());
    // $request: what an HTTP/1.1 request line would have said [nginx].
    std::string_view target = h.form == TargetForm::Authority ? authority_ : path_;
    size_t n = method_.size() + 1 + target.size() + 9;
    char* p = static_cast<char*>(mem_->allocate(n, 1));
    std::memcpy(p, method_.data(), method_.size());
    p[method_.size()] = ' ';
    std::memcpy(p + method_.size() + 1, target.data(), target.size());
    std::memcpy(p + method_.size() + 1 + target.size(), " HTTP/2.0", 9);
    request_line = {p, n};
    return true;
}

}  // namespace gatehouse::http::v2
