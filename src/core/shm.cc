#include "core/shm.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace gatehouse::shm {

Zone::~Zone() {
    if (addr_) ::munmap(addr_, mapped_);
}

ZoneRegistry::~ZoneRegistry() = default;

ZoneRegistry& registry() {
    static ZoneRegistry r;
    return r;
}

Zone* ZoneRegistry::find(std::string_view name) const {
    for (auto it = zones_.rbegin(); it != zones_.rend(); ++it)
        if ((*it)->name() == name) return it->get();
    return nullptr;
}

Result<ZoneRef> ZoneRegistry::acquire(std::string_view name, size_t size, const void* tag) {
    Zone* prev = find(name);
    if (prev && prev->tag() != tag)
        return make_error("shared memory zone \"" + std::string(name) + "\" is already used by another module");
    // The running generation's zone, unchanged: the same mapping. Size 0
    // means "as declared elsewhere", so it takes whatever exists.
    if (prev && (size == 0 || size == prev->size())) {
        ++prev->refs_;
        return ZoneRef{prev, true};
    }
    if (size == 0) return make_error("zero size of shared memory zone \"" + std::string(name) + "\"");
    const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    if (size > SIZE_MAX - page)
        return make_error("too large shared memory zone \"" + std::string(name) + "\"");
    const size_t mapped = (size + page - 1) / page * page;
    void* p = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        return make_error("mmap(MAP_ANONYMOUS|MAP_SHARED, " + std::to_string(size) + ") failed (" +
                          std::to_string(e) + ": " + strerror(e) + ")");
    }
    zones_.push_back(std::make_unique<Zone>(Zone::Private(), std::string(name), size, tag, p, mapped));
    Zone* z = zones_.back().get();
    z->refs_ = 1;
    return ZoneRef{z, false};
}

void ZoneRegistry::release(Zone* z) {
    if (--z->refs_ > 0) return;
    std::erase_if(zones_, [z](const std::unique_ptr<Zone>& p) { return p.get() == z; });
}

ZoneSet::~ZoneSet() {
    for (const ZoneRef& r : zones_) registry_->release(r.zone);
}

Result<ZoneRef> ZoneSet::add(std::string_view name, size_t size, const void* tag) {
    for (const ZoneRef& ref : zones_) {
        Zone* z = ref.zone;
        if (z->name() != name) continue;
        if (z->tag() != tag)
            return make_error("shared memory zone \"" + std::string(name) + "\" is already used by another module");
        if (size != 0 && size != z->size())
            return make_error("the size " + std::to_string(size) + " of shared memory zone \"" + std::string(name) +
                              "\" conflicts with already declared size " + std::to_string(z->size()));
        return ref;
    }
    auto r = registry_->acquire(name, size, tag);
    if (!r) return r.error();
    zones_.push_back(*r);
    return r;
}

}  // namespace gatehouse::shm
