// Typed errors: every error reply of the server carries a stable `code` and a `message`.

export class UpstreamError extends Error {
  constructor(message, code = "internal", status = 0) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.status = status;
  }
}
export class InvalidArgumentError extends UpstreamError {}
export class AuthenticationError extends UpstreamError {}
export class NotFoundError extends UpstreamError {}
export class ConflictError extends UpstreamError {}
export class PayloadTooLargeError extends UpstreamError {}
export class RateLimitError extends UpstreamError {}
export class ServerError extends UpstreamError {}

const byStatus = {
  400: InvalidArgumentError,
  401: AuthenticationError,
  404: NotFoundError,
  405: InvalidArgumentError,
  409: ConflictError,
  413: PayloadTooLargeError,
  429: RateLimitError,
};

export function errorFor(status, code, message) {
  const Cls = byStatus[status] ?? (status >= 500 || status === 0 ? ServerError : UpstreamError);
  return new Cls(message, code, status);
}
