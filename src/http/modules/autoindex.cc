// autoindex_module: "autoindex", "autoindex_format", "autoindex_exact_size",
// "autoindex_localtime" [nginx autoindex module].
//
// Content phase, for GET and HEAD of a URI ending in "/" that the index
// module left (no index file): the directory's listing, as nginx writes
// it, in HTML, XML, JSON or JSONP. Names starting with "." are left out;
// symbolic links are followed (a broken one is listed as what it is);
// directories come first, then names in byte order.
//
// The page goes out after its head, as nginx's does: the HTML form cuts
// names longer than 50 characters, and counts UTF-8 characters only when
// the response's charset (which the charset filter chooses with the
// head) is UTF-8. So there is no Content-Length: HTTP/1.1 clients get it
// chunked. The listing is built whole in memory, as nginx builds it: a
// directory of N entries costs about N times 150 bytes while it is sent.
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

#include "core/str.h"
#include "http/conditional.h"
#include "http/core_module.h"
#include "http/log_escape.h"
#include "http/output.h"
#include "http/phases.h"
#include "http/request.h"
#include "http/static_module.h"
#include "http/variables.h"

namespace gatehouse::http {

extern const conf::Module autoindex_module;

namespace {

enum class Format : uint8_t { Html, Xml, Json, Jsonp };

struct AutoindexConf {
    std::optional<bool> enabled;     // "autoindex"
    std::optional<Format> format;    // "autoindex_format"
    std::optional<bool> exact_size;  // "autoindex_exact_size"
    std::optional<bool> localtime;   // "autoindex_localtime"
};

struct Entry {
    std::string name;
    bool dir = false;
    bool file = true;  // a regular file (XML and JSON tell others apart)
    time_t mtime = 0;
    uint64_t size = 0;
};

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

// A name in an href: unreserved and sub-delimiter bytes as they are, the
// rest %XX, so that "?", "#", "%" and "&" stay part of the name.
void append_href(std::string& out, std::string_view name) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    for (unsigned char c : name) {
        const bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                          std::string_view("-._~!$'()*+,;=:@").find(static_cast<char>(c)) != std::string_view::npos;
        if (keep) {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += kHex[c >> 4];
            out += kHex[c & 15];
        }
    }
}

void append_html(std::string& out, std::string_view s) {
    for (char c : s) {
        switch (c) {
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '&': out += "&amp;"; break;
            case '"': out += "&quot;"; break;
            default: out += c;
        }
    }
}

// The inside of a JSON string, as log_format's escape=json writes it.
void append_json(std::string& out, std::string_view s) {
    const size_t at = out.size();
    out.resize(at + escaped_size(LogEscape::Json, s));
    escape_to(LogEscape::Json, s, out.data() + at);
}

// Characters of s: bytes, or UTF-8 sequences when utf8.
size_t length_of(std::string_view s, bool utf8) {
    if (!utf8) return s.size();
    size_t n = 0;
    for (unsigned char c : s) n += (c & 0xc0) != 0x80;
    return n;
}

// The first `chars` characters of s.
std::string_view prefix_of(std::string_view s, size_t chars, bool utf8) {
    if (!utf8) return s.substr(0, chars);
    size_t i = 0;
    for (size_t seen = 0; i < s.size(); ++i) {
        if ((static_cast<unsigned char>(s[i]) & 0xc0) != 0x80 && seen++ == chars) break;
    }
    return s.substr(0, i);
}

void append_number(std::string& out, uint64_t v, int width) {
    char b[32];
    snprintf(b, sizeof b, "%*llu", width, static_cast<unsigned long long>(v));
    out += b;
}

// nginx's columns: the name cut to 50 characters ("..>" at the end of a
// longer one), the date, the size right-aligned in 19 columns, or in 7
// with K, M or G ("autoindex_exact_size off").
void html_line(std::string& out, const Entry& e, bool utf8, bool exact, bool local) {
    out += "<a href=\"";
    // "a:b" would read as a scheme [nginx].
    if (e.name.find(':') != std::string::npos) out += "./";
    append_href(out, e.name);
    if (e.dir) out += '/';
    out += "\">";
    const std::string shown = e.dir ? e.name + "/" : e.name;
    const size_t len = length_of(shown, utf8);
    if (len > 50) {
        append_html(out, prefix_of(shown, 47, utf8));
        out += "..&gt;</a>";
    } else {
        append_html(out, shown);
        out += "</a>";
        out.append(50 - len, ' ');
    }
    static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    if (local) localtime_r(&e.mtime, &tm);
    else gmtime_r(&e.mtime, &tm);
    char d[48];
    snprintf(d, sizeof d, " %02d-%s-%d %02d:%02d ", tm.tm_mday, kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour,
             tm.tm_min);
    out += d;
    if (exact) {
        if (e.dir) out += "                  -";
        else append_number(out, e.size, 19);
    } else if (e.dir) {
        out += "      -";
    } else {
        // Rounded to the nearest unit [nginx].
        constexpr uint64_t kK = 1024, kM = kK * kK, kG = kM * kK;
        uint64_t n = e.size;
        char scale = 0;
        if (n >= kG) {
            n = e.size / kG + (e.size % kG >= kG / 2);
            scale = 'G';
        } else if (n >= kM) {
            n = e.size / kM + (e.size % kM >= kM / 2);
            scale = 'M';
        } else if (n > 9999) {
            n = e.size / kK + (e.size % kK >= kK / 2);
            scale = 'K';
        }
        if (scale) {
            append_number(out, n, 6);
            out += scale;
        } else {
            out += ' ';
            append_number(out, n, 6);
        }
    }
    out += "\r\n";
}

std::string html_page(const Request& r, const std::vector<Entry>& es, bool utf8, const AutoindexConf& c) {
    std::string out = "<html>\r\n<head><title>Index of ";
    append_html(out, r.uri);
    out += "</title></head>\r\n<body>\r\n<h1>Index of ";
    append_html(out, r.uri);
    out += "</h1><hr><pre><a href=\"../\">../</a>\r\n";
    for (const Entry& e : es) html_line(out, e, utf8, *c.exact_size, *c.localtime);
    out += "</pre><hr></body>\r\n</html>\r\n";
    return out;
}

std::string xml_page(const std::vector<Entry>& es) {
    std::string out = "<?xml version=\"1.0\"?>\r\n<list>\r\n";
    for (const Entry& e : es) {
        const char* tag = e.dir ? "directory" : e.file ? "file" : "other";
        struct tm tm;
        gmtime_r(&e.mtime, &tm);
        char d[64];
        snprintf(d, sizeof d, " mtime=\"%04d-%02d-%02dT%02d:%02d:%02dZ\"", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        out += '<';
        out += tag;
        out += d;
        if (!e.dir) {
            out += " size=\"";
            append_number(out, e.size, 0);
            out += '"';
        }
        out += '>';
        append_html(out, e.name);
        out += "</";
        out += tag;
        out += ">\r\n";
    }
    out += "</list>\r\n";
    return out;
}

std::string json_page(const std::vector<Entry>& es) {
    std::string out = "[\r\n";
    for (size_t i = 0; i < es.size(); ++i) {
        const Entry& e = es[i];
        out += "{ \"name\":\"";
        append_json(out, e.name);
        out += "\", \"type\":\"";
        out += e.dir ? "directory" : e.file ? "file" : "other";
        out += "\", \"mtime\":\"";
        char d[kHttpDateMax];
        out += format_http_date(e.mtime, d);
        out += '"';
        if (!e.dir) {
            out += ", \"size\":";
            append_number(out, e.size, 0);
        }
        out += " }";
        if (i + 1 < es.size()) out += ',';
        out += "\r\n";
    }
    out += "]\r\n";
    return out;
}

// The JSONP callback: $arg_callback, letters, digits, "_" and "." only,
// 50 at most [nginx]; empty: plain JSON. False: the request is refused.
bool callback_of(const Request& r, std::string_view& cb) {
    cb = request_arg(r.args, "callback").value_or(std::string_view());
    if (cb.size() > 50) return false;
    for (char ch : cb)
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
              ch == '.'))
            return false;
    return true;
}

Next open_error(Request& r, std::string_view dir, int err) {
    log_for_request(r, err == ENOENT || err == ENOTDIR || err == ENAMETOOLONG || err == EACCES ? log::Level::Error
                                                                                                : log::Level::Crit,
                    err, "opendir() " + quoted(dir) + " failed");
    if (err == ENOENT || err == ENOTDIR || err == ENAMETOOLONG) return respond_status(r, 404);
    return respond_status(r, err == EACCES ? 403 : 500);
}

// The entries of `dir` (ending in "/"), sorted; false after a read error
// (logged).
bool read_entries(Request& r, DIR* d, std::string_view dir, std::vector<Entry>& out) {
    std::string path(dir);
    for (;;) {
        errno = 0;
        const dirent* de = ::readdir(d);
        if (!de) {
            if (errno == 0) break;
            log_for_request(r, log::Level::Crit, errno, "readdir() " + quoted(dir) + " failed");
            return false;
        }
        if (de->d_name[0] == '.') continue;
        Entry e;
        e.name = de->d_name;
        path.resize(dir.size());
        path += e.name;
        struct stat st;
        if (::stat(path.c_str(), &st) != 0 && ::lstat(path.c_str(), &st) != 0) {
            // Gone since readdir(): not listed.
            if (errno != ENOENT)
                log_for_request(r, log::Level::Crit, errno, "stat() " + quoted(path) + " failed");
            continue;
        }
        e.dir = S_ISDIR(st.st_mode);
        e.file = S_ISREG(st.st_mode);
        e.mtime = st.st_mtime;
        e.size = static_cast<uint64_t>(st.st_size);
        out.push_back(std::move(e));
    }
    std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) {
        if (a.dir != b.dir) return a.dir;
        return a.name < b.name;
    });
    return true;
}

Next run_autoindex(Request& r) {
    if (r.uri.empty() || r.uri.back() != '/' || !r.loc_confs) return Next::Decline;
    const auto& c = r.loc_conf<AutoindexConf>(autoindex_module);
    if (!*c.enabled) return Next::Decline;
    if (r.in.method != Method::Get && r.in.method != Method::Head) return Next::Decline;

    std::string_view dir = map_uri_to_path(r, r.uri);
    if (dir.empty()) return Next::Decline;
    std::string path(dir);
    if (path.back() != '/') path += '/';
    std::string_view cb;
    if (*c.format == Format::Jsonp && !callback_of(r, cb)) {
        log_for_request(r, log::Level::Info, 0, "client sent invalid callback name");
        return respond_status(r, 400);
    }
    DIR* d = ::opendir(path.c_str());
    if (!d) return open_error(r, path, errno);
    std::vector<Entry> entries;
    const bool ok = read_entries(r, d, path, entries);
    ::closedir(d);
    if (!ok) return respond_status(r, 500);

    r.out.status = 200;
    switch (*c.format) {
        case Format::Html: r.out.content_type = "text/html"; break;
        case Format::Xml: r.out.content_type = "text/xml"; break;
        case Format::Json: r.out.content_type = "application/json"; break;
        case Format::Jsonp: r.out.content_type = cb.empty() ? "application/json" : "application/javascript"; break;
    }
    if (*c.format != Format::Html) r.out.charset = "utf-8";
    r.out.content_length.reset();
    if (send_header(r) == Flow::Fail) {
        r.stream().abort();
        return Next::Suspend;
    }
    Chain body;
    if (!r.head_only) {
        std::string page;
        if (*c.format == Format::Html) {
            page = html_page(r, entries, iequals(r.out.charset, "utf-8"), c);
        } else if (*c.format == Format::Xml) {
            page = xml_page(entries);
        } else {
            page = json_page(entries);
            if (!cb.empty()) page = std::string(cb) + "(" + page + ");\r\n";
        }
        body.push(Buf::memory(r.arena().dup(page)));
    }
    Buf end;
    end.last_buf = true;
    body.push(std::move(end));
    if (send_body(r, body) == Flow::Fail) r.stream().abort();
    return Next::Suspend;
}

using conf::Ctx;
using conf::Node;

Status set_format(Ctx& cx, const Node& n, AutoindexConf& c) {
    if (c.format) return cx.duplicate(n);
    const std::string& v = n.args[0].text;
    if (v == "html") c.format = Format::Html;
    else if (v == "xml") c.format = Format::Xml;
    else if (v == "json") c.format = Format::Json;
    else if (v == "jsonp") c.format = Format::Jsonp;
    else return cx.error(n, "invalid value \"" + v + "\"");
    return {};
}

void merge(const AutoindexConf& up, AutoindexConf& c) {
    conf::inherit(c.enabled, up.enabled, false);
    conf::inherit(c.format, up.format, Format::Html);
    conf::inherit(c.exact_size, up.exact_size, true);
    conf::inherit(c.localtime, up.localtime, false);
}

constexpr conf::Directive kDirectives[] = {
    {"autoindex", conf::kHttpSrvLoc, conf::Take1, conf::flag<&AutoindexConf::enabled>()},
    {"autoindex_format", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_format>()},
    {"autoindex_exact_size", conf::kHttpSrvLoc, conf::Take1, conf::flag<&AutoindexConf::exact_size>()},
    {"autoindex_localtime", conf::kHttpSrvLoc, conf::Take1, conf::flag<&AutoindexConf::localtime>()},
};

bool autoindex_wanted(conf::ConfArray, conf::ConfArray, conf::ConfArray loc) {
    return *static_cast<const AutoindexConf*>(loc[autoindex_module.index])->enabled;
}

constexpr PhaseHandler kPhases[] = {{Phase::Content, run_autoindex, autoindex_wanted}};

constexpr ModuleHooks kHooks{.phases = kPhases};

}  // namespace

extern const conf::Module autoindex_module{
    .name = "autoindex",
    .directives = kDirectives,
    .loc = conf::level<AutoindexConf, merge>(),
    .http = &kHooks,
};

}  // namespace gatehouse::http
