// Declarations of the conf layer, for headers that only pass pointers.
#pragma once

namespace gatehouse::conf {
struct Node;
struct Tree;
struct SourceFile;
class Ctx;
struct Directive;
struct WorkerUser;

// One array per level, indexed by Module::index; null where a module keeps
// nothing at that level or the walk is outside such a block.
using ConfArray = void**;
}  // namespace gatehouse::conf
namespace gatehouse {
namespace conf {
struct Module;
}
}  // namespace gatehouse
