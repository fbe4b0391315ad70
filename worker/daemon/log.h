// One-line diagnostics of dfkd-worker on stderr, prefixed "dfkd-worker: ".
// Each line is written with one call, so lines from several threads do not
// interleave.
#ifndef DFKD_WORKER_DAEMON_LOG_H_
#define DFKD_WORKER_DAEMON_LOG_H_

#include <string>

namespace dfkd::worker::daemon {

void LogLine(const std::string& message);

}  // namespace dfkd::worker::daemon

#endif  // DFKD_WORKER_DAEMON_LOG_H_
