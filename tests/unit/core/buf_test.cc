#include "core/buf.h"

#include <doctest/doctest.h>

#include <memory_resource>
#include <string>
#include <string_view>
#include <vector>

#include "objs/gh_config.h"

using gatehouse::Buf;
using gatehouse::BufVec;
using gatehouse::Chain;
using gatehouse::Slab;
using gatehouse::SlabRef;

namespace {

// A Buf over a slab holding `text`: the slab's reference count shows
// whether a move or a clear leaked or dropped a reference.
Buf slab_buf(std::string_view text, SlabRef* keep = nullptr) {
    Buf b;
    b.slab = SlabRef::adopt(Slab::make(text.size()));
    char* p = b.slab.get()->data();
    text.copy(p, text.size());
    b.pos = p;
    b.last = p + text.size();
    if (keep) *keep = b.slab;
    return b;
}

std::string texts(const BufVec& v) {
    std::string s;
    for (const Buf& b : v) s += std::string(b.view()) + "|";
    return s;
}

}  // namespace

TEST_CASE("BufVec: in place, then out of place, in order") {
    std::pmr::monotonic_buffer_resource arena;
    BufVec v(&arena);
    SlabRef first;
    v.push_back(slab_buf("a", &first));
    v.push_back(slab_buf("b"));
    CHECK(texts(v) == "a|b|");
    v.push_back(slab_buf("c"));  // past kInline: moved out
    v.push_back(slab_buf("d"));
    v.push_back(slab_buf("e"));
    CHECK(v.size() == 5);
    CHECK(texts(v) == "a|b|c|d|e|");
    CHECK(first.get()->refs() == 2);  // moved, never copied nor dropped
    v.erase_front(2);
    CHECK(texts(v) == "c|d|e|");
    CHECK(first.get()->refs() == 1);  // the erased Buf let its slab go
    v.insert(v.begin() + 1, Buf::memory("x"));
    CHECK(texts(v) == "c|x|d|e|");
    v.insert(v.end(), Buf::memory("z"));
    CHECK(texts(v) == "c|x|d|e|z|");
    v.clear();
    CHECK(v.empty());
}

TEST_CASE("BufVec: swap between in place and out of place") {
    std::pmr::monotonic_buffer_resource arena;
    for (size_t na : {0, 1, 2, 3, 6}) {
        for (size_t nb : {0, 1, 2, 5}) {
            BufVec a(&arena), b(&arena);
            std::string ta, tb;
            for (size_t i = 0; i < na; ++i) {
                a.push_back(slab_buf(std::string(1, static_cast<char>('a' + i))));
                ta += std::string(1, static_cast<char>('a' + i)) + "|";
            }
            for (size_t i = 0; i < nb; ++i) {
                b.push_back(slab_buf(std::string(1, static_cast<char>('p' + i))));
                tb += std::string(1, static_cast<char>('p' + i)) + "|";
            }
            a.swap(b);
            CAPTURE(na);
            CAPTURE(nb);
            CHECK(texts(a) == tb);
            CHECK(texts(b) == ta);
        }
    }
}

TEST_CASE("BufVec: a default resource gets its memory back") {
    // new_delete_resource: an out-of-place buffer is deallocated (ASan
    // tells a leak or a double free).
    BufVec v(std::pmr::new_delete_resource());
    for (int i = 0; i < 20; ++i) v.push_back(Buf::memory("x"));
    v.erase_front(19);
    CHECK(v.size() == 1);
}

TEST_CASE("Chain: append into an empty chain keeps the Bufs and the end") {
    std::pmr::monotonic_buffer_resource arena;
    Chain in(&arena), out(&arena);
    in.push(Buf::memory("head"));
    Buf end = Buf::memory("body");
    end.last_buf = true;
    in.push(std::move(end));
    out.append(in);
    CHECK(in.empty());
    CHECK(out.size() == 2);
    CHECK(out.last());
    CHECK(out.bytes() == 8);
    Chain more(&arena);
    more.push(Buf::memory("x"));
    out.append(more);  // not empty: moved one by one
    CHECK(out.size() == 3);
    CHECK(more.empty());
}

TEST_CASE("Slab: freed slabs of a page or more are kept, up to the bound, and released") {
    namespace sc = gatehouse::slab_cache;
    gatehouse::release_slabs();
    REQUIRE(sc::kept_bytes() == 0);

    Slab* a = Slab::make(16384);
    a->data()[0] = 'x';
    a->unref();
#if GH_ASAN
    // Freed at once, so that AddressSanitizer sees a use after free.
    CHECK(sc::kept_bytes() == 0);
#else
    CHECK(sc::kept_bytes() == 16384);
    // The same size takes it back; another size does not.
    Slab* other = Slab::make(8192);
    CHECK(sc::kept_bytes() == 16384);
    Slab* b = Slab::make(16384);
    CHECK(b == a);
    CHECK(b->capacity() == 16384);
    CHECK(b->refs() == 1);
    CHECK(sc::kept_bytes() == 0);
    b->unref();
    other->unref();
    CHECK(sc::kept_bytes() == 16384 + 8192);

    // Small slabs stay with the allocator.
    Slab::make(1024)->unref();
    CHECK(sc::kept_bytes() == 16384 + 8192);

    // Never more than kMaxBytes, whatever is freed.
    std::vector<Slab*> many;
    for (size_t i = 0; i < 2 * sc::kMaxBytes / 16384; ++i) many.push_back(Slab::make(16384));
    for (Slab* s : many) s->unref();
    CHECK(sc::kept_bytes() <= sc::kMaxBytes);
    CHECK(sc::kept_bytes() > sc::kMaxBytes - 16384);

    // At most kSizes sizes; a size with nothing kept gives its place up.
    gatehouse::release_slabs();
    std::vector<Slab*> sizes;
    for (size_t i = 0; i <= sc::kSizes; ++i) sizes.push_back(Slab::make(4096 * (i + 1)));
    for (Slab* s : sizes) s->unref();
    size_t want = 0;
    for (size_t i = 0; i < sc::kSizes; ++i) want += 4096 * (i + 1);
    CHECK(sc::kept_bytes() == want);
    Slab::make(4096)->unref();  // its place is taken back at once
    CHECK(sc::kept_bytes() == want);
    Slab* first = Slab::make(4096);  // empties the 4096 list ...
    Slab::make(4096 * (sc::kSizes + 1))->unref();  // ... whose place the new size takes
    CHECK(sc::kept_bytes() == want - 4096 + 4096 * (sc::kSizes + 1));
    first->unref();  // no place left for 4096: freed
    CHECK(sc::kept_bytes() == want - 4096 + 4096 * (sc::kSizes + 1));
#endif
    gatehouse::release_slabs();
    CHECK(sc::kept_bytes() == 0);
}
