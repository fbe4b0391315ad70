#include "client/proto_json.h"

#include "client/cli_common.h"

namespace dfkd::client {

nlohmann::json EmbeddedJson(const std::string& text) {
  if (text.empty()) return nullptr;
  nlohmann::json parsed = nlohmann::json::parse(text, nullptr, false);
  if (parsed.is_discarded()) return text;
  return parsed;
}

nlohmann::json RunToJson(const api::Run& run) {
  return {{"id", run.id()},
          {"campaign_id", run.campaign_id()},
          {"experiment_id", run.experiment_id()},
          {"kind", run.kind()},
          {"seed", run.seed()},
          {"state", RunStateName(run.state())},
          {"attempt", run.attempt()},
          {"max_attempts", run.max_attempts()},
          {"world_size", run.world_size()},
          {"depends_on", run.depends_on()},
          {"config_hash", run.config_hash()},
          {"reused_from", run.reused_from()},
          {"last_error", run.last_error()},
          {"result", EmbeddedJson(run.result_json())},
          {"artifact", run.artifact()},
          {"worker", run.worker()},
          {"progress", run.progress()},
          {"latest_accuracy",
           run.latest_accuracy() >= 0 ? nlohmann::json(run.latest_accuracy())
                                      : nlohmann::json(nullptr)},
          {"spec", EmbeddedJson(run.spec_json())},
          {"created_at", run.created_at()},
          {"updated_at", run.updated_at()}};
}

nlohmann::json CampaignToJson(const api::Campaign& campaign) {
  nlohmann::json by_state = nlohmann::json::object();
  int64_t total = 0;
  for (const auto& entry : campaign.runs_by_state()) {
    by_state[entry.first] = entry.second;
    total += entry.second;
  }
  return {{"id", campaign.id()},
          {"name", campaign.name()},
          {"owner", campaign.owner()},
          {"priority", campaign.priority()},
          {"state", campaign.state()},
          {"runs", total},
          {"runs_by_state", by_state},
          {"spec", EmbeddedJson(campaign.spec_json())},
          {"created_at", campaign.created_at()}};
}

nlohmann::json ExperimentToJson(const api::Experiment& experiment) {
  return {{"id", experiment.id()},
          {"campaign_id", experiment.campaign_id()},
          {"name", experiment.name()},
          {"method", experiment.method()},
          {"kdci", experiment.kdci()},
          {"variant", experiment.variant()},
          {"baseline_experiment_id", experiment.baseline_experiment_id()},
          {"axes", EmbeddedJson(experiment.axes_json())}};
}

nlohmann::json MetricPointToJson(const api::MetricPoint& point) {
  return {{"step", point.step()},
          {"name", point.name()},
          {"value", point.value()},
          {"attempt", point.attempt()}};
}

}  // namespace dfkd::client
