#include "client/scheduler_client.h"

#include <chrono>
#include <utility>

#include "client/process.h"

namespace dfkd::client {

SchedulerClient::SchedulerClient(Connection connection) : connection_(std::move(connection)) {
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (connection_.tls_ca.empty()) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadFileText(connection_.tls_ca);
    if (ssl.pem_root_certs.empty()) {
      throw CliError(kExitUsage, "TLS roots " + connection_.tls_ca + ": missing or empty");
    }
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);   // large result / metric listings
  channel_ = grpc::CreateCustomChannel(connection_.addr, credentials, args);
  stub_ = api::Campaigns::NewStub(channel_);
}

std::unique_ptr<grpc::ClientContext> SchedulerClient::Context(double deadline_seconds) const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->AddMetadata("authorization", "Bearer " + connection_.token);
  if (deadline_seconds > 0) {
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::milliseconds(static_cast<int64_t>(deadline_seconds * 1000)));
  }
  return context;
}

void SchedulerClient::Check(const grpc::Status& status, const std::string& what) const {
  if (status.ok()) return;
  const std::string detail = status.error_message();
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE: {
      std::string message = "cannot reach the scheduler at " + connection_.addr +
                            " (address from " + connection_.addr_source + "): " + detail;
      if (connection_.local_cluster) {
        message += "\nis the local cluster running? `dfkd status`, `dfkd up`";
      }
      throw CliError(kExitUnreachable, message);
    }
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      throw CliError(kExitUnreachable, what + ": the scheduler at " + connection_.addr +
                                           " did not answer in time (" + detail + ")");
    case grpc::StatusCode::INVALID_ARGUMENT:
      throw CliError(kExitUsage, what + ": " + detail);
    case grpc::StatusCode::UNAUTHENTICATED:
      throw CliError(kExitSchedulerError, what + ": UNAUTHENTICATED: " + detail +
                                              " (token from " + connection_.token_source + ")");
    default:
      throw CliError(kExitSchedulerError,
                     what + ": " + StatusCodeName(status.error_code()) + ": " + detail);
  }
}

std::string StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "CODE_" + std::to_string(static_cast<int>(code));
  }
}

}  // namespace dfkd::client
