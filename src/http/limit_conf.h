// What limit_req and limit_conn parse alike: "zone=name:size" of their
// zone directives, the status and log-level directives, with nginx's
// messages; and the shared zone's table opened on it.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "conf/module.h"
#include "conf/registry.h"
#include "core/log.h"
#include "core/result.h"
#include "http/limit_table.h"

namespace gatehouse::http::limit_conf {

struct ZoneArg {
    std::string name;
    size_t size = 0;
};

// "zone=one:10m" (arg, with its "zone="). Errors: invalid zone size "x".
Result<ZoneArg> parse_zone(std::string_view arg);

// Declares the zone in the generation being loaded (`tag`: the module)
// and opens its table; `what` names the module in the key-change error.
// The error carries the directive's file:line.
Result<LimitTable> open_zone(conf::Ctx& cx, const conf::Node& n, const ZoneArg& z, const void* tag,
                             std::string_view what, std::string_view key);

// "limit_req_status 429": 400 to 599.
Result<int> parse_status(conf::Ctx& cx, const conf::Node& n);
// "limit_req_log_level warn": info, notice, warn or error.
Result<log::Level> parse_log_level(conf::Ctx& cx, const conf::Node& n);

// The setters of "limit_*_status" and "limit_*_log_level", once per level,
// for a module's location struct C.
template <typename C, std::optional<int> C::*Member>
Status set_status(conf::Ctx& cx, const conf::Node& n, C& c) {
    if (c.*Member) return cx.duplicate(n);
    auto s = parse_status(cx, n);
    if (!s) return s.error();
    c.*Member = *s;
    return {};
}
template <typename C, std::optional<log::Level> C::*Member>
Status set_log_level(conf::Ctx& cx, const conf::Node& n, C& c) {
    if (c.*Member) return cx.duplicate(n);
    auto l = parse_log_level(cx, n);
    if (!l) return l.error();
    c.*Member = *l;
    return {};
}

// The level a delay is logged at: one below the rejection's, info at the
// lowest [nginx].
inline log::Level lower(log::Level l) {
    return l == log::Level::Info ? l : static_cast<log::Level>(static_cast<int>(l) + 1);
}

}  // namespace gatehouse::http::limit_conf
