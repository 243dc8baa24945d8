#include "http/htpasswd.h"

#include <crypt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include <algorithm>

#include <cstring>

#include "core/assert.h"
#include "core/base64.h"

namespace gatehouse::http {

// ---- the file ----------------------------------------------------------------

bool HtpasswdScanner::feed(std::string_view piece) {
    for (char ch : piece) {
        switch (state_) {
            case State::Done: return true;
            case State::Skip:
                if (ch == '\n') {
                    state_ = State::Login;
                    matched_ = 0;
                }
                break;
            case State::Login:
                if (ch == '\n') {
                    matched_ = 0;
                    break;
                }
                if (matched_ == 0 && (ch == '#' || ch == '\r')) {
                    state_ = State::Skip;
                    break;
                }
                if (matched_ == user_.size()) {
                    state_ = ch == ':' ? State::Password : State::Skip;
                    break;
                }
                if (ch != user_[matched_]) {
                    state_ = State::Skip;
                    break;
                }
                ++matched_;
                break;
            case State::Password:
                if (ch == '\n' || ch == '\r' || ch == ':') {
                    state_ = State::Done;
                    return true;
                }
                if (field_len_ < kMaxField) field_[field_len_++] = ch;
                else overflow_ = true;
                break;
        }
    }
    return state_ == State::Done;
}

bool HtpasswdScanner::finish() {
    if (state_ == State::Password) state_ = State::Done;
    return state_ == State::Done;
}

// ---- the formats ----------------------------------------------------------------

namespace {

bool same(std::string_view a, std::string_view b) {
    // The length of a hash format is no secret; its bytes are.
    return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string base64(const unsigned char* p, size_t n) {
    std::string out((n + 2) / 3 * 4 + 1, '\0');
    int len = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), p, static_cast<int>(n));
    out.resize(static_cast<size_t>(len));
    return out;
}

// One digest computation through OpenSSL's EVP interface.
class Digest {
public:
    explicit Digest(const EVP_MD* md) : c_(EVP_MD_CTX_new()) {
        GH_CHECK(c_ && EVP_DigestInit_ex(c_, md, nullptr) == 1);
    }
    // A new computation of the same digest in the same context: neither
    // an allocation nor a fetch of the algorithm (OpenSSL 3).
    void restart() { GH_CHECK(EVP_DigestInit_ex2(c_, nullptr, nullptr) == 1); }
    ~Digest() { EVP_MD_CTX_free(c_); }
    Digest(const Digest&) = delete;
    Digest& operator=(const Digest&) = delete;
    void add(std::string_view s) { EVP_DigestUpdate(c_, s.data(), s.size()); }
    void add(const unsigned char* p, size_t n) { EVP_DigestUpdate(c_, p, n); }
    // Writes the digest (16 bytes for MD5, 20 for SHA-1).
    void end(unsigned char* out) { EVP_DigestFinal_ex(c_, out, nullptr); }

private:
    EVP_MD_CTX* c_;
};

// base64(SHA-1(password + salt) + salt): {SHA} without a salt, {SSHA}.
std::string sha1_b64(std::string_view password, std::string_view salt) {
    std::string d(SHA_DIGEST_LENGTH, '\0');
    Digest sha(EVP_sha1());
    sha.add(password);
    sha.add(salt);
    sha.end(reinterpret_cast<unsigned char*>(d.data()));
    d.append(salt);
    return base64(reinterpret_cast<const unsigned char*>(d.data()), d.size());
}

// {SSHA}: the salt is what follows the 20 bytes of the digest in the
// decoded field. A field that does not decode, or is too short, has no
// salt [nginx]: the hash is then of the password alone, and never equals
// the field.
bool verify_ssha(std::string_view password, std::string_view stored) {
    std::string_view enc = stored.substr(6);
    std::string dec(base64_decoded_max(enc.size()), '\0');
    std::string_view salt;
    if (auto n = decode_base64(enc, dec.data()); n && *n >= SHA_DIGEST_LENGTH)
        salt = std::string_view(dec).substr(SHA_DIGEST_LENGTH, *n - SHA_DIGEST_LENGTH);
    return same("{SSHA}" + sha1_b64(password, salt), stored);
}

void to64(std::string& out, unsigned long v, int n) {
    static constexpr char kItoa64[] = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    while (n-- > 0) {
        out.push_back(kItoa64[v & 0x3f]);
        v >>= 6;
    }
}

// The crypt_data libxcrypt works in (about 32 KiB): one per process, as a
// worker runs one request's check at a time in its one thread.
crypt_data g_crypt;

bool verify_crypt(std::string_view password, std::string_view stored) {
    // crypt(3) takes C strings: a password with a NUL ends there, as nginx
    // passes it.
    std::string pw(password.substr(0, password.find('\0')));
    std::string setting(stored);
    const char* h = crypt_rn(pw.c_str(), setting.c_str(), &g_crypt, sizeof g_crypt);
    // Null: not a hash libxcrypt knows (nginx's Debian build gets a
    // failure token, "*0", that never matches: the same 401).
    return h && same(h, stored);
}

}  // namespace

// The published algorithm (Poul-Henning Kamp's MD5 crypt, the magic
// string "$apr1$" for Apache's), not a copy of either implementation.
std::string apr1_crypt(std::string_view password, std::string_view salt) {
    constexpr std::string_view kMagic = "$apr1$";
    salt = salt.substr(0, std::min(salt.find('$'), size_t{8}));
    unsigned char fin[16];
    {
        Digest alt(EVP_md5());
        alt.add(password);
        alt.add(salt);
        alt.add(password);
        alt.end(fin);
    }
    Digest ctx(EVP_md5());
    ctx.add(password);
    ctx.add(kMagic);
    ctx.add(salt);
    for (size_t left = password.size(); left > 0; left -= std::min<size_t>(left, 16)) ctx.add(fin, std::min<size_t>(left, 16));
    for (size_t i = password.size(); i; i >>= 1) {
        if (i & 1) ctx.add(std::string_view("\0", 1));
        else ctx.add(password.substr(0, 1));
    }
    ctx.end(fin);
    // 1000 rounds, to make guessing slow (as it was in 1994).
    Digest r(EVP_md5());
    for (int i = 0; i < 1000; ++i) {
        r.restart();
        if (i & 1) r.add(password);
        else r.add(fin, 16);
        if (i % 3) r.add(salt);
        if (i % 7) r.add(password);
        if (i & 1) r.add(fin, 16);
        else r.add(password);
        r.end(fin);
    }
    std::string out;
    out.reserve(kMagic.size() + salt.size() + 1 + 22);
    out.append(kMagic).append(salt).push_back('$');
    auto u = [&](int i) { return static_cast<unsigned long>(fin[i]); };
    to64(out, (u(0) << 16) | (u(6) << 8) | u(12), 4);
    to64(out, (u(1) << 16) | (u(7) << 8) | u(13), 4);
    to64(out, (u(2) << 16) | (u(8) << 8) | u(14), 4);
    to64(out, (u(3) << 16) | (u(9) << 8) | u(15), 4);
    to64(out, (u(4) << 16) | (u(10) << 8) | u(5), 4);
    to64(out, u(11), 2);
    return out;
}

bool verify_password(std::string_view password, std::string_view stored) {
    if (stored.starts_with("{PLAIN}")) return same(password, stored.substr(7));
    if (stored.starts_with("{SHA}")) return same("{SHA}" + sha1_b64(password, {}), stored);
    if (stored.starts_with("{SSHA}")) return verify_ssha(password, stored);
    if (stored.starts_with("$apr1$")) return same(apr1_crypt(password, stored.substr(6)), stored);
    return verify_crypt(password, stored);
}

}  // namespace gatehouse::http
