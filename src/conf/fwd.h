// Declarations of the conf layer, for headers that only pass pointers.
#pragma once

namespace gatehouse::conf {
struct Node;
struct Tree;
struct SourceFile;
class Ctx;
struct Directive;
}  // namespace gatehouse::conf
namespace gatehouse {
namespace conf {
struct Module;
}
}  // namespace gatehouse
