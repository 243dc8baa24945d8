#include "conf/parser.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "conf/lexer.h"

namespace gatehouse::conf {

namespace {

std::string errno_text(int e) { return std::to_string(e) + ": " + strerror(e); }

bool has_glob(std::string_view s) { return s.find_first_of("*?[") != std::string_view::npos; }

// glob()'s error callback. A directory on the pattern's way that does not
// exist only matches nothing, as in nginx ("include sites/*.conf" with no
// "sites"); one that cannot be read stops the walk, and its errno is kept
// for the message (config loading is single-threaded).
int g_glob_errno = 0;
int glob_error(const char*, int e) {
    if (e == ENOENT || e == ENOTDIR) return 0;
    g_glob_errno = e;
    return 1;
}

class Parser {
public:
    Parser(const ParseOptions& o, Tree& t) : opts_(o), tree_(t) {}

    Status parse_source(SourceFile* f, std::vector<Node>& out, int depth) {
        Lexer lx(f->content);
        return parse_block(lx, f, out, depth, 0, /*inside=*/false, 0, {});
    }

private:
    static std::string at(const SourceFile* f, uint32_t line) {
        return " in " + f->path + ":" + std::to_string(line);
    }

    // `depth` counts nested includes, `blocks` the "{" enclosing this
    // block, across included files too; `owner` names the directive that
    // opened the block (empty at the top).
    Status parse_block(Lexer& lx, SourceFile* f, std::vector<Node>& out, int depth, int blocks,
                       bool inside, uint32_t open_line, std::string_view owner) {
        for (;;) {
            Token t = lx.next();
            switch (t.kind) {
                case Tok::Error:
                    return make_error(t.text + at(f, t.line));
                case Tok::Eof:
                    if (inside)
                        return make_error("unexpected end of file, expecting \"}\"" +
                                          at(f, t.line) + " (block opened at line " +
                                          std::to_string(open_line) + ")");
                    return {};
                case Tok::BlockClose:
                    if (!inside) return make_error("unexpected \"}\"" + at(f, t.line));
                    return {};
                case Tok::Semicolon:
                    return make_error("unexpected \";\"" + at(f, t.line));
                case Tok::BlockOpen:
                    return make_error("unexpected \"{\"" + at(f, t.line));
                case Tok::Word:
                    break;
            }
            Node n;
            n.name = std::move(t.text);
            n.file = f;
            n.line = t.line;
            for (;;) {
                Token a = lx.next();
                if (a.kind == Tok::Word) {
                    n.args.push_back(Arg{std::move(a.text), a.quoted});
                    continue;
                }
                if (a.kind == Tok::Error) return make_error(a.text + at(f, a.line));
                if (a.kind == Tok::Semicolon) break;
                if (a.kind == Tok::BlockOpen) {
                    if (blocks + 1 > opts_.max_block_depth)
                        return make_error("blocks are nested deeper than " +
                                          std::to_string(opts_.max_block_depth) + " levels" +
                                          at(f, a.line));
                    n.block = true;
                    if (auto s = parse_block(lx, f, n.children, depth, blocks + 1, true, a.line,
                                             n.name);
                        !s)
                        return s;
                    break;
                }
                if (a.kind == Tok::BlockClose)
                    return make_error("unexpected \"}\", expecting \";\"" + at(f, a.line));
                return make_error("unexpected end of file, expecting \";\" or \"}\"" +
                                  at(f, a.line));
            }
            if (n.name == "include") {
                // As nginx, whose "include" takes one argument and no block.
                if (n.block)
                    return make_error("directive \"include\" is not terminated by \";\"" +
                                      at(f, n.line));
                // The block's handler reads it (a block of data, "geo").
                if (blocks > 0 && opts_.keeps_includes && opts_.keeps_includes(owner)) {
                    out.push_back(std::move(n));
                    continue;
                }
                if (auto s = include(n, out, depth, blocks, owner); !s) return s;
                continue;
            }
            out.push_back(std::move(n));
        }
    }

    Status include(const Node& n, std::vector<Node>& out, int depth, int blocks,
                   std::string_view owner) {
        if (n.args.size() != 1)
            return make_error("invalid number of arguments in \"include\" directive in " +
                              n.where());
        if (depth + 1 > opts_.max_include_depth)
            return make_error("include nesting is deeper than " +
                              std::to_string(opts_.max_include_depth) +
                              " levels (an include loop?) in " + n.where());
        std::string path = n.args[0].text;
        if (path.empty())
            return make_error("empty path in \"include\" directive in " + n.where());
        if (path[0] != '/') path = opts_.conf_dir + path;
        std::vector<std::string> paths;
        if (has_glob(path)) {
            glob_t g{};
            g_glob_errno = 0;
            int rc = ::glob(path.c_str(), 0, glob_error, &g);
            if (rc == 0) {
                for (size_t i = 0; i < g.gl_pathc; ++i) paths.emplace_back(g.gl_pathv[i]);
            } else if (rc != GLOB_NOMATCH) {
                globfree(&g);
                std::string why = g_glob_errno ? " (" + errno_text(g_glob_errno) + ")" : "";
                return make_error("glob() \"" + path + "\" failed" + why + " in " + n.where());
            }
            globfree(&g);  // a pattern matching nothing is not an error, as in nginx
        } else {
            paths.push_back(path);
        }
        for (const auto& p : paths) {
            auto text = read_file(p, opts_.max_file_size);
            if (!text) return make_error(text.message() + " in " + n.where());
            auto f = std::make_unique<SourceFile>();
            f->path = p;
            f->content = std::move(*text);
            SourceFile* fp = f.get();
            tree_.files.push_back(std::move(f));
            Lexer lx(fp->content);
            if (auto s = parse_block(lx, fp, out, depth + 1, blocks, false, 0, owner); !s)
                return s;
        }
        return {};
    }

    const ParseOptions& opts_;
    Tree& tree_;
};

}  // namespace

std::string Node::where() const {
    return (file ? file->path : std::string("?")) + ":" + std::to_string(line);
}

Result<std::string> read_file(const std::string& path, size_t max_size) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return make_error("open() \"" + path + "\" failed (" + errno_text(errno) + ")");
    struct stat st;
    if (::fstat(fd, &st) != 0) {
        int e = errno;
        ::close(fd);
        return make_error("fstat() \"" + path + "\" failed (" + errno_text(e) + ")");
    }
    if (S_ISDIR(st.st_mode)) {
        ::close(fd);
        return make_error("\"" + path + "\" is a directory");
    }
    std::string s;
    char buf[16384];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            ::close(fd);
            return make_error("read() \"" + path + "\" failed (" + errno_text(e) + ")");
        }
        if (n == 0) break;
        s.append(buf, static_cast<size_t>(n));
        if (s.size() > max_size) {
            ::close(fd);
            return make_error("\"" + path + "\" is larger than " + std::to_string(max_size) +
                              " bytes");
        }
    }
    ::close(fd);
    return s;
}

Result<Tree> parse_file(const std::string& path, const ParseOptions& opts) {
    Tree t;
    auto text = read_file(path, opts.max_file_size);
    if (!text) return text.error();
    auto f = std::make_unique<SourceFile>();
    f->path = path;
    f->content = std::move(*text);
    SourceFile* fp = f.get();
    t.files.push_back(std::move(f));
    Parser p(opts, t);
    if (auto s = p.parse_source(fp, t.nodes, 0); !s) return s.error();
    return t;
}

Status parse_text(std::string_view name, std::string text, const ParseOptions& opts, Tree& into) {
    auto f = std::make_unique<SourceFile>();
    f->path = std::string(name);
    f->content = std::move(text);
    SourceFile* fp = f.get();
    into.files.push_back(std::move(f));
    Parser p(opts, into);
    return p.parse_source(fp, into.nodes, 0);
}

}  // namespace gatehouse::conf
