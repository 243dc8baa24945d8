// libFuzzer target for the DNS message codec (src/core/dns_message.h):
// what a name server, or anyone able to send the resolver a datagram,
// can make it read.
//
// Input: one byte choosing the asked type (A or AAAA) and the asked name
// among a few, then the bytes of the message, whose first two bytes are
// taken as the query's ID so that the checks past the ID are reached.
// Checked for every input:
// - parse_answer never reads outside the message (ASan) nor loops;
// - an accepted answer is well formed: addresses only with NOERROR and
//   no TC, none with TC, a CNAME only without addresses and normalized;
// - the name of the input, when it normalizes, builds a query that
//   parses back as an empty answer to itself.
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "core/assert.h"
#include "core/dns_message.h"

using namespace gatehouse;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    static constexpr std::string_view kNames[] = {"example.com", "a.test", "www.example.com", "x"};
    const uint8_t sel = data[0];
    const uint16_t qtype = (sel & 1) ? dns::kTypeAaaa : dns::kTypeA;
    const std::string_view name = kNames[(sel >> 1) % 4];
    std::span<const uint8_t> msg(data + 1, size - 1);
    const uint16_t id = msg.size() >= 2 ? static_cast<uint16_t>(msg[0] << 8 | msg[1]) : 0;

    auto a = dns::parse_answer(msg, id, name, qtype);
    if (a) {
        GH_CHECK(!a->truncated || (a->addrs.empty() && a->cname.empty()));
        GH_CHECK(a->addrs.empty() || (a->rcode == dns::kNoError && a->cname.empty()));
        GH_CHECK(a->cname.empty() || dns::normalize_name(a->cname) == a->cname);
        GH_CHECK(a->ttl <= 0x7fffffffu);
    } else {
        GH_CHECK(!a.message().empty());
    }

    // The message bytes read as a name: normalize, then round trip.
    std::string_view text(reinterpret_cast<const char*>(msg.data()), msg.size());
    std::string n = dns::normalize_name(text);
    if (!n.empty()) {
        GH_CHECK(n.size() <= 253);
        auto q = dns::build_query(id, n, qtype);
        GH_CHECK(q.ok());
        std::vector<uint8_t> resp = *q;
        resp[2] |= 0x80;  // QR
        auto back = dns::parse_answer(resp, id, n, qtype);
        GH_CHECK(back.ok() && back->addrs.empty() && back->rcode == dns::kNoError);
    }
    return 0;
}
