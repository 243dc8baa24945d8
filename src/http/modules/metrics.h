// metrics_module's status zones, for the other readers of the shared
// counters (api_module's /http/server_zones and /http/location_zones):
// one list of the zones a generation declares, so that every reader
// shows the same names from the same counters (http/stats.h).
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "http/fwd.h"

namespace gatehouse::http {

enum class ZoneLevel : uint8_t { Server, Location };

// A status zone as the generation declares it ("status_zone NAME" in a
// server or a location): its name and level, and the index of its
// counters in the shared area (stats::zone_totals).
struct StatusZone {
    std::string name;
    ZoneLevel level = ZoneLevel::Server;
    uint32_t index = 0;
};

// The zones of the generation serving `r`, each (level, name) once, in
// the order declared. Valid for the generation's life.
std::span<const StatusZone> status_zones(const Request& r);

}  // namespace gatehouse::http
