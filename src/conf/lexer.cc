#include "conf/lexer.h"

namespace gatehouse::conf {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// Decodes the escapes nginx decodes in every word; others stay as written.
void append_escape(std::string& out, char c) {
    switch (c) {
        case '"': out.push_back('"'); break;
        case '\'': out.push_back('\''); break;
        case '\\': out.push_back('\\'); break;
        case 't': out.push_back('\t'); break;
        case 'r': out.push_back('\r'); break;
        case 'n': out.push_back('\n'); break;
        default:
            out.push_back('\\');
            out.push_back(c);
    }
}

std::string quote_char(char c) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
        static constexpr char kHex[] = "0123456789abcdef";
        return std::string{'\\', 'x', kHex[u >> 4], kHex[u & 0xf]};
    }
    return std::string(1, c);
}

}  // namespace

Token Lexer::error(uint32_t line, std::string msg) {
    pos_ = src_.size();
    failed_ = true;
    error_line_ = line;
    error_ = msg;
    Token t;
    t.kind = Tok::Error;
    t.line = line;
    t.text = std::move(msg);
    return t;
}

Token Lexer::next() {
    if (failed_) {
        Token t;
        t.kind = Tok::Error;
        t.line = error_line_;
        t.text = error_;
        return t;
    }
    // Skip blanks and comments.
    for (;;) {
        while (pos_ < src_.size() && is_space(src_[pos_])) {
            if (src_[pos_] == '\n') ++line_;
            ++pos_;
        }
        if (pos_ < src_.size() && src_[pos_] == '#') {
            while (pos_ < src_.size() && src_[pos_] != '\n') ++pos_;
            continue;
        }
        break;
    }
    Token t;
    t.line = line_;
    if (pos_ >= src_.size()) {
        t.kind = Tok::Eof;
        return t;
    }
    char c = src_[pos_];
    if (c == ';' || c == '{' || c == '}') {
        ++pos_;
        t.kind = c == ';' ? Tok::Semicolon : c == '{' ? Tok::BlockOpen : Tok::BlockClose;
        return t;
    }
    t.kind = Tok::Word;
    if (c == '"' || c == '\'') {
        char q = c;
        uint32_t start = line_;
        ++pos_;
        for (;;) {
            if (pos_ >= src_.size()) return error(start, "unterminated string");
            char d = src_[pos_++];
            if (d == q) break;
            if (d == '\n') ++line_;
            if (d == '\\' && pos_ < src_.size()) {
                char e = src_[pos_++];
                if (e == '\n') ++line_;
                append_escape(t.text, e);
                continue;
            }
            t.text.push_back(d);
        }
        t.quoted = true;
        // As in nginx, a quoted word must end where it closes: "a"b is an
        // error. A ")" may follow at once, and starts the next word: it
        // closes an "if" condition, as in if ($arg_x = "1").
        if (pos_ < src_.size()) {
            char d = src_[pos_];
            if (!is_space(d) && d != ';' && d != '{' && d != '}' && d != ')')
                return error(line_, "unexpected \"" + quote_char(d) + "\" after quoted string");
        }
        return t;
    }
    bool in_var_brace = false;
    while (pos_ < src_.size()) {
        char d = src_[pos_];
        if (d == '\\' && pos_ + 1 < src_.size()) {
            char e = src_[pos_ + 1];
            if (e == '\n') ++line_;
            append_escape(t.text, e);
            pos_ += 2;
            continue;
        }
        if (in_var_brace) {
            if (d == '}') in_var_brace = false;
            if (d == '\n' || d == ';' || d == '{')
                return error(line_, "unterminated variable \"${\"");
            t.text.push_back(d);
            ++pos_;
            continue;
        }
        if (d == '{' && !t.text.empty() && t.text.back() == '$') {
            in_var_brace = true;
            t.text.push_back(d);
            ++pos_;
            continue;
        }
        if (is_space(d) || d == ';' || d == '{' || d == '}') break;
        t.text.push_back(d);
        ++pos_;
    }
    if (in_var_brace) return error(line_, "unterminated variable \"${\"");
    return t;
}

}  // namespace gatehouse::conf
