// empty_gif_module: "empty_gif" [nginx empty_gif module], a location
// answering a 1x1 transparent GIF, for tracking pixels and spacers.
//
// Content phase, where the location (not an enclosing one: nginx's
// content handlers are not inherited) says "empty_gif": GET and HEAD get
// the image, other methods 405. The answer is a constant, dated as
// nginx dates it, so that conditional requests get 304; a Range gets the
// whole image, as from nginx.
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string_view>

#include "http/phases.h"
#include "http/request.h"

namespace gatehouse::http {

extern const conf::Module empty_gif_module;

namespace {

struct EmptyGifConf {
    bool enabled = false;  // "empty_gif"
};

// The LZW image data of a GIF (GIF89a specification, section 22 and
// appendix F): codes of `width` bits packed from the least significant
// bit of each byte up.
constexpr std::array<uint8_t, 2> pack_codes(std::initializer_list<unsigned> codes, unsigned width) {
    std::array<uint8_t, 2> out{};
    unsigned bit = 0;
    for (unsigned code : codes)
        for (unsigned i = 0; i < width; ++i, ++bit)
            if (code >> i & 1) out[bit / 8] = static_cast<uint8_t>(out[bit / 8] | 1u << (bit % 8));
    return out;
}

// With a minimum code size of 2 (the smallest a GIF allows), codes start
// 3 bits wide, the clear code is 1 << 2 = 4 and end-of-information 5;
// one pixel of color index 1 is: clear, 1, end.
constexpr unsigned kMinCodeSize = 2;
constexpr std::array<uint8_t, 2> kPixels = pack_codes({4, 1, 5}, kMinCodeSize + 1);

// A GIF89a file, field by field (section numbers of the specification).
constexpr uint8_t kGif[] = {
    'G', 'I', 'F', '8', '9', 'a',  // 17: header
    1, 0, 1, 0,                    // 18: logical screen 1x1 (little-endian)
    0x80,                          //     a global color table of 2 entries
    1,                             //     background: color 1
    0,                             //     no aspect ratio
    0x00, 0x00, 0x00,              // 19: color 0, black
    0xff, 0xff, 0xff,              //     color 1, white
    0x21, 0xf9, 4,                 // 23: graphic control extension, 4 bytes:
    0x01,                          //     a transparent color,
    0, 0,                          //     no delay,
    1,                             //     color 1 is transparent
    0,                             //     block terminator
    0x2c,                          // 20: image descriptor
    0, 0, 0, 0,                    //     at 0,0
    1, 0, 1, 0,                    //     1x1
    0,                             //     no local color table, not interlaced
    kMinCodeSize,                  // 22: image data
    2, kPixels[0], kPixels[1],     //     one sub-block of 2 bytes
    0,                             //     block terminator
    0x3b,                          // 27: trailer
};
static_assert(sizeof kGif == 43);

// Mon, 28 Sep 1970 06:00:00 GMT, nginx's date for its image: the same
// validators wherever the image came from.
constexpr time_t kLastModified = 23349600;

Next run_empty_gif(Request& r) {
    if (!r.loc_confs || !r.loc_conf<EmptyGifConf>(empty_gif_module).enabled) return Next::Decline;
    if (r.in.method != Method::Get && r.in.method != Method::Head) return respond_status(r, 405);
    r.out.status = 200;
    r.out.content_type = "image/gif";
    r.out.content_length = sizeof kGif;
    r.out.last_modified = kLastModified;
    // A constant of the process: the buffer outlives any request.
    Buf b = Buf::memory({reinterpret_cast<const char*>(kGif), sizeof kGif});
    b.last_buf = true;
    r.body.push(std::move(b));
    return Next::Respond;
}

Status set_empty_gif(conf::Ctx&, const conf::Node&, EmptyGifConf& c) {
    c.enabled = true;  // said twice is said once, as in nginx
    return {};
}

constexpr conf::Directive kDirectives[] = {
    {"empty_gif", conf::kLocation, conf::Take0, conf::custom<set_empty_gif>()},
};

bool empty_gif_wanted(conf::ConfArray, conf::ConfArray, conf::ConfArray loc) {
    return static_cast<const EmptyGifConf*>(loc[empty_gif_module.index])->enabled;
}

constexpr PhaseHandler kPhases[] = {{Phase::Content, run_empty_gif, empty_gif_wanted}};

constexpr ModuleHooks kHooks{.phases = kPhases};

}  // namespace

extern const conf::Module empty_gif_module{
    .name = "empty_gif",
    .directives = kDirectives,
    .loc = conf::level<EmptyGifConf>(),
    .http = &kHooks,
};

}  // namespace gatehouse::http
