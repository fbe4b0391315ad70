// Secrets for the store: bearer tokens (stored only as their SHA-256) and
// attempt tokens (random fencing tokens carried by every write of an attempt).
#ifndef DFKD_SERVER_STORE_TOKEN_HASH_H_
#define DFKD_SERVER_STORE_TOKEN_HASH_H_

#include <string>

namespace dfkd::server {

// Lower-case hex SHA-256 of `data` (64 characters).
std::string Sha256Hex(const std::string& data);

// `bytes` bytes from OpenSSL's CSPRNG as lower-case hex (2 * bytes characters).
// Throws std::runtime_error if the generator fails.
std::string RandomHex(int bytes);

// A new bearer token: "dfkd_" + 40 hex characters (160 random bits).
std::string NewToken();

}  // namespace dfkd::server

#endif  // DFKD_SERVER_STORE_TOKEN_HASH_H_
