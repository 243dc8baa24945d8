// The text of a socket address as the variables show it: "192.0.2.1",
// "2001:db8::1" (no brackets), "unix:"; and its port (0 for UNIX).
// Shared by the front-ends (HTTP/1 and HTTP/2 connections), which keep
// the text of their peer for $remote_addr.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>

namespace gatehouse {

// Writes the text into out (len bytes, INET6_ADDRSTRLEN is enough), ""
// for a null or unknown address.
void addr_text(const sockaddr* sa, char* out, size_t len, uint16_t* port);

}  // namespace gatehouse
