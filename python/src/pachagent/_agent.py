"""Calls to the agent over its socket, with the agent's refusals turned into pachagent's exceptions."""

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator, Optional, Union

import grpc

from . import errors
from ._socket import checked_socket
from .v1 import agent_pb2, agent_pb2_grpc

#: How long one call to the agent may take; the agent answers from memory, so this only bounds a wedged agent
#: (a renewal it must run first takes a few seconds at most).
CALL_TIMEOUT = 30.0

#: The agent's stable error reasons, by exception.
_REASONS = {
    "unknown-context": errors.UnknownContext,
    "not-logged-in": errors.NotLoggedIn,
    "login-required": errors.LoginRequired,
    "expired": errors.LoginRequired,
    "renewal-refused": errors.LoginRequired,
    "rejected": errors.LoginRequired,
    "too-short": errors.SessionTooShort,
    "beyond-lifetime": errors.SessionTooShort,
}

Duration = Union[int, float, timedelta]


@dataclass(frozen=True)
class Identity:
    """Whom a context's session belongs to, as pachd names the user."""

    #: The context, as the agent resolved it (the active one when none was named).
    context: str
    #: pachd's subject, e.g. ``user:alice@example.com`` or ``robot:ci``.
    username: str
    #: When the session's current token ends (UTC); ``None`` for a token that never expires.
    expiration: Optional[datetime]
    #: pachd's address, e.g. ``grpcs://pachd.example.com:443``.
    pachd_address: str


@dataclass(frozen=True)
class SessionEvent:
    """One session transition, as ``pachagent watch`` prints it."""

    #: The context.
    context: str
    #: ``LOGGED_IN``, ``REFRESHED``, ``EXPIRING_SOON``, ``EXPIRED``, ``LOGIN_REQUIRED``, ``REFRESH_FAILED`` or
    #: ``LOGGED_OUT`` (``UNSPECIFIED`` for a note that events were missed).
    kind: str
    #: When it happened (UTC).
    at: Optional[datetime]
    #: The session's expiration after it.
    expiration: Optional[datetime]
    #: The session's user.
    username: str
    #: What happened, for people.
    detail: str


@dataclass(frozen=True)
class Grant:
    """A token handed out by the agent, with what a client needs to use it. Its repr never shows the token."""

    token: str = field(repr=False)
    context: str
    username: str
    expiration: Optional[datetime]
    pachd_address: str
    pachd_ca_file: Optional[str]


def seconds(duration: Optional[Duration]) -> int:
    """Whole seconds, rounded up (``min_valid=1.5`` must not become one second)."""
    if duration is None:
        return 0
    value = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
    if value < 0 or math.isnan(value):
        raise ValueError(f"min_valid must be a positive duration, not {duration!r}")
    return math.ceil(value)


def _time(ts) -> Optional[datetime]:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=timezone.utc)


def _translate(error: grpc.RpcError) -> errors.PachagentError:
    """The exception for a failed call: by the agent's stable reason when it sent one."""
    reason = None
    for key, value in error.trailing_metadata() or ():
        if key == "pachagent-error":
            reason = value if isinstance(value, str) else value.decode()
    message = error.details() or str(error)
    if reason is None and error.code() == grpc.StatusCode.UNAVAILABLE:
        return errors.AgentNotRunning(f"the agent did not answer: {message}")
    return _REASONS.get(reason, errors.AgentError)(message, reason)


class Agent:
    """A connection to this user's agent. Checks who serves the socket before the first call."""

    def __init__(self, socket: Optional[Path] = None) -> None:
        self.socket = checked_socket(socket)
        # grpc would send the socket path as :authority, which HTTP/2 servers reject as malformed.
        self._channel = grpc.insecure_channel(f"unix:{self.socket}", options=[("grpc.default_authority", "localhost")])
        self._stub = agent_pb2_grpc.AgentStub(self._channel)

    def close(self) -> None:
        """Closes the connection."""
        self._channel.close()

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def get_token(self, context: Optional[str], min_valid: Optional[Duration], fit_to_lifetime: bool = False) -> Grant:
        """A token of ``context`` valid for at least ``min_valid`` (with ``fit_to_lifetime``, at most half of what
        the session's tokens live)."""
        request = agent_pb2.GetTokenRequest(
            context=context or "", min_valid_seconds=seconds(min_valid), fit_to_lifetime=fit_to_lifetime
        )
        try:
            r = self._stub.GetToken(request, timeout=CALL_TIMEOUT)
        except grpc.RpcError as e:
            raise _translate(e) from None
        return Grant(
            token=r.token,
            context=r.context,
            username=r.username,
            expiration=_time(r.expiration) if r.HasField("expiration") else None,
            pachd_address=r.pachd_address,
            pachd_ca_file=r.pachd_ca_file or None,
        )

    def who_am_i(self, context: Optional[str]) -> Identity:
        """Who the session of ``context`` belongs to."""
        try:
            r = self._stub.WhoAmI(agent_pb2.WhoAmIRequest(context=context or ""), timeout=CALL_TIMEOUT)
        except grpc.RpcError as e:
            raise _translate(e) from None
        return Identity(
            context=r.context,
            username=r.username,
            expiration=_time(r.expiration) if r.HasField("expiration") else None,
            pachd_address=r.pachd_address,
        )

    def watch(self, context: Optional[str], all_contexts: bool) -> Iterator[SessionEvent]:
        """Session events as they happen, until the agent stops or the iterator is closed."""
        request = agent_pb2.WatchRequest(context=context or "", all_contexts=all_contexts)
        stream = self._stub.Watch(request)
        try:
            for e in stream:
                yield SessionEvent(
                    context=e.context,
                    kind=agent_pb2.EventKind.Name(e.kind).removeprefix("EVENT_KIND_"),
                    at=_time(e.at) if e.HasField("at") else None,
                    expiration=_time(e.expiration) if e.HasField("expiration") else None,
                    username=e.username,
                    detail=e.detail,
                )
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.CANCELLED:
                return
            raise _translate(e) from None
        finally:
            stream.cancel()
