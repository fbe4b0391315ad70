#include "client/client_config.h"

#include <pwd.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "client/local_cluster.h"
#include "client/process.h"

namespace dfkd::client {
namespace {

namespace fs = std::filesystem;

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

std::string HomeDir() {
  std::string home = Env("HOME");
  if (home.empty()) {
    if (const passwd* pw = getpwuid(geteuid())) home = pw->pw_dir;
  }
  return home;
}

std::string TrimToken(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ' ||
                           text.back() == '\t')) {
    text.pop_back();
  }
  const size_t begin = text.find_first_not_of(" \t\r\n");
  return begin == std::string::npos ? "" : text.substr(begin);
}

// A token file's first line; throws when it cannot be read.
std::string ReadTokenFile(const std::string& path, const std::string& what) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw CliError(kExitUsage, what + ": no such file " + path);
  std::string token = TrimToken(ReadFileText(path));
  token = token.substr(0, token.find('\n'));
  if (token.empty()) throw CliError(kExitUsage, what + ": " + path + " is empty or unreadable");
  return token;
}

std::string FourWays() {
  return "tell dfkd where the scheduler is in one of four ways:\n"
         "  1. --addr HOST:PORT --token TOKEN\n"
         "  2. environment DFKD_ADDR and DFKD_TOKEN\n"
         "  3. the config file " + ConfigFilePath() +
         ": {\"addr\": \"HOST:PORT\", \"token\": \"TOKEN\"}\n"
         "  4. a local cluster started with `dfkd up` (found through --data-dir, DFKD_HOME or "
         "~/.local/share/dfkd)";
}

}  // namespace

std::string ConfigFilePath() {
  const std::string explicit_path = Env("DFKD_CONFIG");
  if (!explicit_path.empty()) return explicit_path;
  const std::string xdg = Env("XDG_CONFIG_HOME");
  if (!xdg.empty() && xdg[0] == '/') return xdg + "/dfkd/config.json";
  return HomeDir() + "/.config/dfkd/config.json";
}

Connection ResolveConnection(const GlobalOptions& options) {
  Connection c;
  // 1. flags
  if (!options.addr.empty()) {
    c.addr = options.addr;
    c.addr_source = "--addr";
  }
  if (!options.token.empty()) {
    c.token = options.token;
    c.token_source = "--token";
  }
  c.tls_ca = options.tls_ca;
  // 2. environment
  if (c.addr.empty() && !Env("DFKD_ADDR").empty()) {
    c.addr = Env("DFKD_ADDR");
    c.addr_source = "DFKD_ADDR";
  }
  if (c.token.empty() && !Env("DFKD_TOKEN").empty()) {
    c.token = Env("DFKD_TOKEN");
    c.token_source = "DFKD_TOKEN";
  }
  if (c.tls_ca.empty()) c.tls_ca = Env("DFKD_TLS_CA");
  // 3. config file
  const std::string config_path = ConfigFilePath();
  std::error_code ec;
  if (fs::exists(config_path, ec)) {
    const nlohmann::json config = nlohmann::json::parse(ReadFileText(config_path), nullptr, false);
    if (config.is_discarded() || !config.is_object()) {
      throw CliError(kExitUsage, config_path + ": not a JSON object like "
                                               "{\"addr\": \"HOST:PORT\", \"token\": \"TOKEN\"}");
    }
    auto text = [&](const char* key) {
      return config.contains(key) && config[key].is_string() ? config[key].get<std::string>()
                                                             : std::string();
    };
    if (c.addr.empty() && !text("addr").empty()) {
      c.addr = text("addr");
      c.addr_source = config_path;
    }
    if (c.token.empty() && !text("token").empty()) {
      c.token = text("token");
      c.token_source = config_path;
    }
    if (c.token.empty() && !text("token_file").empty()) {
      c.token = ReadTokenFile(text("token_file"), config_path + ": token_file");
      c.token_source = text("token_file");
    }
    if (c.tls_ca.empty()) c.tls_ca = text("tls_ca");
  }
  // 4. the local cluster
  if (c.addr.empty()) {
    const std::string data_dir = ResolveDataDir(options.data_dir);
    const std::optional<ClusterState> state = ReadClusterState(data_dir);
    if (!state || state->scheduler_addr.empty()) {
      throw CliError(kExitUnreachable,
                     "no scheduler configured and no local cluster runs in " + data_dir + ";\n" +
                         FourWays());
    }
    c.addr = state->scheduler_addr;
    c.addr_source = "local cluster in " + data_dir;
    c.local_cluster = true;
    if (c.token.empty()) {
      const std::string path = TokenFilePath(data_dir, "researcher");
      c.token = ReadTokenFile(path, "local cluster token");
      c.token_source = path;
    }
  }
  if (c.token.empty()) {
    throw CliError(kExitUnreachable, "no token for the scheduler at " + c.addr + " (from " +
                                         c.addr_source + ");\n" + FourWays());
  }
  return c;
}

}  // namespace dfkd::client
