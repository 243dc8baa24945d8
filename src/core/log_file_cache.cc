#include "core/log_file_cache.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "core/log.h"

namespace gatehouse::log {

bool LogFileCache::same_file(const Entry& e) {
    struct stat st;
    return ::stat(e.path.c_str(), &st) == 0 && st.st_dev == e.dev && st.st_ino == e.ino;
}

void LogFileCache::forget(List::iterator it) {
    if (it->fd >= 0) ::close(it->fd);
    index_.erase(it->path);
    lru_.erase(it);
}

void LogFileCache::clear() {
    for (Entry& e : lru_)
        if (e.fd >= 0) ::close(e.fd);
    index_.clear();
    lru_.clear();
}

bool LogFileCache::holds(const std::string& path) const {
    auto it = index_.find(path);
    return it != index_.end() && it->second->fd >= 0;
}

int LogFileCache::open(const std::string& path, uint64_t now, bool* close_after) {
    *close_after = true;
    // Paths not used within "inactive" are forgotten, descriptors closed:
    // the list is in order of use, so they are at its end.
    while (!lru_.empty() && now - lru_.back().accessed > limits_.inactive_ms) forget(std::prev(lru_.end()));
    auto found = index_.find(path);
    List::iterator it = found == index_.end() ? lru_.end() : found->second;
    if (it != lru_.end() && it->fd >= 0) {
        if (now - it->checked < limits_.valid_ms || same_file(*it)) {
            if (now - it->checked >= limits_.valid_ms) it->checked = now;
            it->accessed = now;
            ++it->uses;
            lru_.splice(lru_.begin(), lru_, it);
            *close_after = false;
            return it->fd;
        }
        // Rotated or removed: the next open finds the file the name has now.
        ::close(it->fd);
        it->fd = -1;
    }
    int fd = open_log_file(path);
    if (fd < 0) return -1;
    if (it == lru_.end()) {
        // Room for one more: the least recently used path goes.
        while (!lru_.empty() && lru_.size() >= limits_.max) forget(std::prev(lru_.end()));
        lru_.push_front(Entry{.path = path});
        it = lru_.begin();
        index_.emplace(it->path, it);
    } else {
        lru_.splice(lru_.begin(), lru_, it);
    }
    it->accessed = now;
    ++it->uses;
    if (it->uses < limits_.min_uses) return fd;
    struct stat st;
    if (::fstat(fd, &st) != 0) return fd;
    it->fd = fd;
    it->dev = st.st_dev;
    it->ino = st.st_ino;
    it->checked = now;
    *close_after = false;
    return fd;
}

}  // namespace gatehouse::log
