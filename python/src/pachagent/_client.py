"""A real ``pachyderm_sdk.Client`` whose every call carries a token the agent currently vouches for.

pachyderm_sdk fixes the token given to its constructor (or read from ``PACH_PYTHON_AUTH_TOKEN``) into the
channel's metadata for the client's life, and assigning ``client.auth_token`` rebuilds the stubs, so a stub
kept from before still sends the old token. This client instead puts the token on each call with a gRPC client
interceptor, from a :class:`TokenSource` that asks the agent for a fresh token shortly before the cached one
ends. The token lives only in this process's memory: it is never written anywhere.
"""

import collections
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlparse

import grpc
from pachyderm_sdk import Client

from ._agent import Agent, Grant
from .errors import AgentError, PachagentError

#: The token metadata key pachd reads.
TOKEN_KEY = "authn-token"

#: A cached token is replaced when less than this fraction of its remaining life at hand-out is left...
_REFRESH_FRACTION = 0.25
#: ... but never with less than this left (a call must not start with a token about to end) ...
_MIN_LEFT = timedelta(seconds=5)
#: ... and never waiting for less than this (long sessions: ask again a minute before the end).
_MAX_LEFT = timedelta(seconds=60)
#: After the agent could not be asked, the cached token (while still valid) is used this long before asking again.
_RETRY = timedelta(seconds=2)


class TokenSource:
    """The agent's current token for one context, cached until close to its end. Thread-safe."""

    def __init__(self, agent: Agent, context: Optional[str], first: Grant) -> None:
        self._agent = agent
        self._context = first.context if context is None else context
        self._lock = threading.Lock()
        self._grant = first
        self._renew_at = self._plan(first)

    @staticmethod
    def _lead(grant: Grant) -> timedelta:
        """How long before the token's end the cache asks again: a quarter of what was left at hand-out, within
        [_MIN_LEFT, _MAX_LEFT], and never more than half of it (very short tokens)."""
        if grant.expiration is None:
            return timedelta(0)
        left = max(grant.expiration - datetime.now(timezone.utc), timedelta(0))
        return min(max(left * _REFRESH_FRACTION, _MIN_LEFT), _MAX_LEFT, left / 2)

    @classmethod
    def _plan(cls, grant: Grant) -> Optional[datetime]:
        if grant.expiration is None:
            return None
        return grant.expiration - cls._lead(grant)

    def current(self) -> str:
        """A token the agent vouches for now, fetching a new one when the cached one is close to its end.

        When the agent cannot be asked (restarting, say), the cached token is used for as long as it is still
        valid, and the agent is asked again every couple of seconds; only then does the error reach the caller.
        """
        with self._lock:
            now = datetime.now(timezone.utc)
            if self._renew_at is not None and now >= self._renew_at:
                try:
                    self._refetch()
                except PachagentError:
                    expiration = self._grant.expiration
                    if expiration is None or expiration - now <= _MIN_LEFT / 5:
                        raise
                    self._renew_at = now + _RETRY
            return self._grant.token

    def forget(self, token: str) -> None:
        """Drops ``token`` from the cache (pachd refused it), so the next call asks the agent again."""
        with self._lock:
            if self._grant.token == token:
                self._renew_at = datetime.now(timezone.utc)

    def _refetch(self) -> None:
        # Fitted: a session whose tokens live less than twice the lead gets what it can give.
        grant = self._agent.get_token(self._context, max(self._lead(self._grant), _MIN_LEFT), fit_to_lifetime=True)
        if grant.pachd_address != self._grant.pachd_address:
            # The context was re-pointed: this client's channel still goes to the first cluster, which must not
            # receive the other one's token.
            raise AgentError(
                f"the context {self._context!r} now points at {grant.pachd_address}, not at "
                f"{self._grant.pachd_address} where this client connects: make a new pachagent.client()"
            )
        self._grant, self._renew_at = grant, self._plan(grant)


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    """``grpc.ClientCallDetails`` with the metadata replaced."""


class TokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Puts the source's current token on every call, replacing any other ``authn-token``."""

    def __init__(self, tokens: TokenSource) -> None:
        self._tokens = tokens

    def _with_token(self, details: grpc.ClientCallDetails) -> "tuple[_CallDetails, str]":
        token = self._tokens.current()
        metadata = [(k, v) for k, v in (details.metadata or ()) if k != TOKEN_KEY]
        metadata.append((TOKEN_KEY, token))
        new = _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )
        return new, token

    def _watch(self, call: Any, token: str) -> Any:
        def done(finished: Any) -> None:
            try:
                if finished.code() == grpc.StatusCode.UNAUTHENTICATED:
                    self._tokens.forget(token)
            except Exception:  # noqa: BLE001 - a callback must never raise into grpc
                pass

        if hasattr(call, "add_done_callback"):
            call.add_done_callback(done)
        return call

    def intercept_unary_unary(self, continuation: Callable, details: grpc.ClientCallDetails, request: Any) -> Any:
        new, token = self._with_token(details)
        return self._watch(continuation(new, request), token)

    def intercept_unary_stream(self, continuation: Callable, details: grpc.ClientCallDetails, request: Any) -> Any:
        new, token = self._with_token(details)
        return self._watch(continuation(new, request), token)

    def intercept_stream_unary(self, continuation: Callable, details: grpc.ClientCallDetails, requests: Any) -> Any:
        new, token = self._with_token(details)
        return self._watch(continuation(new, requests), token)

    def intercept_stream_stream(self, continuation: Callable, details: grpc.ClientCallDetails, requests: Any) -> Any:
        new, token = self._with_token(details)
        return self._watch(continuation(new, requests), token)


class AgentClient(Client):
    """A ``pachyderm_sdk.Client`` for a context's pachd, authenticated by the agent on every call.

    Everything a ``pachyderm_sdk.Client`` offers works as usual (``client.pfs``, ``client.pps``, transactions).
    ``auth_token`` reads the token the next call would send; it cannot be assigned, since the agent supplies it.
    """

    def __init__(self, tokens: TokenSource, **kwargs: Any) -> None:
        self._tokens = tokens
        # A token given here keeps pachyderm_sdk from reading PACH_PYTHON_AUTH_TOKEN or trading
        # PACH_PYTHON_OIDC_TOKEN; it never reaches the channel (see _build_metadata).
        super().__init__(auth_token=tokens.current(), **kwargs)

    def _build_metadata(self) -> list:
        # Everything pachyderm_sdk would send except its fixed token: the interceptor adds the current one.
        return [(k, v) for k, v in super()._build_metadata() if k != TOKEN_KEY]

    def _init_api(self) -> None:
        # Called by the constructor and whenever pachyderm_sdk rebuilds its channel (a new transaction id).
        self._channel = grpc.intercept_channel(self._channel, TokenInterceptor(self._tokens))
        super()._init_api()

    @property
    def auth_token(self) -> str:
        """The token the next call sends: the agent's current one."""
        return self._tokens.current()

    @auth_token.setter
    def auth_token(self, value: str) -> None:
        raise AttributeError(
            "a pachagent client's token comes from the agent on every call; to use a fixed token, make a "
            "pachyderm_sdk.Client(auth_token=...) instead"
        )


def make_client(agent: Agent, context: Optional[str], grant: Grant, **kwargs: Any) -> AgentClient:
    """The client for ``grant``'s pachd (address and CA from the agent's context unless given in ``kwargs``)."""
    address = urlparse(grant.pachd_address if "://" in grant.pachd_address else f"grpc://{grant.pachd_address}")
    tls = address.scheme in ("grpcs", "https")
    options: dict = {"host": address.hostname, "port": address.port, "tls": tls}
    if tls and grant.pachd_ca_file and "root_certs" not in kwargs:
        options["root_certs"] = Path(grant.pachd_ca_file).read_bytes()
    options.update(kwargs)
    return AgentClient(TokenSource(agent, context, grant), **options)
