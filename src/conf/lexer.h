// Config lexer: nginx's token rules.
//
// Tokens are words, ";", "{" and "}". A word is unquoted, or single- or
// double-quoted (then it may hold spaces and the delimiters). "#" at the
// start of a token comments out the rest of the line. In every word the
// escapes \" \' \\ \t \r \n are decoded; any other backslash pair is kept
// as written (so "\d" reaches a regex intact), and in an unquoted word a
// backslash keeps the next character from ending the word. "${name}" in an
// unquoted word is a variable: its braces are not block delimiters.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace gatehouse::conf {

enum class Tok : uint8_t { Word, Semicolon, BlockOpen, BlockClose, Eof, Error };

struct Token {
    Tok kind = Tok::Eof;
    bool quoted = false;  // the word was written in quotes
    uint32_t line = 0;    // where the token starts
    std::string text;     // decoded word, or the error message for Tok::Error
};

class Lexer {
public:
    explicit Lexer(std::string_view src) : src_(src) {}
    // The next token. After Eof or Error it keeps returning the same kind.
    Token next();
    uint32_t line() const { return line_; }

private:
    Token error(uint32_t line, std::string msg);
    std::string_view src_;
    size_t pos_ = 0;
    uint32_t line_ = 1;
    // Set by error(): later calls return it again rather than Eof.
    bool failed_ = false;
    uint32_t error_line_ = 0;
    std::string error_;
};

}  // namespace gatehouse::conf
