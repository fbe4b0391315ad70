// Where the scheduler is and which token to show it. Each of address, token
// and TLS roots is taken from the first of:
//   1. flags --addr, --token, --tls-ca
//   2. environment DFKD_ADDR, DFKD_TOKEN, DFKD_TLS_CA
//   3. the config file $DFKD_CONFIG, else $XDG_CONFIG_HOME/dfkd/config.json,
//      else ~/.config/dfkd/config.json:
//        {"addr": "sched.lab:7070", "token": "...", "token_file": "...", "tls_ca": "ca.pem"}
//   4. the local cluster (`dfkd up`): DATA/cluster.json's scheduler_addr and
//      DATA/tokens/researcher, used only when no address is set above.
#ifndef DFKD_CLIENT_CLIENT_CONFIG_H_
#define DFKD_CLIENT_CLIENT_CONFIG_H_

#include <string>

#include "client/cli_common.h"

namespace dfkd::client {

struct Connection {
  std::string addr;            // host:port
  std::string token;
  std::string tls_ca;          // PEM file; "" = plaintext
  std::string addr_source;     // "--addr", "DFKD_ADDR", the config file, "local cluster in DIR"
  std::string token_source;
  bool local_cluster = false;  // the address came from cluster.json
};

// The config file's path (it need not exist).
std::string ConfigFilePath();

// Resolves the connection as above. Throws CliError: kExitUnreachable when
// no scheduler is known (naming all four ways to give one) or no token goes
// with the address; kExitUsage when the config file is not valid JSON.
Connection ResolveConnection(const GlobalOptions& options);

}  // namespace dfkd::client

#endif  // DFKD_CLIENT_CLIENT_CONFIG_H_
