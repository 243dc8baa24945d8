// libFuzzer target: the input is a config text. It goes through the lexer
// and parser (conf::parse_text) and, when it parses, through the registry
// walk with the real module list, as process::load_cycle applies a file.
// Any input must end in a value or an error message; a crash, a sanitizer
// report or a GH_CHECK is a bug. Seeds: tests/fuzz/corpus/conf/.
//
//   make fuzz && objs/fuzz/conf_parser_fuzz tests/fuzz/corpus/conf
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "conf/module.h"
#include "conf/parser.h"
#include "conf/registry.h"
#include "core/arena.h"

using namespace gatehouse;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    init_modules();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    // "include" reads whatever path the input names (/dev/stdin blocks,
    // /dev/zero reads 64 MB, "/**" walks the disk): the parser's include
    // handling is covered by the unit tests instead. No escape decodes to
    // a letter, so the name cannot be written without this substring.
    if (text.find("include") != std::string_view::npos) return -1;

    conf::ParseOptions po;
    po.conf_dir = "/nonexistent/conf/";
    conf::Tree tree;
    if (!conf::parse_text("fuzz.conf", std::string(text), po, tree)) return 0;

    Arena arena(16384);
    conf::Ctx cx(arena, "/nonexistent/", po.conf_dir);
    cx.install_level(conf::Level::Core, cx.create_level(conf::Level::Core));
    if (!cx.walk(tree.nodes, conf::kMain)) return 0;
    // As load_cycle: cross-directive checks run on a complete walk.
    for (const Module* m : modules)
        if (m->postconfiguration && !m->postconfiguration(cx)) return 0;
    return 0;
}
