#include "http/sub_match.h"

#include <algorithm>

#include "core/assert.h"

namespace gatehouse::http {

namespace {

constexpr unsigned char fold(char c) {
    auto u = static_cast<unsigned char>(c);
    return u >= 'A' && u <= 'Z' ? static_cast<unsigned char>(u + ('a' - 'A')) : u;
}

}  // namespace

SubMatcher::SubMatcher(std::span<const std::string_view> search, bool once, std::pmr::memory_resource* mem)
    : text_(mem), pats_(mem), once_(once), held_(mem), join_(mem) {
    size_t total = 0;
    for (std::string_view s : search) total += s.size() <= kSubMaxSearch ? s.size() : 0;
    text_.reserve(total);
    pats_.reserve(search.size());
    for (std::string_view s : search) {
        Pattern p;
        if (!s.empty() && s.size() <= kSubMaxSearch) {
            p.off = text_.size();
            p.len = s.size();
            p.active = true;
            for (char c : s) text_.push_back(static_cast<char>(fold(c)));
            first_[fold(s[0])] = true;
            longest_ = std::max(longest_, s.size());
            ++active_;
        }
        pats_.push_back(p);
    }
    // What is held, and the held bytes with a chunk's first longest_ - 1,
    // never need more: no reallocation while the body flows.
    if (longest_ > 1) {
        held_.reserve(longest_ - 1);
        join_.reserve(2 * (longest_ - 1));
    }
}

void SubMatcher::deactivate(size_t i) {
    pats_[i].active = false;
    --active_;
    // The first-byte table loses this string's byte unless another
    // active string starts with it too.
    const unsigned char b = static_cast<unsigned char>(text_[pats_[i].off]);
    first_[b] = false;
    for (const Pattern& p : pats_)
        if (p.active && static_cast<unsigned char>(text_[p.off]) == b) first_[b] = true;
}

// What occurs at d[p]: the first active string, in the order given, that
// is there whole; Undecided when an earlier one than any found runs to
// the end of the data as a prefix and more data may follow.
SubMatcher::Verdict SubMatcher::examine(const char* d, size_t n, size_t p, bool end) const {
    const size_t avail = n - p;
    for (size_t i = 0; i < pats_.size(); ++i) {
        const Pattern& pt = pats_[i];
        if (!pt.active) continue;
        const char* s = text_.data() + pt.off;
        const size_t cmp = std::min(avail, pt.len);
        size_t k = 0;
        while (k < cmp && fold(d[p + k]) == static_cast<unsigned char>(s[k])) ++k;
        if (k < cmp) continue;
        if (cmp == pt.len) return {At::Match, i};
        if (!end) return {At::Undecided, i};
    }
    return {At::None, 0};
}

size_t SubMatcher::scan(const char* d, size_t n, size_t from, size_t limit, bool end, bool held, SubSink& out) {
    size_t run = from;  // the start of text not yet reported
    size_t p = from;
    auto flush_text = [&](size_t to) {
        if (to <= run) return;
        out.text(std::string_view(d + run, to - run), held);
        run = to;
    };
    while (p < limit) {
        if (active_ == 0) break;
        if (!first_[fold(d[p])]) {
            ++p;
            continue;
        }
        Verdict v = examine(d, n, p, end);
        if (v.at == At::None) {
            ++p;
            continue;
        }
        flush_text(p);
        if (v.at == At::Undecided) return p;
        out.match(v.index);
        p += pats_[v.index].len;
        run = p;
        if (once_) deactivate(v.index);
    }
    // Past the range (a match ran beyond it), or nothing left to look
    // for: the rest of the range is text.
    if (p < limit) p = limit;
    flush_text(limit);
    return p;
}

void SubMatcher::feed(std::string_view chunk, bool end, SubSink& out) {
    size_t q = 0;  // the first byte of the chunk not yet reported
    if (!held_.empty()) {
        // The held bytes and enough of the chunk to decide every position
        // among them: a string starting there ends within longest_ - 1
        // bytes of the chunk.
        GH_ASSERT(longest_ > 1);
        const size_t take = std::min(chunk.size(), longest_ - 1);
        join_.assign(held_);
        join_.append(chunk.substr(0, take));
        const size_t h = held_.size();
        const size_t c = scan(join_.data(), join_.size(), 0, h, end && take == chunk.size(), true, out);
        if (c < h) {
            // Still undecided: the whole chunk was too short to tell.
            GH_ASSERT(take == chunk.size() && !end);
            held_.assign(join_, c);
            return;
        }
        held_.clear();
        q = c - h;
    }
    if (q >= chunk.size()) return;
    const size_t c = scan(chunk.data(), chunk.size(), q, chunk.size(), end, false, out);
    if (c < chunk.size()) {
        GH_ASSERT(!end && chunk.size() - c < longest_);
        held_.assign(chunk.substr(c));
    }
}

}  // namespace gatehouse::http
