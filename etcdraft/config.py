"""Configuration of an etcdraft node (Go: ``raft.Config``).

:class:`Config` is a pydantic-settings model: every field can be given as a keyword
argument or through an ``ETCDRAFT_<FIELD>`` environment variable (keyword arguments
win). It is immutable once built, and every invalid value or combination raises
:class:`~etcdraft.errors.ConfigError` naming the field, never a pydantic
``ValidationError``::

    >>> cfg = Config(node_id="node-1", endpoints="http://127.0.0.1:2379",
    ...              election_timeout="3s", heartbeat_timeout="500ms")
    >>> cfg.election_timeout, cfg.shutdown_timeout
    (3.0, 5.0)

Durations accept Go-style strings (``"200ms"``, ``"1.5s"``, ``"1m"``, ``"1h2m3s"``),
numbers of seconds and :class:`datetime.timedelta`, and are stored as float seconds
(see :func:`parse_duration`). List fields accept comma-separated strings, which is
how they are written in the environment (``ETCDRAFT_PEERS="a@h1:7000,b@h2:7000"``).

``docs/configuration.md`` is the reference for every field.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from etcdraft._config_values import (
    Peer,
    _ByteSize,
    _check_addr,
    _CommaList,
    _Duration,
    _DurationOrOff,
    _HttpAddr,
    _non_empty_optional,
    _NonNegativeInt,
    _OptionalFile,
    _positive_duration,
    _PositiveInt,
    check_node_id,
    format_duration,
    parse_duration,
    parse_peer,
)
from etcdraft.errors import ConfigError

__all__ = [
    "DEFAULT_NAMESPACE",
    "ENV_PREFIX",
    "GO_FIELD_NAMES",
    "SHUTDOWN_TIMEOUT_FACTOR",
    "Config",
    "Peer",
    "format_duration",
    "parse_duration",
    "parse_peer",
]

#: Prefix of the environment variables read by :class:`Config`.
ENV_PREFIX: Final = "ETCDRAFT_"

#: Default key prefix under which a cluster keeps its data in etcd.
DEFAULT_NAMESPACE: Final = "/etcdraft/default"

#: ``shutdown_timeout`` defaults to this many times ``send_timeout``.
SHUTDOWN_TIMEOUT_FACTOR: Final = 5

#: Python field name -> Go field name of ``raft.Config`` (ev-node ``pkg/raft``).
#: Fields added by etcdraft (``endpoints``, ``namespace``, TLS and auth) have no Go
#: counterpart and are not listed.
GO_FIELD_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "node_id": "NodeID",
        "raft_addr": "RaftAddr",
        "raft_dir": "RaftDir",
        "bootstrap": "Bootstrap",
        "peers": "Peers",
        "snap_count": "SnapCount",
        "send_timeout": "SendTimeout",
        "shutdown_timeout": "ShutdownTimeout",
        "heartbeat_timeout": "HeartbeatTimeout",
        "leader_lease_timeout": "LeaderLeaseTimeout",
        "election_timeout": "ElectionTimeout",
        "snapshot_threshold": "SnapshotThreshold",
        "trailing_logs": "TrailingLogs",
    }
)

_DEFAULT_SEND_TIMEOUT: Final = 1.0
_SECRET_FIELDS: Final = frozenset({"password", "tls_key_password"})
_MASK: Final = "**********"


class _ConfigProblems(ValueError):
    """Several cross-field problems found by the model validator at once."""

    def __init__(self, problems: list[ConfigError]) -> None:
        super().__init__("; ".join(str(problem) for problem in problems))
        self.problems = problems


# --------------------------------------------------------------------------- Config


class Config(BaseSettings):
    """Configuration of an etcdraft :class:`~etcdraft.Node` (Go: ``raft.Config``).

    Every field can be set as a keyword argument or through the environment variable
    ``ETCDRAFT_<FIELD>`` (e.g. ``ETCDRAFT_NODE_ID``); keyword arguments take priority
    and empty environment variables count as unset. The instance is immutable: use
    :meth:`replace` to derive a modified, re-validated copy.

    Raises:
        ConfigError: from the constructor, when a field is missing, malformed or
            inconsistent with another field. ``ConfigError.field`` names the (first)
            offending field and the message lists every problem and how to fix it.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
        env_ignore_empty=True,
        hide_input_in_errors=True,
        validate_default=False,
    )

    node_id: str = Field(
        description="This node's id, unique in the cluster; part of etcd keys, so no "
        "'/', '@', ',' or whitespace.",
    )
    raft_addr: str = Field(
        default="",
        description="This node's advertised address, recorded in the membership.",
    )
    raft_dir: str = Field(
        default="",
        description="Local directory for snapshots of the applied state; '' disables "
        "local snapshots (the state is then recovered from etcd alone).",
    )
    bootstrap: bool = Field(
        default=False,
        description="Write the initial membership (this node + peers) if none exists.",
    )
    peers: _CommaList = Field(
        default_factory=list,
        description="Initial members as 'nodeID@address' entries.",
    )
    snap_count: _PositiveInt = Field(
        default=3,
        description="Number of local snapshots retained in raft_dir.",
    )
    send_timeout: _Duration = Field(
        default=_DEFAULT_SEND_TIMEOUT,
        description="Deadline of one etcd round trip (broadcast, quorum check).",
    )
    shutdown_timeout: float = Field(
        default=None,
        validate_default=True,
        description="How long stop() waits for committed entries to be applied; "
        "defaults to 5 x send_timeout.",
    )
    heartbeat_timeout: _Duration = Field(
        default=0.5,
        description="Interval of lease keep-alives and progress reports.",
    )
    leader_lease_timeout: _Duration = Field(
        default=0.5,
        description="Safety margin: the leader stops claiming leadership this long "
        "before its lease could expire at etcd.",
    )
    election_timeout: _Duration = Field(
        default=2.0,
        description="TTL of the session lease (rounded up to whole seconds; etcd "
        "enforces its own minimum, 2s with default etcd flags).",
    )
    snapshot_threshold: _PositiveInt = Field(
        default=1000,
        description="Replicated entries beyond trailing_logs that trigger pruning of "
        "old entries in etcd.",
    )
    trailing_logs: _PositiveInt = Field(
        default=1000,
        description="Replicated entries kept in etcd after pruning, for followers to catch up.",
    )
    trailing_bytes: _ByteSize = Field(
        default=256 * 1024**2,
        description="Bytes of replicated entries kept in etcd after pruning (beside "
        "trailing_logs: whichever keeps less wins); bounds what the log takes of etcd's "
        "backend quota (2 GiB by default). Accepts units: '256MiB'.",
    )
    max_block_bytes: _ByteSize = Field(
        default=64 * 1024**2,
        description="Largest encoded state broadcast() accepts; a larger one is an "
        "InvalidStateError. States above one etcd request are written as pieces.",
    )
    etcd_max_request_bytes: _ByteSize = Field(
        default=1536 * 1024,
        description="What etcd accepts in one request (etcd's --max-request-bytes, "
        "1.5 MiB by default); lowered automatically when etcd refuses a request as too "
        "large.",
    )
    fast_takeover: bool = Field(
        default=True,
        description="The leader puts a heartbeat several times per heartbeat_timeout; "
        "when live members see none for heartbeat_timeout, the next candidate deposes "
        "the silent leader (sub-second crash failover). False: wait for lease expiry.",
    )
    endpoints: _CommaList = Field(
        default_factory=list,
        description="etcd client URLs, e.g. http://127.0.0.1:2379.",
    )
    namespace: str = Field(
        default=DEFAULT_NAMESPACE,
        description="Key prefix owned by this cluster in etcd, e.g. /etcdraft/my-chain.",
    )
    tls_ca_file: _OptionalFile = Field(
        default=None,
        description="CA bundle to verify etcd's server certificate (https endpoints).",
    )
    tls_cert_file: _OptionalFile = Field(
        default=None,
        description="Client certificate for etcd's client-certificate auth.",
    )
    tls_key_file: _OptionalFile = Field(
        default=None,
        description="Private key of tls_cert_file.",
    )
    tls_key_password: Annotated[SecretStr | None, BeforeValidator(_non_empty_optional)] = Field(
        default=None,
        description="Password of an encrypted tls_key_file; a secret, never shown "
        "(needs the 'cryptography' package: pip install 'etcdraft[tls]').",
    )
    tls_server_name: str | None = Field(
        default=None,
        description="Name to verify in etcd's server certificate instead of the "
        "endpoint's host (for endpoints given as IP addresses).",
    )
    dial_timeout: _Duration = Field(
        default=2.0,
        description="Deadline of setting up one connection to an etcd endpoint "
        "(TCP, TLS and HTTP/2 handshakes).",
    )
    keepalive_time: _DurationOrOff = Field(
        default=10.0,
        description="Interval of HTTP/2 keepalive pings on idle etcd connections "
        "(0 disables them); etcd refuses pings more often than its "
        "--grpc-keepalive-min-time (5s by default).",
    )
    keepalive_timeout: _Duration = Field(
        default=5.0,
        description="How long a keepalive ping may go unanswered before the "
        "connection is closed and another endpoint is used.",
    )
    username: str | None = Field(
        default=None,
        description="etcd user for role-based auth (requires password).",
    )
    password: Annotated[SecretStr | None, BeforeValidator(_non_empty_optional)] = Field(
        default=None,
        description="Password of username; a secret, never shown in repr or logs.",
    )
    http_addr: _HttpAddr = Field(
        default=None,
        description="host:port where the node serves its HTTP endpoints (/raft/node, "
        "/health/live, /health/ready, /leader, /replica, /metrics); None or '' = off.",
    )
    readiness_max_blocks_behind: _NonNegativeInt = Field(
        default=3,
        description="/health/ready answers 503 when the applied height is more than "
        "this many blocks behind the log head in etcd.",
    )

    def __init__(self, **values: Any) -> None:
        """Build and validate a config from keyword arguments and the environment.

        Args:
            **values: field values; fields not given are read from ``ETCDRAFT_<FIELD>``
                environment variables, then fall back to their defaults.

        Raises:
            ConfigError: when a field is missing, malformed or inconsistent with
                another field (``field`` names the first one).
        """
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _to_config_error(exc) from exc
        except SettingsError as exc:
            raise ConfigError(f"invalid config: {exc}") from exc

    # ----------------------------------------------------------------- field checks

    @field_validator("node_id")
    @classmethod
    def _validate_node_id(cls, value: str) -> str:
        check_node_id(value, "node_id")
        return value

    @field_validator("raft_addr")
    @classmethod
    def _validate_raft_addr(cls, value: str) -> str:
        _check_addr(value, "raft_addr")
        return value

    @field_validator("raft_dir")
    @classmethod
    def _validate_raft_dir(cls, value: str) -> str:
        if "\0" in value:
            raise ConfigError("raft_dir must not contain NUL characters")
        if value and os.path.exists(value) and not os.path.isdir(value):
            raise ConfigError(
                f"raft_dir {value!r} exists but is not a directory: point it at a "
                "directory (it is created if missing) or leave it empty to disable "
                "local snapshots"
            )
        return value

    @field_validator("peers")
    @classmethod
    def _validate_peers(cls, value: list[str]) -> list[str]:
        ids: dict[str, str] = {}
        addrs: dict[str, str] = {}
        for entry in value:
            peer = parse_peer(entry)
            if peer.node_id in ids:
                raise ConfigError(
                    f"node id {peer.node_id!r} appears twice ({ids[peer.node_id]!r} and "
                    f"{entry!r}): list each member once"
                )
            if peer.addr in addrs:
                raise ConfigError(
                    f"address {peer.addr!r} appears twice ({addrs[peer.addr]!r} and "
                    f"{entry!r}): each member needs its own address"
                )
            ids[peer.node_id] = entry
            addrs[peer.addr] = entry
        return value

    @field_validator("shutdown_timeout", mode="before")
    @classmethod
    def _resolve_shutdown_timeout(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            send_timeout = info.data.get("send_timeout", _DEFAULT_SEND_TIMEOUT)
            return SHUTDOWN_TIMEOUT_FACTOR * send_timeout
        return _positive_duration(value)

    @field_validator("endpoints")
    @classmethod
    def _validate_endpoints(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for url in value:
            _check_endpoint(url)
            if url in seen:
                raise ConfigError(f"endpoint {_redact_url(url)!r} appears twice: list it once")
            seen.add(url)
        return value

    @field_validator("namespace")
    @classmethod
    def _validate_namespace(cls, value: str) -> str:
        example = f"{DEFAULT_NAMESPACE.rsplit('/', 1)[0]}/my-chain"
        if not value:
            raise ConfigError(f"namespace must not be empty: use a key prefix such as {example!r}")
        if any(char.isspace() or not char.isprintable() for char in value):
            raise ConfigError(
                f"namespace {value!r} contains whitespace or control characters: "
                f"use a key prefix such as {example!r}"
            )
        if not value.startswith("/"):
            raise ConfigError(
                f"namespace {value!r} must start with '/': use {'/' + value.rstrip('/')!r}"
            )
        if value == "/":
            raise ConfigError(
                f"namespace must not be the root '/': use a key prefix such as {example!r}"
            )
        if value.endswith("/"):
            raise ConfigError(
                f"namespace {value!r} must not end with '/': use {value.rstrip('/')!r}"
            )
        if "//" in value:
            raise ConfigError(
                f"namespace {value!r} contains an empty segment ('//'): "
                f"use {re.sub('/+', '/', value)!r}"
            )
        return value

    @field_validator("tls_ca_file", "tls_cert_file", "tls_key_file")
    @classmethod
    def _validate_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not os.path.isfile(value):
            reason = "is not a file" if os.path.exists(value) else "does not exist"
            raise ConfigError(
                f"{info.field_name} {value!r} {reason}: give the path of an existing "
                "PEM file, or leave it unset"
            )
        return value

    @field_validator("username")
    @classmethod
    def _validate_username(cls, value: str | None) -> str | None:
        if value is not None and not value:
            raise ConfigError("must not be empty: leave it unset (None) to disable auth")
        return value

    # ----------------------------------------------------------------- cross-field checks

    @model_validator(mode="before")
    @classmethod
    def _none_shutdown_means_default(cls, data: Any) -> Any:
        # An explicit ``shutdown_timeout=None`` means "derive it from send_timeout",
        # exactly like leaving it unset (so it stays out of ``model_fields_set``).
        if (
            isinstance(data, dict)
            and "shutdown_timeout" in data
            and data["shutdown_timeout"] is None
        ):
            data = {k: v for k, v in data.items() if k != "shutdown_timeout"}
        return data

    @model_validator(mode="after")
    def _check_combinations(self) -> Config:
        problems: list[ConfigError] = []
        election = self.election_timeout
        heartbeat = self.heartbeat_timeout
        lease = self.leader_lease_timeout
        fmt = format_duration
        if heartbeat >= election:
            problems.append(
                ConfigError(
                    f"election_timeout must be greater than heartbeat_timeout "
                    f"({fmt(election)} <= {fmt(heartbeat)}): the lease is renewed every "
                    "heartbeat_timeout and expires after election_timeout; raise "
                    "election_timeout or lower heartbeat_timeout (a third of "
                    "election_timeout or less is recommended)",
                    field="election_timeout",
                )
            )
        if lease >= election:
            problems.append(
                ConfigError(
                    f"leader_lease_timeout must be less than election_timeout "
                    f"({fmt(lease)} >= {fmt(election)}): the leader stops claiming "
                    "leadership leader_lease_timeout before its lease could expire, so it "
                    "would never lead; lower leader_lease_timeout or raise election_timeout",
                    field="leader_lease_timeout",
                )
            )
        elif heartbeat < election and heartbeat + lease >= election:
            problems.append(
                ConfigError(
                    f"heartbeat_timeout + leader_lease_timeout must be less than "
                    f"election_timeout ({fmt(heartbeat)} + {fmt(lease)} >= "
                    f"{fmt(election)}): otherwise the leader's claim lapses between two "
                    "keep-alives and is_leader() flaps; lower heartbeat_timeout or "
                    "leader_lease_timeout, or raise election_timeout",
                    field="heartbeat_timeout",
                )
            )
        if self.send_timeout > election:
            problems.append(
                ConfigError(
                    f"send_timeout must not exceed election_timeout "
                    f"({fmt(self.send_timeout)} > {fmt(election)}): an etcd round trip "
                    "allowed to outlast the session lease cannot keep leadership alive; "
                    "lower send_timeout or raise election_timeout",
                    field="send_timeout",
                )
            )
        problems.extend(self._peer_problems())
        problems.extend(self._tls_and_auth_problems())
        if problems:
            raise _ConfigProblems(problems)
        return self

    def _peer_problems(self) -> list[ConfigError]:
        problems: list[ConfigError] = []
        for peer in self.peer_list():
            if peer.node_id == self.node_id and self.raft_addr and peer.addr != self.raft_addr:
                problems.append(
                    ConfigError(
                        f"peers lists this node ({peer.node_id!r}) at {peer.addr!r} but "
                        f"raft_addr is {self.raft_addr!r}: make them agree or drop this "
                        "node from peers",
                        field="peers",
                    )
                )
            elif peer.node_id != self.node_id and self.raft_addr and peer.addr == self.raft_addr:
                problems.append(
                    ConfigError(
                        f"peer {str(peer)!r} has this node's raft_addr {self.raft_addr!r}: "
                        "each member needs its own address",
                        field="peers",
                    )
                )
        return problems

    def _tls_and_auth_problems(self) -> list[ConfigError]:
        problems: list[ConfigError] = []
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            given, missing = (
                ("tls_cert_file", "tls_key_file")
                if self.tls_key_file is None
                else ("tls_key_file", "tls_cert_file")
            )
            problems.append(
                ConfigError(
                    f"{given} is set but {missing} is not: client-certificate auth needs "
                    "both the certificate and its private key",
                    field=missing,
                )
            )
        if self.tls_key_password is not None and self.tls_key_file is None:
            problems.append(
                ConfigError(
                    "tls_key_password is set but tls_key_file is not: the password "
                    "decrypts the client key; set tls_key_file (and tls_cert_file)",
                    field="tls_key_file",
                )
            )
        schemes = {urlsplit(url).scheme.lower() for url in self.endpoints}
        if len(schemes) > 1:
            problems.append(
                ConfigError(
                    "endpoints mix http:// and https://: every endpoint of one etcd "
                    "cluster uses the same scheme; list them all as https:// (TLS) or "
                    "all as http://",
                    field="endpoints",
                )
            )
        tls_fields = [
            name
            for name in (
                "tls_ca_file",
                "tls_cert_file",
                "tls_key_file",
                "tls_key_password",
                "tls_server_name",
            )
            if getattr(self, name) is not None
        ]
        if tls_fields:
            for url in self.endpoints:
                if urlsplit(url).scheme.lower() != "https":
                    problems.append(
                        ConfigError(
                            f"endpoint {_redact_url(url)!r} uses http:// but TLS is "
                            f"configured ({', '.join(tls_fields)}): use https:// endpoints",
                            field="endpoints",
                        )
                    )
                    break
        if (self.username is None) != (self.password is None):
            given, missing = (
                ("username", "password") if self.password is None else ("password", "username")
            )
            problems.append(
                ConfigError(
                    f"{given} is set but {missing} is not: etcd authentication needs both",
                    field=missing,
                )
            )
        return problems

    # ----------------------------------------------------------------- helpers

    def __setattr__(self, name: str, value: Any) -> None:
        raise ConfigError(
            f"Config is immutable: cannot set {name!r}; use config.replace({name}=...) "
            "to get a validated copy",
            field=name if name in type(self).model_fields else None,
        )

    def __delattr__(self, name: str) -> None:
        raise ConfigError(
            f"Config is immutable: cannot delete {name!r}",
            field=name if name in type(self).model_fields else None,
        )

    def peer_list(self) -> list[Peer]:
        """The ``peers`` entries, parsed.

        Returns:
            One :class:`Peer` per entry of ``peers``, in order.
        """
        return [parse_peer(entry) for entry in self.peers]

    def replace(self, **changes: Any) -> Config:
        """A copy of this config with some fields changed, validated again.

        The environment is not read again. ``shutdown_timeout`` keeps following
        ``send_timeout`` unless it was set explicitly.

        Args:
            **changes: the fields to change.

        Returns:
            The new config.

        Raises:
            ConfigError: when the result is invalid.
        """
        values: dict[str, Any] = {name: getattr(self, name) for name in type(self).model_fields}
        if "shutdown_timeout" not in self.model_fields_set:
            values["shutdown_timeout"] = None
        values.update(changes)
        return type(self)(**values)

    def describe(self) -> dict[str, Any]:
        """A log-safe summary of the config: the password is masked.

        Durations are formatted Go-style (``"500ms"``), so every value can be written
        back to the matching environment variable.

        Returns:
            A new dict with one entry per field.
        """
        result: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in _SECRET_FIELDS:
                value = None if value is None else _MASK
            elif name in _DURATION_FIELDS:
                value = format_duration(value)
            elif isinstance(value, list):
                value = list(value)
            result[name] = value
        return result

    @classmethod
    def env_var(cls, field: str) -> str:
        """The environment variable that sets ``field``.

        Args:
            field: a field name, e.g. ``"send_timeout"``.

        Returns:
            The variable name, e.g. ``"ETCDRAFT_SEND_TIMEOUT"``.

        Raises:
            ConfigError: when ``field`` is not a field of :class:`Config`.
        """
        if field not in cls.model_fields:
            raise ConfigError(f"unknown config field {field!r}", field=field)
        return f"{ENV_PREFIX}{field.upper()}"

    @classmethod
    def go_field_names(cls) -> dict[str, str | None]:
        """Go field name of every field (``None`` for fields etcdraft added).

        Returns:
            A new dict ``{python_name: go_name_or_None}`` in field order.
        """
        return {name: GO_FIELD_NAMES.get(name) for name in cls.model_fields}


_DURATION_FIELDS: Final = frozenset(
    {
        "send_timeout",
        "shutdown_timeout",
        "heartbeat_timeout",
        "leader_lease_timeout",
        "election_timeout",
    }
)


def _check_endpoint(url: str) -> None:
    shown = _redact_url(url)
    example = "'http://127.0.0.1:2379'"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(
            f"endpoint {shown!r} is not a valid URL (bad port?): use e.g. {example}"
        ) from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ConfigError(f"endpoint {shown!r} must be an http:// or https:// URL, e.g. {example}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"endpoint {shown!r} must not contain credentials: set username and password instead"
        )
    if not parts.hostname:
        raise ConfigError(f"endpoint {shown!r} has no host: use e.g. {example}")
    if port is None:
        raise ConfigError(
            f"endpoint {shown!r} has no port: etcd's client port is usually 2379, e.g. {example}"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(
            f"endpoint {shown!r} must not have a path, query or fragment: use e.g. {example}"
        )


def _redact_url(url: str) -> str:
    """``url`` with any user-info (``user:password@``) masked."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return f"{scheme}{sep}{netloc}{slash}{tail}"


# --------------------------------------------------------------------------- errors


def _to_config_error(exc: ValidationError) -> ConfigError:
    """Turn pydantic's ``ValidationError`` into one ``ConfigError`` naming the fields."""
    items: list[tuple[str | None, str]] = []
    for error in exc.errors():
        loc = error.get("loc", ())
        field = str(loc[0]) if loc else None
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, _ConfigProblems):
            items.extend((problem.field, str(problem)) for problem in cause.problems)
            continue
        if isinstance(cause, ConfigError) and field is None:
            field = cause.field
        items.append((field, _describe_error(error, field, loc, cause)))
    if not items:  # pragma: no cover - pydantic never raises an empty ValidationError
        return ConfigError(f"invalid config: {exc}")
    message = "; ".join(_prefix(field, text) for field, text in items)
    return ConfigError(message, field=items[0][0])


def _describe_error(
    error: Any, field: str | None, loc: tuple[int | str, ...], cause: object
) -> str:
    kind = error.get("type")
    if kind == "missing":
        return "is required: pass it as a keyword argument or set its environment variable"
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(field), list(Config.model_fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"is not a Config field{hint}"
    if isinstance(cause, ValueError):
        text = str(cause)
    else:
        text = str(error.get("msg", "invalid value"))
        if field not in _SECRET_FIELDS and "input" in error:
            shown = repr(error["input"])
            if len(shown) > 80:
                shown = shown[:77] + "..."
            text = f"{text}, got {shown}"
    if len(loc) > 1:
        text = f"item {loc[1]}: {text}"
    return text


def _prefix(field: str | None, text: str) -> str:
    if field is None:
        return f"invalid config: {text}"
    if field not in Config.model_fields:
        return f"unknown config field {field!r}: {text}"
    return f"invalid config field {field!r} (env {ENV_PREFIX}{field.upper()}): {text}"
