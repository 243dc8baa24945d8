// Result<T>: a value or an error message, for code built without exceptions.
//
// Errors carry a human-readable message in lower case ("invalid value
// \"5 parsecs\""); the caller adds where it happened (file:line, a peer
// address). Moving a Result is cheap; a failed Result has no value and
// calling value() on it is a programming error caught by GH_CHECK.
#pragma once

#include <string>
#include <utility>
#include <variant>

#include "core/assert.h"

namespace gatehouse {

struct Error {
    std::string message;
};

inline Error make_error(std::string msg) { return Error{std::move(msg)}; }

template <typename T>
class [[nodiscard]] Result {
public:
    Result(T v) : v_(std::in_place_index<0>, std::move(v)) {}
    Result(Error e) : v_(std::in_place_index<1>, std::move(e)) {}

    explicit operator bool() const { return v_.index() == 0; }
    bool ok() const { return v_.index() == 0; }

    T& value() & {
        GH_CHECK(ok());
        return std::get<0>(v_);
    }
    const T& value() const& {
        GH_CHECK(ok());
        return std::get<0>(v_);
    }
    T&& value() && {
        GH_CHECK(ok());
        return std::get<0>(std::move(v_));
    }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }

    const Error& error() const {
        GH_CHECK(!ok());
        return std::get<1>(v_);
    }
    const std::string& message() const { return error().message; }

private:
    std::variant<T, Error> v_;
};

// Result<void>: success or an error.
template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error e) : err_(std::move(e)), failed_(true) {}

    explicit operator bool() const { return !failed_; }
    bool ok() const { return !failed_; }
    const Error& error() const {
        GH_CHECK(failed_);
        return err_;
    }
    const std::string& message() const { return error().message; }

private:
    Error err_;
    bool failed_ = false;
};

using Status = Result<void>;

inline Status ok_status() { return {}; }

}  // namespace gatehouse
