#include "http/limit_conf.h"

#include "conf/values.h"
#include "core/shm.h"

namespace gatehouse::http::limit_conf {

Result<ZoneArg> parse_zone(std::string_view arg) {
    std::string_view v = arg.substr(5);
    size_t colon = v.rfind(':');
    if (colon == std::string_view::npos || colon == 0)
        return make_error("invalid zone size \"" + std::string(arg) + "\"");
    auto size = conf::parse_size(v.substr(colon + 1));
    if (!size) return make_error("invalid zone size \"" + std::string(arg) + "\"");
    if (*size < LimitTable::kMinZone) return make_error("zone \"" + std::string(arg) + "\" is too small");
    return ZoneArg{std::string(v.substr(0, colon)), static_cast<size_t>(*size)};
}

Result<LimitTable> open_zone(conf::Ctx& cx, const conf::Node& n, const ZoneArg& z, const void* tag,
                             std::string_view what, std::string_view key) {
    shm::ZoneSet* zones = cx.zones();
    if (!zones) return cx.error(n, "shared memory is not available here");
    auto ref = zones->add(z.name, z.size, tag);
    if (!ref) return cx.error(n, ref.error().message);
    auto t = LimitTable::open(*ref, what, key);
    if (!t) return cx.error(n, t.error().message);
    return t;
}

Result<int> parse_status(conf::Ctx& cx, const conf::Node& n) {
    auto v = conf::parse_number(n.args[0].text, 999);
    if (!v) return cx.invalid(n, make_error("invalid number \"" + n.args[0].text + "\""));
    if (*v < 400 || *v > 599)
        return cx.error(n, "\"" + n.name + "\" directive value must be between 400 and 599");
    return static_cast<int>(*v);
}

Result<log::Level> parse_log_level(conf::Ctx& cx, const conf::Node& n) {
    const std::string& v = n.args[0].text;
    if (v == "info") return log::Level::Info;
    if (v == "notice") return log::Level::Notice;
    if (v == "warn") return log::Level::Warn;
    if (v == "error") return log::Level::Error;
    return cx.invalid(n, make_error("invalid value \"" + v + "\""));
}

}  // namespace gatehouse::http::limit_conf
