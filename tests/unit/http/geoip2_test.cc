// The geoip2 module on the protocol-neutral path (TestStream: the client
// is 192.0.2.7): the variables of a request and what they cost. The
// database is written by MaxMind::DB::Writer (Debian
// libmaxmind-db-writer-perl); without it the cases say so and pass.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "http/mmdb.h"
#include "test_stream.h"

using gatehouse::test::Exchange;
using gatehouse::test::Site;
using gatehouse::test::TempDir;
namespace http = gatehouse::http;

namespace {

bool write_db(const std::string& path) {
    const std::string script = path + ".pl";
    FILE* f = std::fopen(script.c_str(), "w");
    REQUIRE(f != nullptr);
    std::fprintf(f,
                 "use MaxMind::DB::Writer::Tree;\n"
                 "my %%t = (country => 'map', city => 'map', names => 'map', location => 'map',\n"
                 "  subdivisions => ['array', 'map'], latitude => 'double');\n"
                 "my $t = MaxMind::DB::Writer::Tree->new(ip_version => 6, record_size => 24,\n"
                 "  database_type => 'GH-Unit', languages => ['en'], description => { en => 'unit' },\n"
                 "  remove_reserved_networks => 0,\n"
                 "  map_key_type_callback => sub { $t{$_[0]} // 'utf8_string' });\n"
                 "$t->insert_network('192.0.2.0/24', { country => { iso_code => 'DC', names => { en => 'Docland' } },\n"
                 "  city => { names => { en => 'Doc City' } }, location => { latitude => 51.5 },\n"
                 "  subdivisions => [ { iso_code => 'ENG' } ] });\n"
                 "$t->insert_network('2001:db8::/32', { country => { iso_code => 'SX' } });\n"
                 "open my $fh, '>:raw', '%s' or die; $t->write_tree($fh); close $fh;\n",
                 path.c_str());
    std::fclose(f);
    const std::string cmd = "perl " + script + " 2>/dev/null";
    return std::system(cmd.c_str()) == 0;
}

std::string body(Site& s, const std::string& target, const std::string& extra = {}) {
    Exchange x(s, "GET " + target + " HTTP/1.1\r\nHost: localhost\r\n" + extra + "\r\n");
    x.run();
    REQUIRE(x.stream.ended);
    REQUIRE(x.status() == 200);
    return x.stream.body;
}

}  // namespace

TEST_CASE("http/geoip2: the variables of one database cost one lookup per request") {
    TempDir d;
    const std::string a = d / "a.mmdb", b = d / "b.mmdb";
    if (!write_db(a) || !write_db(b)) {
        MESSAGE("perl MaxMind::DB::Writer missing: skipped");
        return;
    }
    Site s("geoip2 " + a + R"( {
                $cc country iso_code;
                $cn country names en;
                $city city names en;
                $lat location latitude;
                $sub subdivisions 0 iso_code;
                $miss default=none country names de;
                $x source=$http_x_addr country iso_code;
            }
            geoip2 )" + b + R"( {
                $b_cc country iso_code;
                $b_city city names en;
            }
            server { listen 127.0.0.1:8080;
                location / { return 200 "$cc|$cn|$city|$lat|$sub|$miss"; }
                location /two { return 200 "$cc|$cn|$b_cc|$b_city"; }
                location /x { return 200 "$x|$cc|$x"; }
            })");

    uint64_t before = http::mmdb_lookup_count();
    CHECK(body(s, "/") == "DC|Docland|Doc City|51.50000|ENG|none");
    CHECK(http::mmdb_lookup_count() - before == 1);

    before = http::mmdb_lookup_count();
    CHECK(body(s, "/two") == "DC|Docland|DC|Doc City");
    CHECK(http::mmdb_lookup_count() - before == 2);

    // source= with the client's own address: the same lookup serves both.
    before = http::mmdb_lookup_count();
    CHECK(body(s, "/x", "X-Addr: 192.0.2.7\r\n") == "DC|DC|DC");
    CHECK(http::mmdb_lookup_count() - before == 1);
    // Another address is another lookup, each variable cached once.
    before = http::mmdb_lookup_count();
    CHECK(body(s, "/x", "X-Addr: 2001:db8::1\r\n") == "SX|DC|SX");
    CHECK(http::mmdb_lookup_count() - before == 2);
    // Not an address: no lookup at all.
    before = http::mmdb_lookup_count();
    CHECK(body(s, "/x", "X-Addr: nowhere\r\n") == "|DC|");
    CHECK(http::mmdb_lookup_count() - before == 1);
}
