// Tests of src/http/ocsp_reply.h: the reading of a responder's reply
// (the exchange itself is tests/integration/test_ocsp_stapling.py's).
#include "http/ocsp_reply.h"

#include <doctest/doctest.h>

#include <string>

using namespace gatehouse::http;
using State = ResponderReply::State;

namespace {

constexpr std::string_view kHead =
    "HTTP/1.0 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: 5\r\n\r\n";

}  // namespace

TEST_CASE("http/ocsp_reply: a reply framed by Content-Length") {
    std::string in(kHead);
    ResponderReply r;
    CHECK(r.feed(in.substr(0, 10), false) == State::NeedMore);
    CHECK(r.feed(in, false) == State::NeedMore);
    in += "ab";
    CHECK(r.feed(in, false) == State::NeedMore);
    in += "cdeXTRA";  // bytes past the length are not the body
    REQUIRE(r.feed(in, false) == State::Done);
    CHECK(r.body() == "abcde");
    CHECK(r.feed(in, true) == State::Done);  // stays done
}

TEST_CASE("http/ocsp_reply: a reply read until the responder closes") {
    std::string in = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: Application/OCSP-Response; x=1\r\n\r\nDER";
    ResponderReply r;
    CHECK(r.feed(in, false) == State::NeedMore);
    REQUIRE(r.feed(in, true) == State::Done);
    CHECK(r.body() == "DER");
}

TEST_CASE("http/ocsp_reply: replies that are refused, and why") {
    auto error_of = [](std::string_view in, bool eof) {
        ResponderReply r;
        REQUIRE(r.feed(in, eof) == State::Error);
        CHECK(r.feed(in, eof) == State::Error);
        return r.error();
    };
    CHECK(error_of("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false) == "OCSP responder sent status 404");
    CHECK(error_of("HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n", false) ==
          "OCSP responder sent invalid \"Content-Type\" header: \"text/html\"");
    CHECK(error_of("HTTP/1.0 200 OK\r\n\r\n", false) == "OCSP responder sent invalid \"Content-Type\" header: \"\"");
    CHECK(error_of("HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nTransfer-Encoding: chunked\r\n\r\n",
                   false) == "OCSP responder sent invalid response (chunked)");
    CHECK(error_of("SSH-2.0-OpenSSH\r\n\r\n", false).starts_with("OCSP responder sent invalid response ("));
    CHECK(error_of("HTTP/1.0 200 OK\r\nContent-Ty", true) == "OCSP responder prematurely closed connection");
    CHECK(error_of(std::string(kHead) + "abc", true) == "OCSP responder prematurely closed connection");
    CHECK(error_of("", true) == "OCSP responder prematurely closed connection");
}
