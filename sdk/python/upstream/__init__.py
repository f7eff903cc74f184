"""upstream: sandboxes for AI agents that remember. A client of the upstream HTTP API.

    from upstream import Sandbox
    with Sandbox.create() as sb:
        print(sb.exec("echo hello").stdout)
"""

from .client import Client
from .errors import (AuthenticationError, ConflictError, InvalidArgumentError, NotFoundError, PayloadTooLargeError,
                     RateLimitError, ServerError, UpstreamError)
from .pipelines import PipelineResult, delete_session, run_pipeline, session, sessions, stream_pipeline
from .sandbox import ExecEvent, ExecHandle, ExecResult, ExecStream, FileInfo, Files, Sandbox
from .snapshots import Snapshot
from .units import Duration, Size
from .usage import usage

__version__ = "0.1.0"
__all__ = [
    "Client", "Sandbox", "Snapshot", "ExecResult", "ExecEvent", "ExecStream", "ExecHandle", "Files", "FileInfo",
    "UpstreamError", "InvalidArgumentError", "AuthenticationError", "NotFoundError", "ConflictError",
    "PayloadTooLargeError", "RateLimitError", "ServerError",
    "PipelineResult", "run_pipeline", "stream_pipeline", "sessions", "session", "delete_session", "usage", "Duration", "Size",
]
