// Listening sockets: bound by the master, inherited by the workers.
#pragma once

#include <sys/socket.h>

#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "event/listen_spec.h"

namespace gatehouse::process {

struct Listening {
    int fd = -1;                       // owned: closed by close_listening()
    std::string text;                  // "127.0.0.1:8080", for messages
    const event::ListenSpec* spec = nullptr;  // owner: the generation; null when inherited
    sockaddr_storage addr{};           // getsockname(): what the socket is bound to
    socklen_t addr_len = 0;
};

// Binds every socket the modules asked for. A socket of `reuse` bound to
// the configured address (by getsockname(), not by how the address is
// written) is taken over rather than bound again, so that a reload or a
// binary upgrade never refuses a connection; it is removed from `reuse`,
// where the caller finds the sockets no longer configured. The error names
// the call, the address and errno.
Result<std::vector<Listening>> open_listening(const std::vector<event::ListenSpec>& specs,
                                             std::vector<Listening>* reuse);
void close_listening(std::vector<Listening>& ls);
// Deletes the files of the UNIX-domain sockets in ls (still sockets: a
// file put there since is left alone), as nginx does when the master
// exits or a reload drops such a listener; not when a new binary took the
// sockets over (it serves them).
void remove_unix_socket_files(const std::vector<Listening>& ls);

// The environment variable that hands listening sockets to a new binary
// (nginx's NGINX): their numbers, each followed by ';'.
inline constexpr const char* kInheritEnv = "GATEHOUSE";
std::string listening_env(const std::vector<Listening>& ls);

// The sockets named by a GATEHOUSE value, for open_listening() to adopt.
// Each must be a listening stream socket; what is not is logged and left
// alone, an invalid number ends the list (logged at emerg, as nginx). The
// adopted sockets get FD_CLOEXEC back.
std::vector<Listening> inherit_listening(std::string_view env);

}  // namespace gatehouse::process
