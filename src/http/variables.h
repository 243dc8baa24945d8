// Variables: named values computed lazily per request [nginx variables].
//
// Every module may declare variables (ModuleHooks::variables). A variable
// used anywhere in the config gets an index at config time; a request keeps
// one VarValue per index (Request::vars), computed on first use and cached
// for the rest of the request unless the variable is NoCache. Prefix
// variables ("http_", "arg_", "cookie_", "sent_http_") match any name that
// starts with the prefix; the rest of the name reaches the getter.
//
// Strings with variables ("$scheme://$host$request_uri", "${a}b", "$1")
// are compiled once into a ComplexValue. A variable that no module
// declares and no "set" defines is a config error naming file:line.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "conf/fwd.h"
#include "core/regex.h"
#include "core/result.h"
#include "http/fwd.h"
#include "http/request.h"

namespace gatehouse::http {

// Fills v for request r. `arg` is the VariableDef's data, or, for prefix
// variables, a pointer to a std::string_view holding the rest of the name.
using VarGetter = void (*)(Request& r, VarValue& v, uintptr_t arg);
// Called by "set" for a settable variable that is more than a stored
// value ($args changes the request's arguments, $limit_rate its rate);
// `v` lives in r's arena or the generation.
using VarSetter = void (*)(Request& r, std::string_view v, uintptr_t arg);

enum VarFlags : uint8_t {
    kVarPrefix = 1,   // name is a prefix ("http_")
    kVarNoCache = 2,  // recompute at each use ($msec, $request_time, $status)
    kVarSettable = 4, // "set" may assign it
};

struct VariableDef {
    std::string_view name;
    VarGetter get = nullptr;
    uintptr_t arg = 0;
    uint8_t flags = 0;
    VarSetter set = nullptr;  // with kVarSettable: what "set" does besides storing
};

// The variables of one configuration generation. Kept in HttpMainConf.
class VarTable {
public:
    // Loads every module's declarations; called when "http {" opens.
    void load_modules();
    // The index for `name` (without "$"), adding it on first use. Defining
    // it is checked at the end of the config by check().
    int index(std::string_view name, const conf::Node& where);
    // "set $name": a user variable stored in Request::vars.
    int define_user(std::string_view name);
    // The index of a variable "set" or a named capture may assign: a user
    // variable or a settable one ($args); -1 for the others ($host), which
    // nginx refuses to change.
    int assignable(std::string_view name);
    // A variable computed by `get` ("map"): defines it, or fills in one
    // already referenced with index(). -1 when a module already declares
    // the name and it is not settable.
    int define(std::string_view name, VarGetter get, uintptr_t arg, uint8_t flags);
    // Called (arg: the variable's index) for a user variable read before
    // any "set" gave it a value; its result is cached. Rewrite installs
    // one that warns, as nginx's uninitialized_variable_warn.
    void set_uninitialized_getter(VarGetter g) { uninitialized_ = g; }
    VarGetter uninitialized_getter() const { return uninitialized_; }
    // The index of `name` when the configuration uses it, else -1.
    int find(std::string_view name) const;
    // Every used variable is declared or set; else the error names where
    // it was first used.
    Status check() const;
    size_t size() const { return vars_.size(); }

    struct Var {
        std::string name;
        VarGetter get = nullptr;
        uintptr_t arg = 0;
        uint8_t flags = 0;
        VarSetter set = nullptr;
        bool user = false;          // defined by "set"
        std::string first_use;      // file:line
        std::string_view* suffix = nullptr;  // for prefix variables
    };
    const Var& var(int i) const { return vars_[static_cast<size_t>(i)]; }

private:
    const VariableDef* find_def(std::string_view name, std::string_view* suffix) const;
    std::vector<const VariableDef*> defs_;
    std::vector<Var> vars_;
    std::vector<std::unique_ptr<std::string_view>> suffixes_;  // stable addresses
    std::vector<std::unique_ptr<std::string>> suffix_text_;
    VarGetter uninitialized_ = nullptr;
};

// A regex whose named groups are variables ($name), as nginx makes them
// for location, server_name, rewrite, if and map regexes.
struct CaptureRegex {
    Regex re;
    std::vector<std::pair<int, int>> named;  // group number, variable index

    // Compiles `pattern` written at n; each named group becomes a variable
    // of the generation's table. The error names the pattern and file:line.
    static Result<CaptureRegex> compile(conf::Ctx& cx, const conf::Node& n,
                                        std::string_view pattern, bool caseless);

    // Matches s. On a match, $0..$9 refer to s (when the regex has groups;
    // a regex without any leaves the previous captures, as nginx does) and
    // each named group's variable is set. s must live as long as r.
    bool exec(Request& r, std::string_view s) const;
};

// The value of argument `name` (without case) in a query string, as
// $arg_NAME reads it; nullopt when no "name=" is there.
std::optional<std::string_view> request_arg(std::string_view args, std::string_view name);

// The value of variable `index` for r; computed on first use.
const VarValue& get_var(Request& r, int index);
// "set": stores v as the variable's value and runs its setter, if any.
// `index` came from VarTable::assignable(); v lives as long as r.
void set_var(Request& r, int index, std::string_view v);

// A string compiled from config text. Literal parts are views into the
// ComplexValue's own copy; it belongs to the generation.
class ComplexValue {
public:
    bool literal() const { return segs_.size() <= 1 && (segs_.empty() || segs_[0].var < 0); }
    bool empty() const { return text_.empty(); }
    const std::string& text() const { return text_; }
    // The value for r, in r's arena (or the literal itself).
    std::string_view eval(Request& r) const;
    // Does the string use regex captures ($1, $name from a regex)?
    bool uses_captures() const { return captures_; }

    // Compiles `text` written at node n. Variables are looked up in the
    // generation's table (HttpMainConf).
    static Result<ComplexValue> compile(conf::Ctx& cx, const conf::Node& n, std::string_view text);

private:
    struct Seg {
        size_t lit_pos = 0, lit_len = 0;
        int var = -1;       // variable index
        int capture = -1;   // $0..$9
    };
    std::string text_;
    std::vector<Seg> segs_;
    bool captures_ = false;
};

// A size that may hold variables ("limit_rate $rate"): a literal is
// checked as a size now, a value with variables when it is used, where an
// invalid one counts as 0 (eval_size). In the generation's arena.
Result<const ComplexValue*> compile_size(conf::Ctx& cx, const conf::Node& n, std::string_view text);
uint64_t eval_size(Request& r, const ComplexValue* cv);  // 0 for null

// Whether a header called `header` is the one a "$http_NAME"-style
// variable names: `var` ("user_agent") matches "User-Agent", case aside,
// '_' in the name standing for '-' or '_'.
bool header_matches(std::string_view header, std::string_view var);

// Sets v to the values of the fields `name` names (header_matches), joined
// with `sep` in r's arena when there are several, as nginx does since
// 1.23; not found when none. Fields: a range of {name, value} views
// (request headers, response headers or trailers, an origin's fields).
template <class Fields>
void join_fields(Request& r, VarValue& v, const Fields& fields, std::string_view name, std::string_view sep) {
    std::string_view first;
    size_t count = 0, total = 0;
    for (const auto& h : fields)
        if (!h.name.empty() && header_matches(h.name, name)) {
            if (count++ == 0) first = h.value;
            total += h.value.size();
        }
    if (count <= 1) {
        v.s = first;
        v.not_found = count == 0;
        return;
    }
    char* out = static_cast<char*>(r.arena().alloc(total + sep.size() * count, 1));
    size_t pos = 0;
    for (const auto& h : fields)
        if (!h.name.empty() && header_matches(h.name, name)) {
            if (pos) {
                std::memcpy(out + pos, sep.data(), sep.size());
                pos += sep.size();
            }
            std::memcpy(out + pos, h.value.data(), h.value.size());
            pos += h.value.size();
        }
    v.s = std::string_view(out, pos);
}

// Writes "$name" or "${name}" parsing into name; returns the length consumed
// (0 if s does not start a valid variable reference).
size_t parse_var_ref(std::string_view s, std::string_view* name);

}  // namespace gatehouse::http
