// rewrite_module: "rewrite", "return", "break", "if", "set", "rewrite_log",
// "uninitialized_variable_warn" [nginx ngx_http_rewrite_module].
//
// The directives of one server (or one location) compile, in config order,
// into one Program: a flat array of instructions. An "if" is an instruction
// that jumps past its block's instructions when its condition is false;
// the block's directives are compiled into the same array, right after it.
// Server-level programs run in Phase::ServerRewrite, the chosen location's
// in Phase::Rewrite. Programs are not inherited: a location runs only its
// own directives, as in nginx.
//
// An "if" in a location is also a location-like block: other modules'
// directives inside it (root, add_header, proxy_pass...) fill a fresh
// location-level conf array, merged with the enclosing location's after
// the configuration is read. When the condition holds, the request is
// switched to that array (r.loc_confs), so every later phase sees the
// block's configuration [nginx: if_code->loc_conf].
#include "http/file_access.h"
#include "http/modules/rewrite.h"

#include <sys/stat.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <memory_resource>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "conf/registry.h"
#include "core/log.h"
#include "http/core_module.h"
#include "http/phases.h"
#include "http/request.h"
#include "http/static_module.h"
#include "http/uri.h"
#include "http/variables.h"

namespace gatehouse::http {

// ---- pure pieces ---------------------------------------------------------------

namespace rewrite {

namespace {

Error invalid_condition(std::string_view s) {
    return make_error("invalid condition \"" + std::string(s) + "\"");
}

bool starts_with_url(std::string_view s) {
    return s.starts_with("http://") || s.starts_with("https://") || s.starts_with("$scheme");
}

}  // namespace

Result<CondSpec> parse_condition(std::span<const std::string_view> in) {
    if (in.empty()) return invalid_condition("");
    std::vector<std::string_view> v(in.begin(), in.end());
    size_t cur = 0, last = v.size() - 1;
    // "(" may stand alone or start the first word, ")" likewise at the end.
    if (v[0].empty() || v[0][0] != '(') return invalid_condition(v[0]);
    if (v[0].size() == 1) cur = 1;
    else v[0].remove_prefix(1);
    if (v[last].empty() || v[last].back() != ')') return invalid_condition(v[last]);
    if (v[last].size() == 1) {
        if (last == 0) return invalid_condition(v[last]);
        --last;
    } else {
        v[last].remove_suffix(1);
    }
    if (cur > last) return invalid_condition(")");

    CondSpec c;
    std::string_view p = v[cur];
    if (p.size() > 1 && p[0] == '$') {
        if (cur != last && cur + 2 != last) return invalid_condition(p);
        c.var = p.substr(1);
        if (c.var.size() > 2 && c.var.front() == '{' && c.var.back() == '}')
            c.var = c.var.substr(1, c.var.size() - 2);
        if (cur == last) {
            c.kind = CondKind::Var;
            return c;
        }
        std::string_view op = v[cur + 1];
        c.operand = v[last];
        if (op == "=") c.kind = CondKind::Equal;
        else if (op == "!=") c.kind = CondKind::NotEqual;
        else if (op == "~" || op == "~*") c.kind = CondKind::Match;
        else if (op == "!~" || op == "!~*") c.kind = CondKind::NotMatch;
        else return make_error("unexpected \"" + std::string(op) + "\" in condition");
        c.caseless = op.back() == '*';
        return c;
    }
    if ((p.size() == 2 && p[0] == '-') || (p.size() == 3 && p[0] == '!' && p[1] == '-')) {
        if (cur + 1 != last) return invalid_condition(p);
        c.kind = CondKind::File;
        c.negate = p[0] == '!';
        switch (p.back()) {
            case 'f': c.file = FileOp::Plain; break;
            case 'd': c.file = FileOp::Dir; break;
            case 'e': c.file = FileOp::Exists; break;
            case 'x': c.file = FileOp::Exec; break;
            default: return invalid_condition(p);
        }
        c.operand = v[last];
        return c;
    }
    return invalid_condition(p);
}

Result<RewriteSpec> parse_rewrite(std::string_view text, std::string_view flag) {
    if (text.empty()) return make_error("empty replacement");
    RewriteSpec s;
    // A final "?" only says "drop the request's args"; it is not output.
    if (text.back() == '?') {
        text.remove_suffix(1);
        s.add_args = false;
    }
    if (starts_with_url(text)) {
        s.redirect = true;
        s.status = 302;
        s.stop = true;
    }
    if (flag == "last") {
        s.stop = true;
    } else if (flag == "break") {
        s.break_cycle = true;
        s.stop = true;
    } else if (flag == "redirect") {
        s.redirect = true;
        s.status = 302;
        s.stop = true;
    } else if (flag == "permanent") {
        s.redirect = true;
        s.status = 301;
        s.stop = true;
    } else if (!flag.empty()) {
        return make_error("invalid parameter \"" + std::string(flag) + "\"");
    }
    // Variable names cannot hold "?", so the first one is literal text.
    size_t q = text.find('?');
    s.has_args = q != std::string_view::npos;
    if (s.redirect || !s.has_args) {
        s.uri = text;
    } else {
        s.uri = text.substr(0, q);
        s.args = text.substr(q + 1);
    }
    return s;
}

std::vector<Piece> split_captures(std::string_view s) {
    std::vector<Piece> out;
    size_t start = 0, i = 0;
    auto flush = [&](size_t end) {
        if (end > start) out.push_back(Piece{s.substr(start, end - start), -1});
    };
    while (i < s.size()) {
        if (s[i] != '$' || i + 1 == s.size()) {
            ++i;
            continue;
        }
        char c = s[i + 1];
        if (c >= '0' && c <= '9') {
            flush(i);
            out.push_back(Piece{s.substr(i, 2), c - '0'});
            i += 2;
            start = i;
        } else if (c == '{') {
            size_t close = s.find('}', i + 2);
            i = close == std::string_view::npos ? s.size() : close + 1;
        } else {
            i += 1;
            while (i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '_')) ++i;
        }
    }
    flush(s.size());
    return out;
}

namespace {

bool needs_escape(unsigned char c) {
    return c < 0x20 || c >= 0x7f || c == ' ' || c == '#' || c == '%' || c == '&' || c == '+' ||
           c == ';' || c == '?';
}

}  // namespace

size_t escaped_args_size(std::string_view in) { return escaped_size(in, needs_escape); }

size_t escape_args(std::string_view in, char* out) { return escape(in, out, needs_escape); }

bool path_was_encoded(std::string_view unparsed_uri) {
    std::string_view path = unparsed_uri.substr(0, unparsed_uri.find('?'));
    return path.find_first_of("%+") != std::string_view::npos;
}

namespace {

std::string_view concat(Arena& a, std::initializer_list<std::string_view> parts) {
    size_t n = 0;
    for (std::string_view p : parts) n += p.size();
    if (n == 0) return {};
    char* out = static_cast<char*>(a.alloc(n, 1));
    char* p = out;
    for (std::string_view s : parts) {
        if (!s.empty()) std::memcpy(p, s.data(), s.size());
        p += s.size();
    }
    return {out, n};
}

}  // namespace

std::string_view rewritten_args(Arena& a, bool has_args, std::string_view new_args, bool add_args,
                                std::string_view old_args) {
    if (!has_args) return add_args ? old_args : std::string_view{};
    if (!add_args || old_args.empty()) return new_args;
    return concat(a, {new_args, "&", old_args});
}

std::string_view redirect_location(Arena& a, std::string_view url, bool has_args, bool add_args,
                                   std::string_view old_args) {
    if (!add_args || old_args.empty()) return url;
    return concat(a, {url, has_args ? "&" : "?", old_args});
}

Result<ReturnSpec> parse_return(std::span<const std::string_view> args) {
    ReturnSpec s;
    auto invalid = [&] { return make_error("invalid return code \"" + std::string(args[0]) + "\""); };
    auto code = conf::parse_number(args[0]);
    if (!code) {
        if (args.size() != 1 || !starts_with_url(args[0])) return invalid();
        s.code = 302;
        s.text = args[0];
        s.has_text = true;
        return s;
    }
    if (*code > 999) return invalid();
    s.code = static_cast<int>(*code);
    if (args.size() == 2) {
        s.text = args[1];
        s.has_text = !args[1].empty();
    }
    return s;
}

}  // namespace rewrite

// ---- the program ---------------------------------------------------------------

namespace {

using conf::ConfArray;
using conf::Ctx;
using conf::Level;
using conf::Node;

// A piece of a rewrite's replacement: text with variables, or a capture.
struct Segment {
    ComplexValue text;
    int capture = -1;
};

struct RewriteOp {
    CaptureRegex re;
    std::vector<Segment> uri, args;
    bool has_args = false, add_args = true, redirect = false, stop = false, break_cycle = false;
    int status = 0;
};

struct ReturnOp {
    int code = 0;
    ComplexValue text;
    bool has_text = false;
};

struct BreakOp {};

struct Condition {
    rewrite::CondKind kind = rewrite::CondKind::Var;
    int var = -1;        // the left side, but for file tests
    ComplexValue value;  // "=", "!=" and file tests
    CaptureRegex re;     // "~" and the like
    rewrite::FileOp file = rewrite::FileOp::Plain;
    bool negate = false;
};

struct IfOp {
    Condition cond;
    size_t end = 0;             // the instruction after the block
    ConfArray confs = nullptr;  // the block's conf array; null at server level
};

struct SetOp {
    int var = -1;
    ComplexValue value;
};

using Instr = std::variant<RewriteOp, ReturnOp, BreakOp, IfOp, SetOp>;

struct Program {
    std::vector<Instr> code;
};

// Location level: one per http, server, location and "if" block.
struct RewriteLocConf {
    // Owner: the generation arena. Null when the block has no directive of
    // this module; an "if" block shares its enclosing block's program.
    Program* prog = nullptr;
    std::optional<bool> log;                          // "rewrite_log"
    std::optional<bool> uninitialized_variable_warn;  // "uninitialized_variable_warn"
};

void merge_loc(const RewriteLocConf& up, RewriteLocConf& c) {
    conf::inherit(c.log, up.log, false);
    conf::inherit(c.uninitialized_variable_warn, up.uninitialized_variable_warn, true);
}

// Main level: the "if" blocks of locations, merged after the configuration
// is read (their enclosing blocks are merged only then).
struct RewriteMainConf {
    struct IfBlock {
        ConfArray parent;  // owner: the generation arena
        ConfArray block;
    };
    std::vector<IfBlock> ifs;
};

HttpMainConf& http_conf(Ctx& cx) {
    HttpMainConf* m = cx.conf<HttpMainConf>(http_core_module, Level::Main);
    GH_CHECK(m != nullptr);  // every directive here lives inside "http"
    return *m;
}

Program& program(Ctx& cx, RewriteLocConf& c) {
    if (!c.prog) c.prog = cx.arena().make<Program>();
    return *c.prog;
}

std::vector<std::string_view> arg_views(const Node& n) {
    std::vector<std::string_view> v;
    v.reserve(n.args.size());
    for (const conf::Arg& a : n.args) v.push_back(a.text);
    return v;
}

Result<std::vector<Segment>> compile_segments(Ctx& cx, const Node& n, std::string_view text) {
    std::vector<Segment> out;
    for (const rewrite::Piece& p : rewrite::split_captures(text)) {
        Segment s;
        if (p.capture >= 0) {
            s.capture = p.capture;
        } else {
            auto cv = ComplexValue::compile(cx, n, p.text);
            if (!cv) return cv.error();
            s.text = std::move(*cv);
        }
        out.push_back(std::move(s));
    }
    return out;
}

// ---- directives -----------------------------------------------------------------

Status set_rewrite(Ctx& cx, const Node& n, RewriteLocConf& c) {
    auto spec = rewrite::parse_rewrite(n.args[1].text, n.args.size() == 3 ? n.args[2].text : "");
    if (!spec) return cx.error(n, spec.message());
    auto re = CaptureRegex::compile(cx, n, n.args[0].text, false);
    if (!re) return re.error();
    RewriteOp op;
    op.re = std::move(*re);
    auto uri = compile_segments(cx, n, spec->uri);
    if (!uri) return uri.error();
    op.uri = std::move(*uri);
    if (!spec->redirect && spec->has_args) {
        auto args = compile_segments(cx, n, spec->args);
        if (!args) return args.error();
        op.args = std::move(*args);
    }
    op.has_args = spec->has_args;
    op.add_args = spec->add_args;
    op.redirect = spec->redirect;
    op.stop = spec->stop;
    op.break_cycle = spec->break_cycle;
    op.status = spec->status;
    program(cx, c).code.emplace_back(std::move(op));
    return {};
}

Status set_return(Ctx& cx, const Node& n, RewriteLocConf& c) {
    auto args = arg_views(n);
    auto spec = rewrite::parse_return(args);
    if (!spec) return cx.error(n, spec.message());
    ReturnOp op;
    op.code = spec->code;
    op.has_text = spec->has_text;
    if (spec->has_text) {
        auto cv = ComplexValue::compile(cx, n, spec->text);
        if (!cv) return cv.error();
        op.text = std::move(*cv);
    }
    program(cx, c).code.emplace_back(std::move(op));
    return {};
}

Status set_break(Ctx& cx, const Node&, RewriteLocConf& c) {
    program(cx, c).code.emplace_back(BreakOp{});
    return {};
}

Status set_set(Ctx& cx, const Node& n, RewriteLocConf& c) {
    std::string_view name = n.args[0].text;
    if (name.size() < 2 || name[0] != '$')
        return cx.error(n, "invalid variable name \"" + std::string(name) + "\"");
    name.remove_prefix(1);
    SetOp op;
    op.var = http_conf(cx).vars.assignable(name);
    if (op.var < 0) return cx.error(n, "the duplicate \"" + std::string(name) + "\" variable");
    auto cv = ComplexValue::compile(cx, n, n.args[1].text);
    if (!cv) return cv.error();
    op.value = std::move(*cv);
    program(cx, c).code.emplace_back(std::move(op));
    return {};
}

Result<Condition> compile_condition(Ctx& cx, const Node& n) {
    auto args = arg_views(n);
    auto spec = rewrite::parse_condition(args);
    if (!spec) return cx.error(n, spec.message());
    Condition c;
    c.kind = spec->kind;
    c.file = spec->file;
    c.negate = spec->negate;
    if (c.kind != rewrite::CondKind::File) c.var = http_conf(cx).vars.index(spec->var, n);
    switch (c.kind) {
        case rewrite::CondKind::Var: break;
        case rewrite::CondKind::Match:
        case rewrite::CondKind::NotMatch: {
            auto re = CaptureRegex::compile(cx, n, spec->operand, spec->caseless);
            if (!re) return re.error();
            c.re = std::move(*re);
            break;
        }
        case rewrite::CondKind::Equal:
        case rewrite::CondKind::NotEqual:
        case rewrite::CondKind::File: {
            auto cv = ComplexValue::compile(cx, n, spec->operand);
            if (!cv) return cv.error();
            c.value = std::move(*cv);
            break;
        }
    }
    return c;
}

Status open_if(Ctx& cx, const Node& n, RewriteLocConf& c) {
    const bool at_server = cx.context() == conf::kServer;
    auto cond = compile_condition(cx, n);
    if (!cond) return cond.error();
    Program& prog = program(cx, c);
    const size_t at = prog.code.size();
    prog.code.emplace_back(IfOp{std::move(*cond), 0, nullptr});

    // The block's own location-level structs; its rewrite directives go on
    // into the enclosing program, right after the IfOp.
    ConfArray parent = cx.level(Level::Loc);
    ConfArray block = cx.create_level(Level::Loc);
    static_cast<RewriteLocConf*>(block[rewrite_module.index])->prog = &prog;
    const auto& plc = *static_cast<const LocConf*>(parent[http_core_module.index]);
    auto& lc = *static_cast<LocConf*>(block[http_core_module.index]);
    lc.loc_confs = block;
    lc.match = plc.match;
    lc.name = plc.name;
    lc.is_location = plc.is_location;
    lc.where = n.where();
    {
        Ctx::LevelScope scope(cx, Level::Loc, block);
        if (auto s = cx.walk(n.children, at_server ? conf::kServerIf : conf::kIf); !s) return s;
    }
    // `prog.code` may have grown: index, never keep a reference across walk.
    auto& op = std::get<IfOp>(prog.code[at]);
    op.end = prog.code.size();
    // At server level only rewrite directives are allowed inside, and the
    // location is not chosen yet: nothing to switch to [nginx: SIF].
    if (!at_server) {
        op.confs = block;
        cx.conf<RewriteMainConf>(rewrite_module, Level::Main)->ifs.push_back({parent, block});
    }
    return {};
}

// ---- running -----------------------------------------------------------------------

// rewrite_log lines, at notice as nginx writes them.
void notice(Request& r, const std::string& msg) { log_for_request(r, log::Level::Notice, 0, msg); }

std::string quoted(std::string_view a) { return "\"" + std::string(a) + "\""; }

std::string_view value_of(Request& r, int var) {
    const VarValue& v = get_var(r, var);
    return v.not_found ? std::string_view{} : v.s;
}

// The replacement's text for this match. Captures are escaped when the
// request's path was sent encoded (see rewrite::escape_args).
std::string_view eval_segments(Request& r, const std::vector<Segment>& segs, bool escape) {
    if (segs.size() == 1 && segs[0].capture < 0) return segs[0].text.eval(r);
    std::pmr::vector<std::string_view> parts(r.mem());
    parts.reserve(segs.size());
    size_t total = 0;
    for (const Segment& s : segs) {
        std::string_view v;
        if (s.capture < 0) {
            v = s.text.eval(r);
        } else if (s.capture < r.ncaptures && r.captures[2 * s.capture] >= 0) {
            v = r.capture_subject.substr(
                static_cast<size_t>(r.captures[2 * s.capture]),
                static_cast<size_t>(r.captures[2 * s.capture + 1] - r.captures[2 * s.capture]));
            if (escape) {
                size_t n = rewrite::escaped_args_size(v);
                if (n != v.size()) {
                    char* out = static_cast<char*>(r.arena().alloc(n, 1));
                    v = {out, rewrite::escape_args(v, out)};
                }
            }
        }
        parts.push_back(v);
        total += v.size();
    }
    if (total == 0) return {};
    char* out = static_cast<char*>(r.arena().alloc(total, 1));
    char* p = out;
    for (std::string_view v : parts) {
        if (!v.empty()) std::memcpy(p, v.data(), v.size());
        p += v.size();
    }
    return {out, total};
}

enum class Step : uint8_t { Next, Stop, Respond };

Step run_rewrite(Request& r, const RewriteOp& op, bool log, Next& result) {
    if (!op.re.exec(r, r.uri)) {
        if (log) notice(r, quoted(op.re.re.pattern()) + " does not match " + quoted(r.uri));
        return Step::Next;
    }
    if (log) notice(r, quoted(op.re.re.pattern()) + " matches " + quoted(r.uri));
    // A rewritten request may enter "internal" locations [nginx].
    r.internal = true;
    // A capture of a path that came encoded is escaped where it goes into
    // a URL: a redirect's Location, the arguments. The URI of an internal
    // rewrite is decoded, as the capture is: escaping it there would turn
    // "/a%25" into a URI naming "%25" [nginx].
    const bool escape = rewrite::path_was_encoded(r.unparsed_uri);
    std::string_view uri = eval_segments(r, op.uri, escape && op.redirect);
    if (op.redirect) {
        std::string_view loc =
            rewrite::redirect_location(r.arena(), uri, op.has_args, op.add_args, r.args);
        if (log) notice(r, "rewritten redirect: " + quoted(loc));
        r.out.location = loc;
        result = respond_status(r, op.status);
        return Step::Respond;
    }
    std::string_view own_args = op.has_args ? eval_segments(r, op.args, escape) : std::string_view{};
    r.args = rewrite::rewritten_args(r.arena(), op.has_args, own_args, op.add_args, r.args);
    if (log) notice(r, "rewritten data: " + quoted(uri) + ", args: " + quoted(r.args));
    if (uri.empty()) {
        log_for_request(r, log::Level::Error, 0, "the rewritten URI has a zero length");
        result = respond_status(r, 500);
        return Step::Respond;
    }
    r.uri = uri;
    r.set_exten();
    // "break" keeps the location even after earlier rewrites without a
    // flag; anything else has the location looked up again.
    r.uri_changed = !op.break_cycle;
    if (op.break_cycle) r.valid_location = false;
    return op.stop ? Step::Stop : Step::Next;
}

Next run_return(Request& r, const ReturnOp& op) {
    if (op.code == 444) {
        // Close without a response [nginx]: the engine honours status 444.
        r.out.status = 444;
        return Next::Respond;
    }
    // A code below 400, or any code with a text, is answered here; a bare
    // error code gets the standard page or its "error_page".
    if (op.code >= 400 && !op.has_text) return respond_status(r, op.code);
    std::string_view text = op.has_text ? op.text.eval(r) : std::string_view{};
    if (rewrite::is_redirect_code(op.code)) {
        if (!text.empty()) r.out.location = text;
        return respond_status(r, op.code);
    }
    r.out.status = op.code;
    // As nginx: the type of the URI's extension, else "default_type";
    // unless one was chosen already (an X-Accel-Redirect kept it).
    if (r.out.content_type.empty()) r.out.content_type = content_type_for(r, r.exten);
    r.out.content_length = text.size();
    Buf b = Buf::memory(text);
    b.last_buf = true;
    r.body.push(std::move(b));
    return Next::Respond;
}

bool test_file(Request& r, const Condition& c) {
    std::string_view path = c.value.eval(r);
    char* z = static_cast<char*>(r.arena().alloc(path.size() + 1, 1));
    if (!path.empty()) std::memcpy(z, path.data(), path.size());
    z[path.size()] = '\0';
    struct stat st;
    bool found = stat_file(z, &st, symlink_check(r)) == 0;
    int err = found ? 0 : errno;
    // A missing file is an answer; anything else is worth a line.
    if (err != 0 && err != ENOENT && err != ENOTDIR && err != ENAMETOOLONG)
        log_for_request(r, log::Level::Crit, err, "stat() \"" + std::string(path) + "\" failed");
    bool yes = false;
    if (found) {
        switch (c.file) {
            case rewrite::FileOp::Plain: yes = S_ISREG(st.st_mode); break;
            case rewrite::FileOp::Dir: yes = S_ISDIR(st.st_mode); break;
            case rewrite::FileOp::Exists: yes = true; break;
            case rewrite::FileOp::Exec: yes = (st.st_mode & S_IXUSR) != 0; break;
        }
    }
    return c.negate ? !yes : yes;
}

bool test(Request& r, const Condition& c, bool log) {
    using rewrite::CondKind;
    switch (c.kind) {
        case CondKind::Var: return rewrite::truthy(value_of(r, c.var));
        case CondKind::Equal: return value_of(r, c.var) == c.value.eval(r);
        case CondKind::NotEqual: return value_of(r, c.var) != c.value.eval(r);
        case CondKind::Match:
        case CondKind::NotMatch: {
            std::string_view v = value_of(r, c.var);
            bool m = c.re.exec(r, v);
            if (log)
                notice(r, quoted(c.re.re.pattern()) + (m ? " matches " : " does not match ") + quoted(v));
            return (c.kind == CondKind::Match) == m;
        }
        case CondKind::File: return test_file(r, c);
    }
    return false;
}

Next run(Request& r, const Program& p, const RewriteLocConf& conf) {
    const bool log = conf.log.value_or(false);
    const size_t n = p.code.size();
    size_t pc = 0;
    while (pc < n) {
        const Instr& in = p.code[pc];
        if (const auto* op = std::get_if<RewriteOp>(&in)) {
            Next result = Next::Decline;
            switch (run_rewrite(r, *op, log, result)) {
                case Step::Next: ++pc; continue;
                case Step::Stop: return Next::Decline;
                case Step::Respond: return result;
            }
        } else if (const auto* op = std::get_if<IfOp>(&in)) {
            if (!test(r, op->cond, log)) {
                pc = op->end;
                continue;
            }
            if (op->confs) {
                r.loc_confs = op->confs;
                r.loc = static_cast<LocConf*>(op->confs[http_core_module.index]);
                // A block without a handler of its own keeps the one in
                // force (the location's, an earlier block's) [nginx].
                if (r.loc->content_handler) r.content_handler = r.loc->content_handler;
            }
            ++pc;
        } else if (const auto* op = std::get_if<SetOp>(&in)) {
            set_var(r, op->var, op->value.eval(r));
            ++pc;
        } else if (const auto* op = std::get_if<ReturnOp>(&in)) {
            return run_return(r, *op);
        } else {
            // "break": the rewritten URI stays in this location. As with
            // the "break" flag, the location no longer matches the URI:
            // proxy_pass then sends the whole URI [nginx].
            if (r.uri_changed) r.valid_location = false;
            r.uri_changed = false;
            return Next::Decline;
        }
    }
    return Next::Decline;
}

Next server_rewrite(Request& r) {
    if (!r.srv) return Next::Decline;
    ConfArray loc = r.srv->loc_confs;
    const auto& c = *static_cast<const RewriteLocConf*>(loc[rewrite_module.index]);
    if (!c.prog) return Next::Decline;
    // A "return" here answers with the server's location-level conf (its
    // error pages), as nginx does before any location is chosen.
    if (!r.loc_confs) {
        r.loc_confs = loc;
        r.loc = static_cast<LocConf*>(loc[http_core_module.index]);
    }
    Next n = run(r, *c.prog, c);
    // The location is looked up next whatever happened here; a rewrite at
    // this level must not count as one more redirection after the
    // location's own directives [nginx clears it in find_config].
    r.uri_changed = false;
    return n;
}

Next location_rewrite(Request& r) {
    // No location matched: the server's directives ran already.
    if (!r.loc_confs || (r.srv && r.loc_confs == r.srv->loc_confs)) return Next::Decline;
    const auto& c = r.loc_conf<RewriteLocConf>(rewrite_module);
    if (!c.prog) return Next::Decline;
    return run(r, *c.prog, c);
}

// ---- after the configuration is read ------------------------------------------

// A user variable read before any "set" assigned it in this request: empty,
// with a warning unless "uninitialized_variable_warn off" [nginx
// ngx_http_rewrite_var]. The value is then cached: one warning a request.
void uninitialized(Request& r, VarValue& v, uintptr_t index) {
    v = VarValue{{}, true, false};
    if (r.loc_confs && !*r.loc_conf<RewriteLocConf>(rewrite_module).uninitialized_variable_warn)
        return;
    if (!log::effective().enabled(log::Level::Warn)) return;
    const HttpMainConf* m = http_main(r.main_confs);
    log_for_request(r, log::Level::Warn, 0,
                    "using uninitialized \"" + m->vars.var(static_cast<int>(index)).name + "\" variable");
}

// The requested VarTable hook (see the report of this module): the getter
// of user variables not assigned yet. Until VarTable has it they read as
// not found, without a warning.
void install_uninitialized(VarTable& vars) { vars.set_uninitialized_getter(uninitialized); }

Status postconfiguration(Ctx& cx) {
    auto* m = cx.conf<RewriteMainConf>(rewrite_module, Level::Main);
    if (!m) return {};
    install_uninitialized(http_conf(cx).vars);
    // Enclosing blocks are merged by now; "if" cannot nest, so one pass.
    for (const auto& b : m->ifs)
        for (const Module* mod : modules) {
            const conf::LevelOps& ops = mod->ops(Level::Loc);
            if (ops.merge && b.parent[mod->index] && b.block[mod->index])
                ops.merge(b.parent[mod->index], b.block[mod->index]);
        }
    return {};
}

constexpr uint32_t kScript = conf::kServer | conf::kLocation | conf::kServerIf | conf::kIf;
constexpr uint32_t kFlags = conf::kHttpSrvLoc | conf::kServerIf | conf::kIf;
constexpr conf::Arity kIfArgs{1, 255, true};

constexpr conf::Directive kDirectives[] = {
    {"rewrite", kScript, conf::Take23, conf::custom<set_rewrite>()},
    {"return", kScript, conf::Take12, conf::custom<set_return>()},
    {"break", kScript, conf::Take0, conf::custom<set_break>()},
    {"if", conf::kServer | conf::kLocation, kIfArgs, conf::custom<open_if>()},
    {"set", kScript, conf::Take2, conf::custom<set_set>()},
    {"rewrite_log", kFlags, conf::Take1, conf::flag<&RewriteLocConf::log>()},
    {"uninitialized_variable_warn", kFlags, conf::Take1,
     conf::flag<&RewriteLocConf::uninitialized_variable_warn>()},
};

bool server_rewrite_wanted(conf::ConfArray, conf::ConfArray srv, conf::ConfArray) {
    ConfArray loc = static_cast<const SrvConf*>(srv[http_core_module.index])->loc_confs;
    return static_cast<const RewriteLocConf*>(loc[rewrite_module.index])->prog != nullptr;
}

bool location_rewrite_wanted(conf::ConfArray, conf::ConfArray, conf::ConfArray loc) {
    return static_cast<const RewriteLocConf*>(loc[rewrite_module.index])->prog != nullptr;
}

constexpr PhaseHandler kPhases[] = {
    {Phase::ServerRewrite, server_rewrite, server_rewrite_wanted},
    {Phase::Rewrite, location_rewrite, location_rewrite_wanted},
};

constexpr ModuleHooks kHooks{.phases = kPhases};

}  // namespace

extern const conf::Module rewrite_module{
    .name = "rewrite",
    .directives = kDirectives,
    .main = conf::level<RewriteMainConf>(),
    .loc = conf::level<RewriteLocConf, merge_loc>(),
    .postconfiguration = postconfiguration,
    .http = &kHooks,
};

}  // namespace gatehouse::http
