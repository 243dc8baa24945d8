#include "http/range.h"

#include <algorithm>
#include <cstdio>

#include "core/str.h"

namespace gatehouse::http {

namespace {

class Scanner {
public:
    explicit Scanner(std::string_view s) : s_(s) {}
    bool at_end() const { return i_ == s_.size(); }
    bool peek(char c) const { return i_ < s_.size() && s_[i_] == c; }
    void advance() { ++i_; }
    void skip_space() {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t')) ++i_;
    }
    // One or more digits; false when there is none or the value overflows.
    bool number(uint64_t& v) {
        size_t from = i_;
        v = 0;
        while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
            uint64_t d = static_cast<uint64_t>(s_[i_] - '0');
            if (v > (UINT64_MAX - d) / 10) return false;
            v = v * 10 + d;
            ++i_;
        }
        return i_ > from;
    }

private:
    std::string_view s_;
    size_t i_ = 0;
};

RangeRequest verdict(RangeVerdict v) {
    RangeRequest r;
    r.verdict = v;
    return r;
}

}  // namespace

RangeRequest parse_range(std::string_view field, uint64_t length, uint64_t max_ranges,
                         std::pmr::vector<ByteRange>* all) {
    constexpr std::string_view kUnit = "bytes=";
    if (field.size() <= kUnit.size() || !istarts_with(field, kUnit))
        return verdict(RangeVerdict::Ignore);
    Scanner sc(field.substr(kUnit.size()));
    RangeRequest out;
    uint64_t total = 0;
    for (;;) {
        sc.skip_space();
        uint64_t start = 0, last = 0;
        bool suffix = false, open = false;
        if (sc.peek('-')) {
            // "-N": the last N bytes.
            suffix = true;
            sc.advance();
        } else {
            if (!sc.number(start)) return verdict(RangeVerdict::Unsatisfiable);
            sc.skip_space();
            if (!sc.peek('-')) return verdict(RangeVerdict::Unsatisfiable);
            sc.advance();
            sc.skip_space();
            open = sc.at_end() || sc.peek(',');  // "N-": from N to the end
        }
        if (!open) {
            if (!sc.number(last)) return verdict(RangeVerdict::Unsatisfiable);
            sc.skip_space();
            if (!sc.at_end() && !sc.peek(',')) return verdict(RangeVerdict::Unsatisfiable);
        }

        // To a half-open interval clipped to the representation.
        uint64_t end;
        if (suffix) {
            start = last < length ? length - last : 0;
            end = length;
        } else if (open) {
            end = length;
        } else {
            end = last >= length ? length : last + 1;
        }

        if (start < end) {
            if (++out.count > max_ranges) return verdict(RangeVerdict::Ignore);
            if (out.count == 1) out.first = {start, end};
            if (all) all->push_back({start, end});
            total += end - start;
        } else if (start == 0) {
            // Only an empty representation gets here: nothing to cut.
            return verdict(RangeVerdict::Ignore);
        }

        if (sc.at_end()) break;
        sc.advance();  // ','
    }
    if (out.count == 0) return verdict(RangeVerdict::Unsatisfiable);
    if (total > length) return verdict(RangeVerdict::Ignore);
    out.verdict = RangeVerdict::Satisfiable;
    return out;
}

std::string_view format_content_range(ByteRange r, uint64_t length, std::span<char, kContentRangeMax> out) {
    int n = snprintf(out.data(), out.size(), "bytes %llu-%llu/%llu", static_cast<unsigned long long>(r.start),
                     static_cast<unsigned long long>(r.end - 1), static_cast<unsigned long long>(length));
    return {out.data(), static_cast<size_t>(n)};
}

std::string_view format_unsatisfied_range(uint64_t length, std::span<char, kContentRangeMax> out) {
    int n = snprintf(out.data(), out.size(), "bytes */%llu", static_cast<unsigned long long>(length));
    return {out.data(), static_cast<size_t>(n)};
}

void RangeSlicer::run(Chain& in, Chain& out) {
    for (Buf& b : in) {
        if (done_) break;
        uint64_t from = offset_;
        uint64_t to = offset_ + b.size();
        offset_ = to;
        if (to <= range_.start || from >= range_.end) {
            // Wholly outside the range. A body shorter than announced
            // still has to end.
            if (b.last_buf) {
                Buf end;
                end.last_buf = true;
                out.push(std::move(end));
                done_ = true;
            }
            continue;
        }
        uint64_t skip = range_.start > from ? range_.start - from : 0;
        uint64_t cut = to > range_.end ? to - range_.end : 0;
        b.consume(skip);
        b.truncate(b.size() - cut);
        // The range ends here, or the body does (shorter than announced).
        if (to >= range_.end) b.last_buf = true;
        done_ = b.last_buf;
        out.push(std::move(b));
    }
    in.clear();
}

void order_ranges(std::pmr::vector<ByteRange>& ranges) {
    std::sort(ranges.begin(), ranges.end(), [](const ByteRange& a, const ByteRange& b) { return a.start < b.start; });
    size_t n = 0;
    for (const ByteRange& r : ranges) {
        if (n > 0 && r.start < ranges[n - 1].end) {
            ranges[n - 1].end = std::max(ranges[n - 1].end, r.end);
            continue;
        }
        ranges[n++] = r;
    }
    ranges.resize(n);
}

void MultipartSlicer::run(Chain& in, Chain& out) {
    for (Buf& b : in) {
        if (done_) break;
        const uint64_t from = offset_;
        const uint64_t to = offset_ + b.size();
        offset_ = to;
        while (part_ < ranges_.size()) {
            const ByteRange r = ranges_[part_];
            if (to <= r.start) break;  // this buffer ends before the part begins
            if (!head_out_) {
                out.push(Buf::memory(heads_[part_]));
                head_out_ = true;
            }
            const uint64_t lo = std::max(r.start, from);
            const uint64_t hi = std::min(r.end, to);
            if (hi > lo) {
                Buf piece = b;
                piece.last_buf = false;
                piece.flush = false;
                piece.consume(lo - from);
                piece.truncate(hi - lo);
                out.push(std::move(piece));
            }
            if (to < r.end) break;  // the part goes on in the next buffer
            ++part_;
            head_out_ = false;
        }
        if (part_ == ranges_.size()) {
            Buf end = Buf::memory(tail_);
            end.last_buf = true;
            out.push(std::move(end));
            done_ = true;
        } else if (b.last_buf) {
            // The body is shorter than announced: it ends here.
            Buf end;
            end.last_buf = true;
            out.push(std::move(end));
            done_ = true;
        } else if (b.flush && !out.empty()) {
            out.back().flush = true;
        }
    }
    in.clear();
}

}  // namespace gatehouse::http
