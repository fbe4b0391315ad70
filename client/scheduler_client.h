// The Campaigns stub with the bearer token, deadlines, and gRPC statuses
// turned into CliError with the exit codes scripts rely on.
#ifndef DFKD_CLIENT_SCHEDULER_CLIENT_H_
#define DFKD_CLIENT_SCHEDULER_CLIENT_H_

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "client/client_config.h"
#include "dfkd/api/v1/scheduler.grpc.pb.h"

namespace dfkd::client {

class SchedulerClient {
 public:
  explicit SchedulerClient(Connection connection);

  api::Campaigns::Stub& stub() { return *stub_; }
  const Connection& connection() const { return connection_; }

  // A context carrying the token; `deadline_seconds` <= 0: no deadline (streams).
  std::unique_ptr<grpc::ClientContext> Context(double deadline_seconds = 30) const;

  // Throws CliError for a non-OK status: UNAVAILABLE -> 3 (cannot reach),
  // INVALID_ARGUMENT -> 2, anything else -> 1. `what` names the call.
  void Check(const grpc::Status& status, const std::string& what) const;

  // One unary call: `call(context)` returns the status, which is checked.
  template <class Call>
  void Invoke(const std::string& what, Call&& call) {
    std::unique_ptr<grpc::ClientContext> context = Context();
    Check(call(context.get()), what);
  }

 private:
  Connection connection_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<api::Campaigns::Stub> stub_;
};

// "NOT_FOUND" for grpc::StatusCode::NOT_FOUND.
std::string StatusCodeName(grpc::StatusCode code);

}  // namespace dfkd::client

#endif  // DFKD_CLIENT_SCHEDULER_CLIENT_H_
