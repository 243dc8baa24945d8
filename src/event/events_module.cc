#include "event/events_module.h"

#include "conf/registry.h"

namespace gatehouse::event {

namespace {

using conf::Ctx;
using conf::Node;

Status open_events(Ctx& cx, const Node& n) {
    if (cx.level(conf::Level::Events)) return cx.duplicate(n);
    // The events structs outlive this block: the generation keeps them
    // through the Events level installed below for the rest of the walk.
    conf::ConfArray a = cx.create_level(conf::Level::Events);
    cx.install_level(conf::Level::Events, a);
    return cx.walk(n.children, conf::kEvents);
}

Status set_worker_connections(Ctx& cx, const Node& n, EventsConf& c) {
    if (c.worker_connections) return cx.duplicate(n);
    auto v = conf::parse_number(n.args[0].text, 1u << 20);
    if (!v || *v < 2)
        return cx.invalid(n, make_error("invalid value \"" + n.args[0].text +
                                        "\", it must be a number from 2 to 1048576"));
    c.worker_connections = *v;
    return {};
}

Status set_use(Ctx& cx, const Node& n, EventsConf& c) {
    if (c.use) return cx.duplicate(n);
    if (n.args[0].text != "epoll")
        return cx.error(n, "invalid event type \"" + n.args[0].text + "\", only \"epoll\" is supported");
    c.use = n.args[0].text;
    return {};
}

constexpr conf::Directive kDirectives[] = {
    {"events", conf::kMain, conf::Block, conf::custom<open_events>()},
    {"worker_connections", conf::kEvents, conf::Take1, conf::custom<set_worker_connections>()},
    {"multi_accept", conf::kEvents, conf::Take1, conf::flag<&EventsConf::multi_accept>()},
    {"accept_mutex", conf::kEvents, conf::Take1, conf::flag<&EventsConf::accept_mutex>()},
    {"use", conf::kEvents, conf::Take1, conf::custom<set_use>()},
    {"worker_pipes", conf::kEvents, conf::Take1, conf::number<&EventsConf::worker_pipes>()},
};

}  // namespace

extern const conf::Module events_module{
    .name = "events",
    .directives = kDirectives,
    .events = conf::level<EventsConf>(),
};

}  // namespace gatehouse::event
