// An http block to read upstream configuration into, as load_cycle would:
// snippets are walked in the http context one after the other (each its
// own "file", so messages name it and count lines from 1), then
// upstream_module's postconfiguration runs.
#pragma once

#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "core/log.h"
#include "conf/registry.h"
#include "core/shm.h"
#include "http/core_module.h"
#include "upstream/upstream.h"

namespace gatehouse::test {

// Sends the error log to a file for the test's lifetime, to check lines
// (and keep the test's output quiet).
struct CapturedLog {
    CapturedLog() {
        char tmpl[] = "/tmp/gh_upstream_test_XXXXXX";
        int fd = mkstemp(tmpl);
        REQUIRE(fd >= 0);
        ::close(fd);
        path = tmpl;
        log.add(path, log::Level::Info);
        REQUIRE(log.open().ok());
        log::set_error_log(&log);
    }
    ~CapturedLog() {
        log::set_error_log(nullptr);
        ::unlink(path.c_str());
    }
    CapturedLog(const CapturedLog&) = delete;
    CapturedLog& operator=(const CapturedLog&) = delete;
    std::string text() const {
        std::ifstream f(path);
        std::stringstream ss;
        ss << f.rdbuf();
        return ss.str();
    }
    std::string path;
    log::ErrorLog log;
};

class HttpConf {
public:
    // `zones`: where "zone" declares its zone, as a generation's ZoneSet
    // (null: "zone" is refused).
    explicit HttpConf(shm::ZoneSet* zones = nullptr) : cx_(arena_, "/p/", "/p/conf/") {
        init_modules();
        cx_.set_zones(zones);
        cx_.install_level(conf::Level::Core, cx_.create_level(conf::Level::Core));
        REQUIRE(walk_main("main.conf", "http { }\n").ok());
        // What the http block's walk had: its server and location levels,
        // for directives of other modules that snippets may hold.
        auto* hm = cx_.conf<http::HttpMainConf>(http::http_core_module, conf::Level::Main);
        REQUIRE(hm != nullptr);
        cx_.install_level(conf::Level::Srv, hm->srv_confs);
        cx_.install_level(conf::Level::Loc, hm->loc_confs);
    }

    conf::Ctx& cx() { return cx_; }

    // Walks `text` as the body of the http block, from a file named `name`.
    Status add(const std::string& name, std::string text) {
        auto* t = parse(name, std::move(text));
        if (!t) return make_error(parse_error_);
        return cx_.walk(t->nodes, conf::kHttp);
    }

    // The first directive of `text` (a "proxy_pass" line, say), not
    // walked: the node find_or_add() reports errors against.
    const conf::Node& node(const std::string& name, std::string text) {
        auto* t = parse(name, std::move(text));
        REQUIRE(t != nullptr);
        REQUIRE_FALSE(t->nodes.empty());
        return t->nodes[0];
    }

    Status finish() { return upstream::upstream_module.postconfiguration(cx_); }

    upstream::UpstreamMainConf& main() {
        auto* m = cx_.conf<upstream::UpstreamMainConf>(upstream::upstream_module, conf::Level::Main);
        REQUIRE(m != nullptr);
        return *m;
    }

    // The upstream block or implicit group called `name`, or null.
    upstream::UpstreamConf* find(const std::string& name) {
        for (auto* u : main().upstreams)
            if (u->name == name) return u;
        return nullptr;
    }

private:
    conf::Tree* parse(const std::string& name, std::string text) {
        trees_.push_back(std::make_unique<conf::Tree>());
        conf::ParseOptions po;
        po.conf_dir = "/p/conf/";
        auto s = conf::parse_text(name, std::move(text), po, *trees_.back());
        if (!s) {
            parse_error_ = s.message();
            return nullptr;
        }
        return trees_.back().get();
    }

    Status walk_main(const std::string& name, std::string text) {
        auto* t = parse(name, std::move(text));
        REQUIRE(t != nullptr);
        return cx_.walk(t->nodes, conf::kMain);
    }

    Arena arena_;
    std::vector<std::unique_ptr<conf::Tree>> trees_;  // nodes point into them
    conf::Ctx cx_;
    std::string parse_error_;
};

// One upstream block "u" with a server 127.0.0.1:8001, :8002... per entry
// of `params` (its parameters, "" for none), ready for a PeerPicker.
class Group {
public:
    explicit Group(const std::vector<std::string>& params, std::string extra = "",
                   shm::ZoneSet* zones = nullptr)
        : conf_(zones) {
        std::string text = "upstream u {\n";
        for (size_t i = 0; i < params.size(); ++i)
            text += "  server 127.0.0.1:" + std::to_string(8001 + i) + " " + params[i] + ";\n";
        text += extra + "}\n";
        auto s = conf_.add("u.conf", text);
        REQUIRE_MESSAGE(s.ok(), (s.ok() ? "" : s.message()));
        REQUIRE(conf_.finish().ok());
        u_ = conf_.find("u");
        REQUIRE(u_ != nullptr);
    }

    upstream::UpstreamConf& u() { return *u_; }
    HttpConf& conf() { return conf_; }
    // 'a' for the peer of the first server line, 'b' for the second...
    char letter(const upstream::Peer* p) const {
        if (!p) return '-';
        for (size_t i = 0; i < u_->servers.size(); ++i)
            if (p->server == &u_->servers[i]) return static_cast<char>('a' + i);
        return '?';
    }

private:
    HttpConf conf_;
    upstream::UpstreamConf* u_ = nullptr;
};

}  // namespace gatehouse::test
