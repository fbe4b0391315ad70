#include "server/api/service_context.h"

namespace dfkd::server {

grpc::Status ToStatus(const StoreError& error) {
  using C = StoreError::Code;
  grpc::StatusCode code = grpc::StatusCode::INTERNAL;
  switch (error.code()) {
    case C::kNotFound: code = grpc::StatusCode::NOT_FOUND; break;
    case C::kInvalidArgument: code = grpc::StatusCode::INVALID_ARGUMENT; break;
    case C::kFailedPrecondition: code = grpc::StatusCode::FAILED_PRECONDITION; break;
    case C::kPermissionDenied: code = grpc::StatusCode::PERMISSION_DENIED; break;
    case C::kAborted: code = grpc::StatusCode::ABORTED; break;
    case C::kUnavailable: code = grpc::StatusCode::UNAVAILABLE; break;
    case C::kInternal: code = grpc::StatusCode::INTERNAL; break;
  }
  return grpc::Status(code, error.what());
}

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    default: return "OTHER";
  }
}

grpc::Status ServeRpc(ServiceContext& ctx, const std::string& method,
                      grpc::ServerContext* server_context,
                      const std::function<grpc::Status(const Principal&)>& body) {
  auto start = std::chrono::steady_clock::now();
  grpc::Status status;
  Principal principal;
  try {
    status = ctx.auth->Check(*server_context, method, &principal);
    if (status.ok()) status = body(principal);
  } catch (const StoreError& e) {
    status = ToStatus(e);
  } catch (const std::exception& e) {
    status = grpc::Status(grpc::StatusCode::INTERNAL, e.what());
  }
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ctx.metrics->ObserveRpc(method, CodeName(status.error_code()), seconds);
  return status;
}

}  // namespace dfkd::server
