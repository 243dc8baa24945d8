// The directive registry and the walk that applies a parsed tree.
//
// Ctx is the state of one walk: the generation's arena, the prefix, the
// current context and the conf structs of the enclosing blocks. A block
// directive's handler makes the structs of the new block, installs them
// with a LevelScope and calls walk() on its children.
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "conf/module.h"
#include "conf/parser.h"
#include "core/arena.h"

namespace gatehouse::shm {
class ZoneSet;
}

namespace gatehouse::conf {

class Ctx {
public:
    Ctx(Arena& arena, std::string prefix, std::string conf_dir)
        : arena_(arena), prefix_(std::move(prefix)), conf_dir_(std::move(conf_dir)) {}

    Arena& arena() { return arena_; }
    // With a trailing slash.
    const std::string& prefix() const { return prefix_; }
    const std::string& conf_dir() const { return conf_dir_; }
    // A path from the config: absolute as written, else under the prefix.
    std::string full_path(std::string_view p) const;

    uint32_t context() const { return context_; }

    // The shared memory zones of the generation being loaded, where a
    // directive declares its zone (ZoneSet::add, see core/shm.h). Set by
    // load_cycle; null where no generation is being built (unit tests
    // that do not set one), and a directive needing a zone says so.
    shm::ZoneSet* zones() const { return zones_; }
    void set_zones(shm::ZoneSet* z) { zones_ = z; }

    // Applies the directives of a block in context `c`.
    Status walk(const std::vector<Node>& nodes, uint32_t c);

    // A fresh array of every module's struct at level `l`.
    ConfArray create_level(Level l);
    ConfArray level(Level l) const { return levels_[static_cast<int>(l)]; }
    template <typename T>
    T* conf(const Module& m, Level l) const {
        ConfArray a = level(l);
        return a ? static_cast<T*>(a[m.index]) : nullptr;
    }

    // Installs an array for a level until the walk ends (blocks that occur
    // once, like "events" and "http", whose structs the generation keeps).
    void install_level(Level l, ConfArray a) { levels_[static_cast<int>(l)] = a; }

    // Installs an array for a level for the life of the scope.
    class LevelScope {
    public:
        LevelScope(Ctx& cx, Level l, ConfArray a) : cx_(cx), l_(l), saved_(cx.level(l)) {
            cx_.levels_[static_cast<int>(l)] = a;
        }
        ~LevelScope() { cx_.levels_[static_cast<int>(l_)] = saved_; }
        LevelScope(const LevelScope&) = delete;
        LevelScope& operator=(const LevelScope&) = delete;

    private:
        Ctx& cx_;
        Level l_;
        ConfArray saved_;
    };

    // Error messages, with "in file:line" of the node.
    Error error(const Node& n, std::string_view msg) const;
    Error invalid(const Node& n, const Error& why) const;
    Error duplicate(const Node& n) const;

private:
    Status apply(const Node& n);

    Arena& arena_;
    std::string prefix_;
    std::string conf_dir_;
    uint32_t context_ = kMain;
    std::array<ConfArray, kLevels> levels_{};
    shm::ZoneSet* zones_ = nullptr;  // owner: the generation (process::Cycle)
};

// The directive with `name` allowed in `context`, if any; for tests and -T.
const Directive* find_directive(std::string_view name, uint32_t context,
                                const Module** owner = nullptr);

// Whether a block directive called `name` reads its own "include" lines
// (Directive::reads_includes); what the parser is given as
// ParseOptions::keeps_includes.
bool block_reads_includes(std::string_view name);

// The known directive closest to `name` by edit distance, or empty when
// none is close enough to suggest.
std::string_view suggest_directive(std::string_view name);

// Edit distance (insert, delete, substitute, swap of neighbours).
size_t edit_distance(std::string_view a, std::string_view b);

}  // namespace gatehouse::conf
