#include "http/mmdb.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/arena.h"
#include "temp_dir.h"

using namespace gatehouse;
using namespace gatehouse::http;

namespace {

std::string render(const MMDB_entry_data_s& d) {
    Arena a;
    std::string_view out = "unset";
    if (!render_entry(d, a, &out)) return "<none>";
    return std::string(out);
}

MMDB_entry_data_s data(uint32_t type) {
    MMDB_entry_data_s d{};
    d.has_data = true;
    d.type = type;
    return d;
}

// A one-record database written with MaxMind::DB::Writer (Debian
// libmaxmind-db-writer-perl); false when perl or the module is missing.
bool write_db(const std::string& path, const std::string& iso) {
    const std::string script = path + ".pl";
    FILE* f = std::fopen(script.c_str(), "w");
    REQUIRE(f != nullptr);
    std::fprintf(f,
                 "use MaxMind::DB::Writer::Tree;\n"
                 "my $t = MaxMind::DB::Writer::Tree->new(ip_version => 6, record_size => 24,\n"
                 "  database_type => 'GH-Unit', languages => ['en'], description => { en => 'unit' },\n"
                 "  remove_reserved_networks => 0,\n"
                 "  map_key_type_callback => sub { $_[0] eq 'country' ? 'map' : 'utf8_string' });\n"
                 "$t->insert_network('10.0.0.0/8', { country => { iso_code => '%s' } });\n"
                 "open my $fh, '>:raw', '%s.tmp' or die; $t->write_tree($fh); close $fh;\n"
                 "rename '%s.tmp', '%s' or die;\n",
                 iso.c_str(), path.c_str(), path.c_str(), path.c_str());
    std::fclose(f);
    const std::string cmd = "perl " + script + " 2>/dev/null";
    return std::system(cmd.c_str()) == 0;
}

std::string country(const MmdbSource& s, const char* ip) {
    int gai = 0, err = 0;
    MMDB_lookup_result_s r = MMDB_lookup_string(&s.current()->db(), ip, &gai, &err);
    if (gai != 0 || err != MMDB_SUCCESS || !r.found_entry) return "<none>";
    MMDB_entry_data_s d;
    if (MMDB_get_value(&r.entry, &d, "country", "iso_code", nullptr) != MMDB_SUCCESS) return "<none>";
    return render(d);
}

}  // namespace

TEST_CASE("http/mmdb: values are rendered as the third-party module does") {
    auto s = data(MMDB_DATA_TYPE_UTF8_STRING);
    s.utf8_string = "München";
    s.data_size = 8;
    CHECK(render(s) == "München");

    auto b = data(MMDB_DATA_TYPE_BYTES);
    static const uint8_t raw[] = {'x', 0, 'y'};
    b.bytes = raw;
    b.data_size = 3;
    CHECK(render(b) == std::string("x\0y", 3));

    auto t = data(MMDB_DATA_TYPE_BOOLEAN);
    t.boolean = true;
    CHECK(render(t) == "1");
    t.boolean = false;
    CHECK(render(t) == "0");

    auto u16 = data(MMDB_DATA_TYPE_UINT16);
    u16.uint16 = 65535;
    CHECK(render(u16) == "65535");
    auto u32 = data(MMDB_DATA_TYPE_UINT32);
    u32.uint32 = 4294967295u;
    CHECK(render(u32) == "4294967295");
    auto i32 = data(MMDB_DATA_TYPE_INT32);
    i32.int32 = -42;
    CHECK(render(i32) == "-42");
    auto u64 = data(MMDB_DATA_TYPE_UINT64);
    u64.uint64 = 18446744073709551615ull;
    CHECK(render(u64) == "18446744073709551615");

    auto u128 = data(MMDB_DATA_TYPE_UINT128);
#if MMDB_UINT128_IS_BYTE_ARRAY
    for (int i = 0; i < 16; ++i) u128.uint128[i] = static_cast<uint8_t>(i == 0 ? 0xab : i == 15 ? 1 : 0);
#else
    u128.uint128 = (static_cast<mmdb_uint128_t>(0xab) << 120) | 1;
#endif
    CHECK(render(u128) == "0xab000000000000000000000000000001");

    auto dbl = data(MMDB_DATA_TYPE_DOUBLE);
    dbl.double_value = 51.5074;
    CHECK(render(dbl) == "51.50740");
    dbl.double_value = -0.1278;
    CHECK(render(dbl) == "-0.12780");
    auto flt = data(MMDB_DATA_TYPE_FLOAT);
    flt.float_value = 0.5f;
    CHECK(render(flt) == "0.50000");
}

TEST_CASE("http/mmdb: maps, arrays and no data have no text") {
    CHECK(render(data(MMDB_DATA_TYPE_MAP)) == "<none>");
    CHECK(render(data(MMDB_DATA_TYPE_ARRAY)) == "<none>");
    auto none = data(MMDB_DATA_TYPE_UTF8_STRING);
    none.has_data = false;
    CHECK(render(none) == "<none>");
}

TEST_CASE("http/mmdb: an empty string is a value, not a missing one") {
    auto s = data(MMDB_DATA_TYPE_UTF8_STRING);
    s.utf8_string = "";
    s.data_size = 0;
    Arena a;
    std::string_view out;
    REQUIRE(render_entry(s, a, &out));
    CHECK(out.empty());
    CHECK(out.data() != nullptr);
}

TEST_CASE("http/mmdb: open errors name the call, the file and the reason") {
    test::TempDir dir;
    auto missing = MmdbFile::open(dir / "none.mmdb");
    REQUIRE_FALSE(missing);
    CHECK(missing.message() == "MMDB_open() \"" + (dir / "none.mmdb") +
                                   "\" failed (Error opening the specified MaxMind DB file: "
                                   "No such file or directory)");

    const std::string junk = dir.write("junk.mmdb", "not a database\n");
    auto bad = MmdbFile::open(junk);
    REQUIRE_FALSE(bad);
    CHECK(bad.message() == "MMDB_open() \"" + junk + "\" failed (The MaxMind DB file contains invalid metadata)");

    MmdbSource src(junk, 1000);
    CHECK(src.load(100).message() == bad.message());
}

TEST_CASE("http/mmdb: auto_reload stats once per interval and swaps a changed file") {
    test::TempDir dir;
    const std::string path = dir / "db.mmdb";
    if (!write_db(path, "AA")) {
        MESSAGE("perl MaxMind::DB::Writer missing: skipped");
        return;
    }
    MmdbSource src(path, 1000);
    REQUIRE(src.load(50));
    CHECK(src.last_check() == 50);
    CHECK(src.last_change() == 50);
    CHECK(country(src, "10.1.2.3") == "AA");
    CHECK(country(src, "11.1.2.3") == "<none>");

    // A worker's first use checks at once; nothing changed, nothing swapped.
    auto first = src.current();
    src.check(10'000, 60);
    CHECK(src.last_check() == 60);
    CHECK(src.current() == first);

    REQUIRE(write_db(path, "BB"));
    // Within the interval: no stat(), the old file stays.
    src.check(10'999, 61);
    CHECK(src.last_check() == 60);
    CHECK(country(src, "10.1.2.3") == "AA");
    // The interval is over: the renamed file is another inode, swapped in.
    src.check(11'000, 62);
    CHECK(src.last_check() == 62);
    CHECK(src.last_change() == 62);
    CHECK(country(src, "10.1.2.3") == "BB");
    // Whoever held the first file still reads it.
    int gai = 0, err = 0;
    MMDB_lookup_result_s r = MMDB_lookup_string(&first->db(), "10.1.2.3", &gai, &err);
    CHECK(r.found_entry);

    // A broken file keeps the one in use, and is not opened again until
    // it changes.
    const std::string junk = dir.write("junk", "broken\n");
    REQUIRE(::rename(junk.c_str(), path.c_str()) == 0);
    auto good = src.current();
    src.check(12'000, 63);
    CHECK(src.current() == good);
    CHECK(src.last_change() == 62);
    CHECK(country(src, "10.1.2.3") == "BB");

    REQUIRE(write_db(path, "CC"));
    src.check(13'000, 64);
    CHECK(country(src, "10.1.2.3") == "CC");
    CHECK(src.last_change() == 64);
}

TEST_CASE("http/mmdb: without auto_reload the file is never checked") {
    test::TempDir dir;
    const std::string path = dir / "db.mmdb";
    if (!write_db(path, "AA")) return;
    MmdbSource src(path, 0);
    REQUIRE(src.load(50));
    REQUIRE(write_db(path, "BB"));
    src.check(1'000'000, 99);
    CHECK(src.last_check() == 50);
    CHECK(country(src, "10.1.2.3") == "AA");
}
