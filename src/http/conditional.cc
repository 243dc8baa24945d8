#include "http/conditional.h"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "core/str.h"

namespace gatehouse::http {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

class DateScanner {
public:
    explicit DateScanner(std::string_view s) : s_(s) {}
    bool lit(char c) {
        if (i_ < s_.size() && s_[i_] == c) {
            ++i_;
            return true;
        }
        return false;
    }
    bool lit(std::string_view w) {
        if (s_.substr(i_, w.size()) != w) return false;
        i_ += w.size();
        return true;
    }
    // Exactly n digits.
    bool digits(int n, int& v) {
        v = 0;
        for (int k = 0; k < n; ++k) {
            if (i_ >= s_.size() || !is_digit(s_[i_])) return false;
            v = v * 10 + (s_[i_++] - '0');
        }
        return true;
    }
    void skip_alpha() {
        while (i_ < s_.size() && is_alpha(s_[i_])) ++i_;
    }
    bool month(int& m) {
        static constexpr std::string_view kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
        for (int k = 0; k < 12; ++k)
            if (lit(kMonths[k])) {
                m = k + 1;
                return true;
            }
        return false;
    }
    // "08:49:37"
    bool time_of_day(int& h, int& mi, int& sec) {
        return digits(2, h) && lit(':') && digits(2, mi) && lit(':') && digits(2, sec);
    }
    bool peek_digit() const { return i_ < s_.size() && is_digit(s_[i_]); }

private:
    std::string_view s_;
    size_t i_ = 0;
};

bool leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int days_in_month(int y, int m) {
    static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : kDays[m - 1];
}

// Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar.
int64_t days_from_epoch(int y, int m, int d) {
    // Count years from March, so that the leap day ends a year.
    int64_t yy = m <= 2 ? y - 1 : y;
    int64_t era = yy / 400;
    int64_t yoe = yy - era * 400;
    int64_t mp = (m + 9) % 12;
    int64_t doy = (153 * mp + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

time_t make_time(int y, int mo, int d, int h, int mi, int s) {
    if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 ||
        mi > 59 || s > 60)
        return -1;
    // A leap second is read as the second after it, as timegm() would.
    return static_cast<time_t>(days_from_epoch(y, mo, d) * 86400 + h * 3600 + mi * 60 + s);
}

bool is_weak(std::string_view tag) { return tag.size() >= 2 && tag[0] == 'W' && tag[1] == '/'; }

}  // namespace

// 9999-12-31 23:59:59: the last time with a four-digit year.
constexpr time_t kMaxHttpDate = 253402300799;

namespace {

std::string_view format_http_date_uncached(time_t t, char* out) {
    static constexpr char kDays[] = "ThuFriSatSunMonTueWed";  // 1970-01-01 was a Thursday
    static constexpr char kMonths[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    // Every response carries one or two of these dates, so this is a hot
    // path: gmtime_r() plus snprintf() cost ~1,800 instructions, the
    // arithmetic below ~220 (callgrind). Times outside years 1970-9999
    // keep the libc route, whose output (a five-digit year, say) this
    // would not match.
    if (t < 0 || t > kMaxHttpDate) {
        struct tm tm;
        if (!gmtime_r(&t, &tm)) return {};
        static constexpr const char* kDayNames[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
        int n = snprintf(out, kHttpDateMax, "%s, %02d %.3s %04d %02d:%02d:%02d GMT", kDayNames[tm.tm_wday],
                         tm.tm_mday, kMonths + 3 * tm.tm_mon, tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                         tm.tm_sec);
        return {out, n > 0 ? static_cast<size_t>(n) : 0};
    }
    const int64_t days = t / 86400;
    const int secs = static_cast<int>(t % 86400);
    // The inverse of days_from_epoch(): years counted from March.
    const int64_t z = days + 719468;
    const int64_t era = z / 146097;
    const int64_t doe = z - era * 146097;
    const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const int64_t mp = (5 * doy + 2) / 153;
    const int d = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
    const int m = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
    const int y = static_cast<int>(yoe + era * 400 + (m <= 2));
    char* p = out;
    auto two = [&p](int v) {
        *p++ = static_cast<char>('0' + v / 10);
        *p++ = static_cast<char>('0' + v % 10);
    };
    std::memcpy(p, kDays + 3 * (days % 7), 3);
    p += 3;
    *p++ = ',';
    *p++ = ' ';
    two(d);
    *p++ = ' ';
    std::memcpy(p, kMonths + 3 * (m - 1), 3);
    p += 3;
    *p++ = ' ';
    two(y / 100);
    two(y % 100);
    *p++ = ' ';
    two(secs / 3600);
    *p++ = ':';
    two(secs / 60 % 60);
    *p++ = ':';
    two(secs % 60);
    std::memcpy(p, " GMT", 4);
    p += 4;
    return {out, static_cast<size_t>(p - out)};
}

}  // namespace

std::string_view format_http_date(time_t t, char* out) {
    // The last date formatted, again: responses from one origin or cache
    // entry carry the same Last-Modified time after time.
    thread_local time_t last_t = -1;
    thread_local char last[kHttpDateMax];
    thread_local size_t last_len = 0;
    if (t == last_t && t >= 0) {
        std::memcpy(out, last, last_len);
        return {out, last_len};
    }
    const std::string_view s = format_http_date_uncached(t, out);
    if (!s.empty() && s.size() <= sizeof last) {
        std::memcpy(last, s.data(), s.size());
        last_len = s.size();
        last_t = t;
    }
    return s;
}

namespace {

// The month of three letters at p, 1-12, or 0.
int month_at(const char* p) {
    const uint32_t m = static_cast<uint32_t>(static_cast<unsigned char>(p[0])) << 16 |
                       static_cast<uint32_t>(static_cast<unsigned char>(p[1])) << 8 |
                       static_cast<unsigned char>(p[2]);
    constexpr auto k = [](const char (&w)[4]) {
        return static_cast<uint32_t>(w[0]) << 16 | static_cast<uint32_t>(w[1]) << 8 | static_cast<uint32_t>(w[2]);
    };
    switch (m) {
    case k("Jan"): return 1;
    case k("Feb"): return 2;
    case k("Mar"): return 3;
    case k("Apr"): return 4;
    case k("May"): return 5;
    case k("Jun"): return 6;
    case k("Jul"): return 7;
    case k("Aug"): return 8;
    case k("Sep"): return 9;
    case k("Oct"): return 10;
    case k("Nov"): return 11;
    case k("Dec"): return 12;
    default: return 0;
    }
}

// Two digits at p, or -1.
int two_digits(const char* p) {
    return is_digit(p[0]) && is_digit(p[1]) ? (p[0] - '0') * 10 + (p[1] - '0') : -1;
}

// "Sun, 06 Nov 1994 08:49:37 GMT" at fixed offsets, or -2 when s is not
// laid out so (the general scanner then decides). Every origin's
// Last-Modified and nearly every If-Modified-Since is this form, and the
// scanner below costs ~980 instructions a date (callgrind) to this ~100.
// Whatever it accepts, the scanner reads the same way.
time_t parse_imf_fixdate(std::string_view s) {
    if (s.size() < 29) return -2;
    const char* p = s.data();
    if (!is_alpha(p[0]) || !is_alpha(p[1]) || !is_alpha(p[2]) || p[3] != ',' || p[4] != ' ' || p[7] != ' ' ||
        p[11] != ' ' || p[16] != ' ' || p[19] != ':' || p[22] != ':' || std::memcmp(p + 25, " GMT", 4) != 0)
        return -2;
    const int d = two_digits(p + 5), mo = month_at(p + 8), y1 = two_digits(p + 12), y2 = two_digits(p + 14),
              h = two_digits(p + 17), mi = two_digits(p + 20), sec = two_digits(p + 23);
    if (d < 0 || mo == 0 || y1 < 0 || y2 < 0 || h < 0 || mi < 0 || sec < 0) return -2;
    return make_time(y1 * 100 + y2, mo, d, h, mi, sec);
}

}  // namespace

time_t parse_http_date(std::string_view s) {
    s = trim_ows(s);
    // The last IMF-fixdate read, again: an origin's responses, or a cache
    // entry's hits, carry the same Last-Modified time after time, and a
    // compare of 29 bytes costs a tenth of the parse (callgrind: ~265
    // instructions per proxied response with the field).
    constexpr size_t kFix = 29;
    thread_local char last[kFix];
    thread_local time_t last_t = -2;
    if (s.size() == kFix && last_t != -2 && std::memcmp(s.data(), last, kFix) == 0) return last_t;
    if (time_t t = parse_imf_fixdate(s); t != -2) {
        if (s.size() == kFix) {
            std::memcpy(last, s.data(), kFix);
            last_t = t;
        }
        return t;
    }
    DateScanner sc(s);
    int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
    sc.skip_alpha();  // the day name: not checked against the date
    if (sc.lit(',')) {
        if (!sc.lit(' ') || !sc.digits(2, d)) return -1;
        if (sc.lit(' ')) {
            // IMF-fixdate: "06 Nov 1994 08:49:37 GMT"
            if (!sc.month(mo) || !sc.lit(' ') || !sc.digits(4, y)) return -1;
        } else if (sc.lit('-')) {
            // RFC 850: "06-Nov-94 08:49:37 GMT". Two-digit years up to 69
            // are this century's (RFC 9110 5.6.7 allows any sane pivot).
            if (!sc.month(mo) || !sc.lit('-') || !sc.digits(2, y)) return -1;
            y += y < 70 ? 2000 : 1900;
        } else {
            return -1;
        }
        if (!sc.lit(' ') || !sc.time_of_day(h, mi, sec) || !sc.lit(" GMT")) return -1;
    } else {
        // asctime: "Nov  6 08:49:37 1994"
        if (!sc.lit(' ') || !sc.month(mo) || !sc.lit(' ')) return -1;
        if (sc.lit(' ')) {
            if (!sc.digits(1, d)) return -1;
        } else if (!sc.digits(2, d)) {
            return -1;
        }
        if (!sc.lit(' ') || !sc.time_of_day(h, mi, sec) || !sc.lit(' ') || !sc.digits(4, y)) return -1;
    }
    return make_time(y, mo, d, h, mi, sec);
}

bool etag_list_matches(std::string_view field, std::string_view etag, TagMatch how) {
    if (etag.empty()) return false;
    if (is_weak(etag)) {
        if (how == TagMatch::Strong) return false;
        etag.remove_prefix(2);
    }
    size_t i = 0;
    while (i < field.size()) {
        char c = field[i];
        if (c == ' ' || c == '\t' || c == ',') {
            ++i;
            continue;
        }
        bool weak = false;
        if (field.substr(i, 2) == "W/") {
            weak = true;
            i += 2;
        }
        // entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE (RFC 9110 8.8.3):
        // no quote inside, so the next quote closes it.
        if (i >= field.size() || field[i] != '"') return false;
        size_t close = field.find('"', i + 1);
        if (close == std::string_view::npos) return false;
        std::string_view tag = field.substr(i, close + 1 - i);
        if (tag == etag && (how == TagMatch::Weak || !weak)) return true;
        i = close + 1;
    }
    return false;
}

PreconditionResult evaluate_preconditions(const Preconditions& p, time_t last_modified,
                                          std::string_view etag, bool safe_method,
                                          IfModifiedSince ims_mode) {
    // RFC 9110 13.2.2, steps 1 to 4.
    if (p.if_match) {
        std::string_view v = trim_ows(*p.if_match);
        if (v != "*" && !etag_list_matches(v, etag, TagMatch::Strong)) return PreconditionResult::Failed;
    } else if (p.if_unmodified_since && last_modified != -1) {
        time_t t = parse_http_date(*p.if_unmodified_since);
        if (t != -1 && last_modified > t) return PreconditionResult::Failed;
    }

    if (p.if_none_match) {
        std::string_view v = trim_ows(*p.if_none_match);
        if (v == "*" || etag_list_matches(v, etag, TagMatch::Weak))
            return safe_method ? PreconditionResult::NotModified : PreconditionResult::Failed;
        return PreconditionResult::Proceed;
    }

    if (p.if_modified_since && safe_method && ims_mode != IfModifiedSince::Off && last_modified != -1) {
        time_t t = parse_http_date(*p.if_modified_since);
        if (t != -1) {
            bool same = ims_mode == IfModifiedSince::Exact ? last_modified == t : last_modified <= t;
            if (same) return PreconditionResult::NotModified;
        }
    }
    return PreconditionResult::Proceed;
}

}  // namespace gatehouse::http
