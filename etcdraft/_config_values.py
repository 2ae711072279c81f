"""Value types of :class:`~etcdraft.config.Config`: Go-style durations, peers, and
the annotated field types with their validators (split from ``config.py``; the public
names are re-exported there)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from types import MappingProxyType
from typing import Annotated, Any, Final, NamedTuple

from pydantic import AfterValidator, BeforeValidator, SecretStr
from pydantic_settings import NoDecode

from etcdraft.errors import ConfigError

# --------------------------------------------------------------------------- durations

_NS_PER_UNIT: Final[Mapping[str, int]] = MappingProxyType(
    {
        "ns": 1,
        "us": 1_000,
        "\u00b5s": 1_000,  # micro sign, as printed by Go
        "\u03bcs": 1_000,  # Greek small letter mu
        "ms": 1_000_000,
        "s": 1_000_000_000,
        "m": 60 * 1_000_000_000,
        "h": 3600 * 1_000_000_000,
    }
)
_NUM: Final = r"(?:\d+(?:\.\d*)?|\.\d+)"
_UNIT: Final = r"(?:ns|us|\u00b5s|\u03bcs|ms|s|m|h)"
_GO_DURATION_RE: Final = re.compile(rf"(?:{_NUM}{_UNIT})+")
_GO_COMPONENT_RE: Final = re.compile(rf"({_NUM})({_UNIT})")
_SECONDS_RE: Final = re.compile(rf"{_NUM}(?:[eE][+-]?\d+)?")
_DURATION_HINT: Final = (
    "use Go-style durations such as '200ms', '1.5s', '1m' or a number of seconds"
)


def parse_duration(value: str | float | timedelta) -> float:
    """Parse a duration into seconds.

    Accepts what Go's ``time.ParseDuration`` accepts (``"300ms"``, ``"1.5s"``,
    ``"1m"``, ``"2h45m"``, ``"500us"`` or ``"500µs"``, ``"10ns"``, ``"0"``), plain
    numbers and numeric strings meaning seconds (``2``, ``"0.5"``), and
    :class:`datetime.timedelta`. Surrounding whitespace is ignored; units are
    case-sensitive, as in Go.

    Args:
        value: the duration to parse.

    Returns:
        The duration in seconds (never negative).

    Raises:
        ConfigError: (a ``ValueError``) when the value is negative, not finite, of
            an unsupported type, or cannot be parsed.
    """
    if isinstance(value, bool):
        raise ConfigError(f"cannot use a boolean ({value!r}) as a duration: {_DURATION_HINT}")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float, Decimal)):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = float(_parse_duration_text(value))
    else:
        raise ConfigError(f"cannot use a {type(value).__name__} as a duration: {_DURATION_HINT}")
    if not math.isfinite(seconds):
        raise ConfigError(f"duration {value!r} is not finite: {_DURATION_HINT}")
    if seconds < 0:
        raise ConfigError(f"duration {value!r} is negative: durations must be zero or more")
    return seconds


def _parse_duration_text(text: str) -> Decimal:
    """Parse a duration string into seconds, as an exact decimal (sign applied)."""
    body = text.strip()
    sign = 1
    if body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if _SECONDS_RE.fullmatch(body):
        try:
            total = Decimal(body)
        except InvalidOperation:  # pragma: no cover - the regex only admits numbers
            raise ConfigError(f"cannot parse duration {text!r}: {_DURATION_HINT}") from None
    elif _GO_DURATION_RE.fullmatch(body):
        total = sum(
            (
                Decimal(number) * _NS_PER_UNIT[unit]
                for number, unit in _GO_COMPONENT_RE.findall(body)
            ),
            Decimal(0),
        ) / Decimal(1_000_000_000)
    else:
        raise ConfigError(f"cannot parse duration {text!r}: {_DURATION_HINT}")
    if sign < 0 and total != 0:
        raise ConfigError(f"duration {text!r} is negative: durations must be zero or more")
    return total


def format_duration(seconds: float | timedelta) -> str:
    """Format a duration the way Go prints a ``time.Duration``, compactly.

    Sub-second values use the largest fitting unit (``"10ns"``, ``"1.5µs"``,
    ``"200ms"``); longer ones combine hours, minutes and seconds, leaving out zero
    parts (``"1.5s"``, ``"1m30s"``, ``"2h45m"``, where Go would print ``"2h45m0s"``).
    Zero is ``"0s"``. The value is rounded to whole nanoseconds, and the result is
    always accepted by :func:`parse_duration`.

    Args:
        seconds: the duration in seconds, or a :class:`datetime.timedelta`.

    Returns:
        The formatted duration.

    Raises:
        ConfigError: (a ``ValueError``) when the value is not a finite number.
    """
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ConfigError(f"cannot format {seconds!r} as a duration: expected seconds")
    if not math.isfinite(seconds):
        raise ConfigError(f"cannot format {seconds!r} as a duration: not finite")
    exact = Decimal(seconds) if isinstance(seconds, int) else Decimal(repr(seconds))
    total_ns = int((exact * 1_000_000_000).to_integral_value(rounding=ROUND_HALF_EVEN))
    if total_ns == 0:
        return "0s"
    sign = "-" if total_ns < 0 else ""
    ns = abs(total_ns)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_fixed(ns, 1_000)}\u00b5s"
    if ns < 1_000_000_000:
        return f"{sign}{_fixed(ns, 1_000_000)}ms"
    hours, rest = divmod(ns, _NS_PER_UNIT["h"])
    minutes, rest = divmod(rest, _NS_PER_UNIT["m"])
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if rest:
        parts.append(f"{_fixed(rest, 1_000_000_000)}s")
    return sign + "".join(parts)


def _fixed(value: int, unit: int) -> str:
    """``value / unit`` as a decimal string without trailing zeros."""
    whole, fraction = divmod(value, unit)
    if not fraction:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{fraction:0{digits}d}".rstrip("0")


# --------------------------------------------------------------------------- peers


class Peer(NamedTuple):
    """One member of the cluster, written ``"nodeID@address"`` in ``Config.peers``.

    Attributes:
        node_id: the member's node id.
        addr: the member's advertised address (its ``raft_addr``).
    """

    node_id: str
    addr: str

    def __str__(self) -> str:
        return f"{self.node_id}@{self.addr}"


def check_node_id(node_id: str, what: str) -> None:
    """Raise ``ConfigError`` unless ``node_id`` can be used in etcd keys and peer lists."""
    if not node_id:
        raise ConfigError(f"{what} must not be empty: give every node a unique name, e.g. 'node-1'")
    for char in node_id:
        if char in "/@," or char.isspace() or not char.isprintable():
            raise ConfigError(
                f"{what} {node_id!r} contains {char!r}: node ids become part of etcd keys "
                "and of 'nodeID@address' peer entries, so '/', '@', ',', whitespace and "
                "control characters are not allowed"
            )


def _check_addr(addr: str, what: str) -> None:
    """Raise ``ConfigError`` unless ``addr`` can be recorded as an address."""
    for char in addr:
        if char == "," or char.isspace() or not char.isprintable():
            raise ConfigError(
                f"{what} {addr!r} contains {char!r}: addresses must not contain ',', "
                "whitespace or control characters"
            )


def parse_peer(entry: str) -> Peer:
    """Parse one ``"nodeID@address"`` peer entry (Go: an element of ``Config.Peers``).

    The entry is split at the first ``@``; surrounding whitespace is ignored.

    Args:
        entry: the peer entry, e.g. ``"node-2@10.0.0.2:7000"``.

    Returns:
        The parsed :class:`Peer`.

    Raises:
        ConfigError: (a ``ValueError``) when the entry is not of the form
            ``nodeID@address`` with a valid node id and a non-empty address.
    """
    if not isinstance(entry, str):
        raise ConfigError(f"peer entry {entry!r} must be a string 'nodeID@address'", field="peers")
    text = entry.strip()
    node_id, at, addr = text.partition("@")
    if not at:
        raise ConfigError(
            f"peer entry {entry!r} has no '@': write peers as 'nodeID@address', "
            "e.g. 'node-2@10.0.0.2:7000'",
            field="peers",
        )
    if not node_id:
        raise ConfigError(
            f"peer entry {entry!r} has an empty node id: write 'nodeID@address'", field="peers"
        )
    if not addr:
        raise ConfigError(
            f"peer entry {entry!r} has an empty address: write 'nodeID@address'", field="peers"
        )
    try:
        check_node_id(node_id, f"node id in peer entry {entry!r}")
        _check_addr(addr, f"address in peer entry {entry!r}")
    except ConfigError as exc:
        raise ConfigError(str(exc), field="peers") from None
    return Peer(node_id, addr)


# --------------------------------------------------------------------------- field types


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ConfigError(f"must be greater than 0, got {value!r}: use e.g. '500ms' or '2s'")
    return seconds


def _non_negative_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds < 0:
        raise ConfigError(f"must not be negative, got {value!r}: use e.g. '10s', or 0 to disable")
    return seconds


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ConfigError(f"expected an integer, got the boolean {value!r}")
    return value


def _at_least_one(value: int) -> int:
    if value < 1:
        raise ConfigError(f"must be at least 1, got {value}")
    return value


def _at_least_zero(value: int) -> int:
    if value < 0:
        raise ConfigError(f"must be 0 or more, got {value}")
    return value


def split_host_port(addr: str) -> tuple[str, int]:
    """Split a listen address ``host:port`` (``http_addr``) into host and port.

    ``host`` may be a name, an IPv4 address, an IPv6 address in brackets
    (``[::1]:8080``) or empty (``:8080``: every interface, as in Go). Port 0 picks a
    free port.

    Raises:
        ConfigError: (a ``ValueError``) when ``addr`` is not of that form.
    """
    example = "e.g. '127.0.0.1:8080', '0.0.0.0:8080' or '[::1]:8080'"
    if "://" in addr or "/" in addr:
        raise ConfigError(
            f"{addr!r} is not host:port: write it without a scheme or path, {example}"
        )
    if any(char.isspace() or not char.isprintable() for char in addr):
        raise ConfigError(f"{addr!r} contains whitespace or control characters: use {example}")
    if addr.startswith("["):
        host, sep, port = addr[1:].partition("]:")
        if not sep or not host:
            raise ConfigError(f"{addr!r} is not [ipv6]:port: use {example}")
    else:
        host, sep, port = addr.rpartition(":")
        if not sep:
            raise ConfigError(f"{addr!r} has no port: write host:port, {example}")
        if ":" in host:
            raise ConfigError(f"{addr!r}: put an IPv6 address in brackets, e.g. '[::1]:8080'")
    if not port.isdigit() or not port.isascii() or int(port) > 65535:
        raise ConfigError(f"{addr!r} has no valid port (0-65535): use {example}")
    return host, int(port)


def _http_addr(value: Any) -> Any:
    if value is None or value == "":
        return None  # off
    if isinstance(value, str):
        split_host_port(value.strip())
        return value.strip()
    return value  # pydantic reports the type error


def _split_list(value: Any) -> Any:
    """Turn a comma-separated string (or a list) into a list of stripped, non-empty items."""
    if isinstance(value, str):
        if value.strip().startswith("["):
            raise ConfigError(
                f"{value!r} looks like JSON: write lists as comma-separated values, "
                "e.g. 'node-1@10.0.0.1:7000,node-2@10.0.0.2:7000'"
            )
        items: list[Any] = value.split(",")
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        return value  # pydantic reports the type error
    result: list[Any] = []
    for item in items:
        if isinstance(item, Peer):
            item = str(item)
        if isinstance(item, str):
            item = item.strip()
            if not item:
                continue
        result.append(item)
    return result


def _non_empty_optional(value: Any) -> Any:
    if value == "" or (isinstance(value, SecretStr) and not value.get_secret_value()):
        raise ConfigError("must not be empty: leave it unset (None) instead")
    return value


_Duration = Annotated[float, BeforeValidator(_positive_duration)]
"""A duration in seconds (> 0), given in any form :func:`parse_duration` accepts."""

_DurationOrOff = Annotated[float, BeforeValidator(_non_negative_duration)]
"""A duration in seconds (>= 0; 0 turns the feature off)."""

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_size(value: Any) -> int:
    """A size in bytes: an integer, or a string such as ``"262144"``, ``"1.5MiB"``,
    ``"64 MiB"``, ``"2GB"`` (KiB/MiB/GiB are powers of 1024, KB/MB/GB of 1000).

    Raises:
        ConfigError: not a size, or not above 0.
    """
    if isinstance(value, bool):
        raise ConfigError(f"expected a size in bytes, got the boolean {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        unit = m.group(2).lower() if m else ""
        if m is None or unit not in _SIZE_UNITS:
            raise ConfigError(
                f"{value!r} is not a size: use bytes or a unit, e.g. '262144', '1.5MiB', '64MiB'"
            )
        size = int(float(m.group(1)) * _SIZE_UNITS[unit])
    else:
        raise ConfigError(f"expected a size in bytes, got {type(value).__name__}")
    if size < 1:
        raise ConfigError(f"must be greater than 0, got {value!r}")
    return size


_ByteSize = Annotated[int, BeforeValidator(parse_size)]
"""A size in bytes (> 0), as an integer or a string with a unit."""

_PositiveInt = Annotated[int, BeforeValidator(_no_bool), AfterValidator(_at_least_one)]
"""An integer >= 1."""

_NonNegativeInt = Annotated[int, BeforeValidator(_no_bool), AfterValidator(_at_least_zero)]
"""An integer >= 0."""

_HttpAddr = Annotated[str | None, BeforeValidator(_http_addr)]
"""A listen address ``host:port``; None (or empty) turns the server off."""

_CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_list)]
"""A list of strings, also given as one comma-separated string (as in the environment)."""

_OptionalFile = Annotated[str | None, BeforeValidator(_non_empty_optional)]
"""A path to an existing file, or None."""
