// Config parser: text to a tree of directives, includes expanded.
//
// The tree keeps every directive with its arguments and where it was
// written; the directive registry (registry.h) walks it later and turns it
// into typed configuration. Parsing knows no directive except "include",
// which it expands in place, so that the tree is what the operator wrote
// with all files joined, and "-T" can dump every file read.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace gatehouse::conf {

struct SourceFile {
    std::string path;     // as shown in messages: absolute, or "command line"
    std::string content;  // the whole text, for "-T"
};

struct Arg {
    std::string text;     // escapes decoded
    bool quoted = false;  // written in quotes: never a regex flag or keyword
};

struct Node {
    std::string name;
    std::vector<Arg> args;
    std::vector<Node> children;  // a block's directives
    bool block = false;          // written with "{ }" rather than ";"
    const SourceFile* file = nullptr;  // owner: the Tree
    uint32_t line = 0;

    // "file:line", for messages.
    std::string where() const;
};

struct Tree {
    std::vector<std::unique_ptr<SourceFile>> files;  // in the order read
    std::vector<Node> nodes;                         // the main context
};

struct ParseOptions {
    // Relative include paths are taken from here (the main config file's
    // directory, with a trailing slash).
    std::string conf_dir;
    int max_include_depth = 32;
    // Blocks nested deeper than this are refused: the parser, the registry
    // walk and the tree's destructor all recurse once per level.
    int max_block_depth = 64;
    size_t max_file_size = 64u << 20;
    // Given the name of the directive that opened a block: true when an
    // "include" directly inside it stays a node of the block, for its
    // handler to read (conf::block_reads_includes). Null: every include
    // is expanded.
    bool (*keeps_includes)(std::string_view block) = nullptr;
};

// Parses a file and the files it includes. Errors read as
//   unexpected "}" in /etc/gatehouse/site.conf:12
Result<Tree> parse_file(const std::string& path, const ParseOptions& opts);

// Parses text (the "-g" directives, a test's input) named `name` in
// messages; includes are followed as for a file.
Status parse_text(std::string_view name, std::string text, const ParseOptions& opts, Tree& into);

// Reads a whole file; the error names the call, the path and errno.
Result<std::string> read_file(const std::string& path, size_t max_size);

}  // namespace gatehouse::conf
