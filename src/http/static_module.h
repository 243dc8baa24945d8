// Static files: "root", "alias", "types", "default_type", "try_files",
// "sendfile", "etag", "if_modified_since", "max_ranges" [nginx core].
//
// static_module keeps these at location level (StaticConf) and serves
// files in the Content phase; try_files runs in Precontent. Other modules
// read the conf through this header: index (the directory to look in),
// not_modified_filter (etag, if_modified_since), range_filter
// (max_ranges), the writer (sendfile).
//
// A file name is the root or alias followed by a tail of the URI; the tail
// never climbs out of the root: the connection hands over a decoded and
// normalised URI, and the join refuses a "." or ".." segment where root and
// tail meet (the "location /i { alias /data/; }" + "/i../x" trap).
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <memory_resource>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "conf/module.h"
#include "core/log.h"
#include "http/conditional.h"
#include "http/fwd.h"
#include "http/variables.h"

namespace gatehouse::http {

class MimeTypes;

enum class RootKind : uint8_t {
    Root,        // "root": the whole URI is appended
    Alias,       // "alias": replaces the location prefix
    RegexAlias,  // "alias" in a regex location: the value is the file name
};

// The value of "root" or "alias", compiled. Owner: the generation arena;
// locations that do not set one share their parent's.
struct DocRoot {
    RootKind kind = RootKind::Root;
    // Relative values were put under the prefix when the config was read,
    // except those starting with a variable, which are put under `prefix`
    // at request time, as nginx does.
    ComplexValue path;
    std::string prefix;
    size_t alias_len = 0;  // Alias: the length of the location name replaced
};

struct TryFiles {
    std::vector<ComplexValue> files;  // written ending in "/": must be a directory
    ComplexValue fallback;            // a URI (maybe with "?args") or "@name"
    int code = 0;                     // "=404": answer this instead
};

// static_module's location-level struct.
struct StaticConf {
    const DocRoot* root = nullptr;             // "root", "alias"; null: <prefix>html
    MimeTypes* types = nullptr;                // "types"; owner: the generation arena;
                                               // null: nginx's three built-in types
    std::optional<std::string> default_type;   // "default_type"
    std::optional<bool> sendfile;              // "sendfile"
    std::optional<bool> etag;                  // "etag"
    std::optional<IfModifiedSince> if_modified_since;  // "if_modified_since"
    std::optional<uint64_t> max_ranges;        // "max_ranges"; unset: no limit
    std::optional<uint64_t> read_ahead;        // "read_ahead": > 0 asks for sequential read-ahead
    std::optional<uint64_t> types_hash_max_size;       // "types_hash_max_size": accepted, unused
    std::optional<uint64_t> types_hash_bucket_size;    // "types_hash_bucket_size": accepted, unused
    // "try_files": not inherited (nginx): a server-level try_files applies
    // only to requests that match no location. Owner: the generation arena.
    const TryFiles* try_files = nullptr;
};

// static_module's main-level struct.
struct StaticMainConf {
    std::string default_root;  // <prefix>html, for locations with no root
};

extern const conf::Module static_module;

// ---- pure helpers (tested in tests/unit/http/static_test.cc) -------------

// The part of `uri` that follows the root or alias: all of it for Root,
// what follows the first alias_len bytes (the location name) for Alias,
// nothing for RegexAlias. Empty optional when uri is shorter than the
// location name (it cannot have matched that location).
std::optional<std::string_view> path_tail(RootKind kind, size_t alias_len, std::string_view uri);

// base + tail written to `out` and NUL-terminated (out needs base.size() +
// tail.size() + 1 bytes), unless the tail would leave base: a "." or ".."
// segment at or after the junction, or a NUL byte in the tail. Returns the
// joined path without its NUL, or nullopt.
std::optional<std::string_view> join_path(std::string_view base, std::string_view tail, std::span<char> out);

// nginx's ETag for a file: "\"<mtime hex>-<size hex>\"", e.g. "\"5f3b2a1c-1a4\"".
inline constexpr size_t kEtagMax = 40;
std::string_view format_etag(time_t mtime, off_t size, std::span<char, kEtagMax> out);

// Appends `path` percent-encoding what may not appear raw in a Location
// header (controls, space, '"', '#', '%', '?', non-ASCII...). The URI is
// decoded by then, so "%3F" is a '?' again and must be encoded anew.
void append_escaped_path(std::string_view path, std::pmr::string& out);

// ---- for the request path -----------------------------------------------

// The file name for `uri` under r's root or alias, NUL-terminated, in r's
// arena; empty when it cannot be mapped (see join_path). root_len, when
// given, receives the length of the root part ($document_root).
std::string_view map_uri_to_path(Request& r, std::string_view uri, size_t* root_len = nullptr);

// The Content-Type for a file of r's location with extension `exten`:
// the types map, else "default_type".
std::string_view content_type_for(Request& r, std::string_view exten);

// "sendfile on" in r's location: the writer may use sendfile() for file
// buffers; otherwise it reads them.
bool sendfile_enabled(Request& r);

// Makes the open regular file `fd` (fstat'ed into `st`) r's 200 answer:
// Content-Length, Last-Modified, ETag (unless "etag off"), Content-Type
// by r.exten unless one is set already, ranges allowed, the whole file as
// the body (sendfile as configured). r owns fd from then on (add_fd).
// Returns Respond. Used by the static and gzip_static modules.
Next respond_with_file(Request& r, int fd, const struct stat& st);

// Logs `msg` about r in nginx's form: the message, " (errno: text)" when
// err is not 0, then r's context (describe_request: ", client: ...,
// server: ..., request: \"...\"", ...), whoever called.
void log_for_request(Request& r, log::Level l, int err, std::string_view msg);

}  // namespace gatehouse::http
