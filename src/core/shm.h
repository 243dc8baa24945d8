// Shared memory zones: named regions the master maps before it forks the
// workers, so that every worker sees the same bytes (the TLS session
// cache and ticket keys, the upstream groups' state; the future cache
// index, rate-limit counters, metrics).
//
// Ownership. A Zone is owned by the process-wide ZoneRegistry (the
// master's); each configuration generation holds references to the zones
// it declared through its ZoneSet. A reload builds a new ZoneSet next to
// the running one:
//
//   - a zone with the same name, size and tag as the newest one of that
//     name is reused: the same mapping at the same address, contents kept,
//     so the new workers see what the old ones wrote;
//   - a zone whose size changed gets a new zeroed mapping; the old one
//     stays mapped for the old workers and goes with their generation.
//     Resizing starts the zone empty (as nginx does): this layer cannot
//     know how to move a module's structures into a bigger region;
//   - a zone the new configuration no longer declares stays mapped until
//     the old generation is destroyed, which the master does once the
//     old generation's last worker has exited; it is unmapped then;
//   - a reload that fails destroys the new ZoneSet: the zones it created
//     are unmapped, the reused ones lose a reference and live on.
//
// The mappings are MAP_SHARED | MAP_ANONYMOUS: fork() shares them, exec()
// does not, so a binary upgrade starts with empty zones (as nginx's does).
//
// Threads: the registry and ZoneSets are used by the master's only
// thread, while it loads a configuration; workers touch the memory only
// (addr()), never the registry.
//
// Using the memory: a module lays out its structures in the zone when it
// is fresh and finds them again when it is reused. What every process
// changes is guarded by a shm::Mutex stored in the zone (core/shm_lock.h:
// robust, so a worker dying with it held does not wedge the others) or
// made of lock-free atomics. Variable-size records come from a shm::Pool
// laid out in the zone (core/shm_slab.h: a slab allocator with its own
// lock, which finds its blocks and the module's root again after a
// reload). Zones are mapped at one address in every process (before the
// fork), but what is stored in them should be offsets (Pool::ref) rather
// than pointers where it can.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace gatehouse::shm {

class ZoneRegistry;

class Zone {
    struct Private {
        explicit Private() = default;
    };

public:
    // Made by ZoneRegistry only (Private); `addr` is a mapping of `mapped`
    // bytes that the Zone now owns.
    Zone(Private, std::string name, size_t size, const void* tag, void* addr, size_t mapped)
        : name_(std::move(name)), size_(size), tag_(tag), addr_(addr), mapped_(mapped) {}
    Zone(const Zone&) = delete;
    Zone& operator=(const Zone&) = delete;
    ~Zone();  // unmaps

    std::string_view name() const { return name_; }
    // The size asked for; the mapping is that, rounded up to whole pages.
    size_t size() const { return size_; }
    // Valid until the last generation referencing the zone is destroyed;
    // in a worker, for the life of the process.
    void* addr() const { return addr_; }
    // Who declared it (e.g. &limit_req_module); two uses of one name by
    // different modules are a configuration error.
    const void* tag() const { return tag_; }
    // The number of generations (ZoneSets) referencing the zone.
    uint32_t generations() const { return refs_; }

private:
    friend class ZoneRegistry;

    std::string name_;
    size_t size_;
    const void* tag_;
    void* addr_;
    size_t mapped_;
    uint32_t refs_ = 0;
};

// What ZoneSet::add() gives a module: the zone, and whether it comes from
// the previous generation with its contents (initialise a fresh zone,
// attach to a reused one; shm::Pool::attach() does either, see
// core/shm_slab.h).
struct ZoneRef {
    Zone* zone = nullptr;
    bool reused = false;
};

// Every zone mapped in this process, by name. Not copyable; outlives every
// ZoneSet made on it.
class ZoneRegistry {
public:
    ZoneRegistry() = default;
    ZoneRegistry(const ZoneRegistry&) = delete;
    ZoneRegistry& operator=(const ZoneRegistry&) = delete;
    ~ZoneRegistry();

    // Zones mapped now (old generations' included).
    size_t mapped() const { return zones_.size(); }
    // The newest zone of that name, or null.
    Zone* find(std::string_view name) const;

private:
    friend class ZoneSet;
    Result<ZoneRef> acquire(std::string_view name, size_t size, const void* tag);
    void release(Zone* z);

    std::vector<std::unique_ptr<Zone>> zones_;  // in creation order
};

// The process's registry, made on first use and kept until exit: it
// survives every reload, and a generation (process::Cycle) holds a ZoneSet
// on it.
ZoneRegistry& registry();

// One generation's zones. Destroying it releases them (see the top).
class ZoneSet {
public:
    explicit ZoneSet(ZoneRegistry& r) : registry_(&r) {}
    ZoneSet(const ZoneSet&) = delete;
    ZoneSet& operator=(const ZoneSet&) = delete;
    ~ZoneSet();

    // Declares zone `name` of `size` bytes for this generation and maps it
    // (or reuses the previous generation's, see the top). Within one
    // generation, declaring a name again returns the same zone: with size
    // 0 ("whatever size it was declared with") or the same size and tag.
    // Errors (the caller adds the directive and file:line):
    //   zero size on first use  - zero size of shared memory zone "x"
    //   another size            - the size 2 of shared memory zone "x" conflicts with already declared size 1
    //   another tag             - shared memory zone "x" is already used by another module
    //   mmap() failure          - mmap(MAP_ANONYMOUS|MAP_SHARED, 1024) failed (12: Cannot allocate memory)
    Result<ZoneRef> add(std::string_view name, size_t size, const void* tag);

    // In the order declared, each with the status of its first declaration.
    const std::vector<ZoneRef>& zones() const { return zones_; }

private:
    ZoneRegistry* registry_;
    std::vector<ZoneRef> zones_;
};

}  // namespace gatehouse::shm
