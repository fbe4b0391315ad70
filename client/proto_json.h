// API messages as JSON for `--output json`: plain numbers (not the proto3
// JSON mapping's int64-as-string), run states as lower-case names, and the
// JSON strings the API carries (specs, results, axes) embedded as JSON.
#ifndef DFKD_CLIENT_PROTO_JSON_H_
#define DFKD_CLIENT_PROTO_JSON_H_

#include <nlohmann/json.hpp>

#include "dfkd/api/v1/scheduler.pb.h"

namespace dfkd::client {

namespace api = ::dfkd::api::v1;

nlohmann::json RunToJson(const api::Run& run);
nlohmann::json CampaignToJson(const api::Campaign& campaign);
nlohmann::json ExperimentToJson(const api::Experiment& experiment);
nlohmann::json MetricPointToJson(const api::MetricPoint& point);
// `text` parsed as JSON; null when empty; the string itself when not JSON.
nlohmann::json EmbeddedJson(const std::string& text);

}  // namespace dfkd::client

#endif  // DFKD_CLIENT_PROTO_JSON_H_
