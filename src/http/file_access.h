// Opening and looking at the files a request's URI names, under
// "disable_symlinks" [nginx: the checks of ngx_open_cached_file]. The
// static module, index, try_files, gzip_static and rewrite's file tests
// ("-f", "-d", "-e", "-x") go through here; autoindex and random_index do
// not, as in nginx.
//
//   Follow            the plain open(2) and stat(2): links are followed.
//   Refuse            any component of the path that is a symbolic link
//                     fails the call with ELOOP (openat2's
//                     RESOLVE_NO_SYMLINKS where the kernel has it, else a
//                     walk component by component).
//   RefuseIfNotOwner  a link is followed only when it and what it points
//                     to have the same owner; else ELOOP. A walk:
//                     fstatat() of each component without following it,
//                     the link's target opened and compared by owner.
// `from`: the checks start after this initial part of the path (at a
// component boundary); a path it does not begin is checked whole, and a
// path equal to it is not checked at all [nginx "from=part"].
//
// A caller maps ELOOP (and EMLINK) to 403, as nginx does.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <string_view>

#include "http/fwd.h"

namespace gatehouse::http {

enum class Symlinks : uint8_t { Follow, Refuse, RefuseIfNotOwner };

struct SymlinkCheck {
    Symlinks mode = Symlinks::Follow;
    std::string_view from;
};

// open(2) of `path` (NUL-terminated; absolute for the checks to apply)
// with `flags` (O_CLOEXEC is added): the descriptor, or -1 with errno.
int open_file(const char* path, int flags, const SymlinkCheck& check);

// stat(2) of `path`, the same way: 0, or -1 with errno.
int stat_file(const char* path, struct stat* st, const SymlinkCheck& check);

// The request's location's "disable_symlinks", its from= evaluated in the
// request's arena.
SymlinkCheck symlink_check(Request& r);

}  // namespace gatehouse::http
