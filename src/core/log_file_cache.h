// Descriptors of access log files whose names have variables, kept open
// between requests ("open_log_file_cache" [nginx open_file_cache]).
//
// Without the cache such a file is opened and closed for every line. With
// it, a path written to at least `min_uses` times, each within `inactive`
// of the one before, keeps its descriptor; at most `max` paths are known
// at once (the least recently used one is forgotten, and its descriptor
// closed, to make room for another); a kept descriptor is checked against
// the path every `valid`: if the path is gone or names another file (log
// rotation), it is closed and the path opened anew. A path whose opening
// fails is not remembered.
//
// Ownership and threads: one per "open_log_file_cache" directive, owned by
// the configuration generation; each process (every worker) fills its own
// copy after fork(), which the event loop's thread alone uses. Time comes
// from the caller (the loop's cached clock, milliseconds), so that tests
// can move it.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <list>
#include <string>
#include <string_view>
#include <unordered_map>

namespace gatehouse::log {

class LogFileCache {
public:
    struct Limits {
        size_t max = 1;              // "max="
        uint64_t inactive_ms = 10000;  // "inactive=" (nginx's default 10s)
        uint64_t min_uses = 1;       // "min_uses="
        uint64_t valid_ms = 60000;   // "valid=" (nginx's default 60s)
    };

    explicit LogFileCache(Limits l) : limits_(l) {}
    LogFileCache(const LogFileCache&) = delete;
    LogFileCache& operator=(const LogFileCache&) = delete;
    // Closes every descriptor it holds.
    ~LogFileCache() { clear(); }

    // A descriptor to append a line to `path` (log::open_log_file), or -1
    // with errno set. `*close_after`: the descriptor is not kept, the
    // caller closes it once the line is written.
    int open(const std::string& path, uint64_t now_ms, bool* close_after);

    // Closes and forgets everything (USR1: rotated files are released).
    void clear();

    size_t size() const { return lru_.size(); }
    // Whether `path` has a descriptor kept open (for tests).
    bool holds(const std::string& path) const;

private:
    struct Entry {
        std::string path;
        int fd = -1;             // kept descriptor; -1 while used fewer than min_uses times
        uint64_t uses = 0;
        uint64_t accessed = 0;   // ms
        uint64_t checked = 0;    // ms: when fd was last matched with the path
        dev_t dev = 0;           // the file fd is open on
        ino_t ino = 0;
    };
    using List = std::list<Entry>;  // most recently used first

    void forget(List::iterator it);
    // Does fd's file still have the name path?
    static bool same_file(const Entry& e);

    Limits limits_;
    List lru_;
    // Keys view the entries' own paths, which stay put in the list.
    std::unordered_map<std::string_view, List::iterator> index_;
};

}  // namespace gatehouse::log
