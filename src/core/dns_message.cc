#include "core/dns_message.h"

#include <algorithm>

namespace gatehouse::dns {

namespace {

constexpr size_t kHeader = 12;
constexpr size_t kMaxWireName = 255;  // RFC 1035 2.3.4, with length bytes
constexpr uint16_t kFlagQr = 0x8000;
constexpr uint16_t kFlagTc = 0x0200;
constexpr uint16_t kFlagRd = 0x0100;
constexpr uint16_t kOpcodeMask = 0x7800;
constexpr uint32_t kMaxTtl = 0x7fffffff;

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool host_byte(char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

class Reader {
public:
    explicit Reader(std::span<const uint8_t> m) : m_(m) {}

    bool u16(size_t at, uint16_t& v) const {
        if (at + 2 > m_.size()) return false;
        v = static_cast<uint16_t>(m_[at] << 8 | m_[at + 1]);
        return true;
    }
    bool u32(size_t at, uint32_t& v) const {
        if (at + 4 > m_.size()) return false;
        v = static_cast<uint32_t>(m_[at]) << 24 | static_cast<uint32_t>(m_[at + 1]) << 16 |
            static_cast<uint32_t>(m_[at + 2]) << 8 | m_[at + 3];
        return true;
    }

    // Reads the name at `at` into `out` (lower case, dotted, no trailing
    // dot; "" for the root) and sets `next` past it where it sits (after
    // the first pointer, if any). A pointer must point strictly before
    // the label that holds it, so each jump goes backwards and the walk
    // ends; the decoded name is bounded by kMaxWireName.
    bool name(size_t at, std::string& out, size_t& next) const {
        out.clear();
        size_t wire = 1;  // the root's zero byte
        bool jumped = false;
        size_t limit = m_.size();  // a pointer must land before this
        for (;;) {
            if (at >= m_.size()) return false;
            uint8_t len = m_[at];
            if ((len & 0xc0) == 0xc0) {
                if (at + 2 > m_.size()) return false;
                size_t target = static_cast<size_t>(len & 0x3f) << 8 | m_[at + 1];
                if (!jumped) next = at + 2;
                jumped = true;
                if (target >= at || target >= limit) return false;
                limit = target;
                at = target;
                continue;
            }
            if (len & 0xc0) return false;  // 0x40, 0x80: extended labels, unused
            if (len == 0) {
                if (!jumped) next = at + 1;
                return true;
            }
            if (at + 1 + len > m_.size()) return false;
            wire += 1 + len;
            if (wire > kMaxWireName) return false;
            if (!out.empty()) out.push_back('.');
            // A '.' inside a label would read as two labels of another
            // name: no host name has one, refuse the message.
            for (size_t i = 0; i < len; ++i) {
                char c = static_cast<char>(m_[at + 1 + i]);
                if (c == '.') return false;
                out.push_back(lower(c));
            }
            at += 1 + len;
        }
    }

    size_t size() const { return m_.size(); }
    const uint8_t* data() const { return m_.data(); }

private:
    std::span<const uint8_t> m_;
};

// One resource record's fixed fields, with where its data is.
struct Rr {
    std::string owner;
    uint16_t type = 0;
    uint16_t cls = 0;
    uint32_t ttl = 0;
    size_t rdata = 0;
    uint16_t rdlen = 0;
};

bool read_rr(const Reader& rd, size_t& at, Rr& rr) {
    size_t next = 0;
    if (!rd.name(at, rr.owner, next)) return false;
    uint16_t rdlen = 0;
    if (!rd.u16(next, rr.type) || !rd.u16(next + 2, rr.cls) || !rd.u32(next + 4, rr.ttl) ||
        !rd.u16(next + 8, rdlen))
        return false;
    rr.rdata = next + 10;
    rr.rdlen = rdlen;
    if (rr.rdata + rdlen > rd.size()) return false;
    if (rr.ttl > kMaxTtl) rr.ttl = 0;
    at = rr.rdata + rdlen;
    return true;
}

}  // namespace

std::string normalize_name(std::string_view name) {
    if (!name.empty() && name.back() == '.') name.remove_suffix(1);
    if (name.empty() || name.size() > 253) return {};
    std::string out;
    out.reserve(name.size());
    size_t label = 0;
    for (char c : name) {
        c = lower(c);
        if (c == '.') {
            if (label == 0) return {};
            label = 0;
        } else {
            if (!host_byte(c) || ++label > 63) return {};
        }
        out.push_back(c);
    }
    if (label == 0) return {};
    return out;
}

Result<std::vector<uint8_t>> build_query(uint16_t id, std::string_view name, uint16_t qtype) {
    if (normalize_name(name) != name) return make_error("invalid name \"" + std::string(name) + "\"");
    std::vector<uint8_t> q;
    q.reserve(kHeader + name.size() + 2 + 4);
    auto put16 = [&](uint16_t v) {
        q.push_back(static_cast<uint8_t>(v >> 8));
        q.push_back(static_cast<uint8_t>(v));
    };
    put16(id);
    put16(kFlagRd);
    put16(1);  // QDCOUNT
    put16(0);
    put16(0);
    put16(0);
    size_t start = 0;
    while (start <= name.size()) {
        size_t dot = name.find('.', start);
        if (dot == std::string_view::npos) dot = name.size();
        q.push_back(static_cast<uint8_t>(dot - start));
        q.insert(q.end(), name.begin() + start, name.begin() + dot);
        start = dot + 1;
    }
    q.push_back(0);
    put16(qtype);
    put16(kClassIn);
    return q;
}

Result<Answer> parse_answer(std::span<const uint8_t> msg, uint16_t id, std::string_view name,
                            uint16_t qtype) {
    Reader rd(msg);
    uint16_t mid = 0, flags = 0, qd = 0, an = 0, ns = 0, ar = 0;
    if (!rd.u16(0, mid) || !rd.u16(2, flags) || !rd.u16(4, qd) || !rd.u16(6, an) || !rd.u16(8, ns) ||
        !rd.u16(10, ar))
        return make_error("short message");
    (void)ar;
    if (mid != id) return make_error("wrong ID");
    if (!(flags & kFlagQr)) return make_error("not a response");
    if (flags & kOpcodeMask) return make_error("wrong opcode");
    if (qd != 1) return make_error("wrong question count");

    // The question must be ours: an answer to another question (a late
    // reply to an earlier query with a reused ID) is not one.
    std::string qname;
    size_t at = 0;
    if (!rd.name(kHeader, qname, at)) return make_error("bad name in question");
    uint16_t qt = 0, qc = 0;
    if (!rd.u16(at, qt) || !rd.u16(at + 2, qc)) return make_error("short message");
    at += 4;
    if (qname != name || qt != qtype || qc != kClassIn) return make_error("wrong question");

    Answer a;
    a.rcode = static_cast<uint8_t>(flags & 0x000f);
    if (flags & kFlagTc) {
        a.truncated = true;
        return a;
    }
    std::vector<Rr> answers;
    answers.reserve(std::min<size_t>(an, 64));
    for (uint16_t i = 0; i < an; ++i) {
        Rr rr;
        if (!read_rr(rd, at, rr)) return make_error("bad record in answer");
        answers.push_back(std::move(rr));
    }
    // The authority section, for a negative answer's SOA (RFC 2308 3).
    if (a.rcode == kNxDomain || a.rcode == kNoError) {
        for (uint16_t i = 0; i < ns; ++i) {
            Rr rr;
            if (!read_rr(rd, at, rr)) return make_error("bad record in authority");
            if (rr.type != kTypeSoa || rr.cls != kClassIn || rr.rdlen < 22) continue;
            uint32_t minimum = 0;
            if (!rd.u32(rr.rdata + rr.rdlen - 4, minimum)) return make_error("bad record in authority");
            if (minimum > kMaxTtl) minimum = 0;
            a.has_negative_ttl = true;
            a.negative_ttl = std::min(rr.ttl, minimum);
            break;
        }
    }
    if (a.rcode != kNoError) return a;

    // Follow the asked name through CNAMEs (RFC 1034 3.6.2): only records
    // owned by the current target count.
    std::string target(name);
    uint32_t ttl = kMaxTtl;
    const uint16_t want_len = qtype == kTypeA ? 4 : 16;
    for (int hop = 0;; ++hop) {
        bool found = false;
        for (const Rr& rr : answers) {
            if (rr.owner != target || rr.cls != kClassIn || rr.type != qtype) continue;
            if (rr.rdlen != want_len) return make_error("bad address record");
            std::array<uint8_t, 16> addr{};
            std::copy_n(msg.data() + rr.rdata, want_len, addr.begin());
            a.addrs.push_back(addr);
            ttl = std::min(ttl, rr.ttl);
            found = true;
        }
        if (found) break;
        const Rr* cname = nullptr;
        for (const Rr& rr : answers)
            if (rr.owner == target && rr.cls == kClassIn && rr.type == kTypeCname) {
                cname = &rr;
                break;
            }
        if (!cname) {
            // The chain ends without addresses: no data for the name, or
            // (after a CNAME) the target was not in this answer.
            if (hop > 0) a.cname = target;
            break;
        }
        if (hop == kMaxCnameChain) return make_error("CNAME chain too long");
        std::string next_name;
        size_t end = 0;
        if (!rd.name(cname->rdata, next_name, end) || end != cname->rdata + cname->rdlen)
            return make_error("bad CNAME record");
        if (normalize_name(next_name) != next_name) return make_error("bad CNAME record");
        ttl = std::min(ttl, cname->ttl);
        target = std::move(next_name);
    }
    // No data at all: no record said how long; the caller decides.
    a.ttl = a.addrs.empty() && a.cname.empty() ? 0 : ttl;
    return a;
}

}  // namespace gatehouse::dns
