"""The one wrapper over etcd's JSON gateway (through etcd3gw).

Only this module (with its parts ``_etcd_wire``, the gateway's JSON shapes, and
``_etcd_errors``, the error mapping) imports ``etcd3gw`` and ``requests`` and only it
catches their exceptions: every failure leaves it as one of :mod:`etcdraft.errors`,
mapped in :func:`map_http_error` / :func:`map_transport_error`.

Endpoint failover follows Patroni: requests go to the last endpoint that worked;
a transient failure moves on to the next, and the *remaining* deadline is split
across the endpoints not yet tried in this round, so one dead or paused member costs
at most its share of the caller's deadline. Responses carry etcd's header: a
linearizable answer whose revision is below one already observed before the request
was sent comes from a member whose view went backwards; it is not trusted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.adapters
from etcd3gw.client import Etcd3Client

from etcdraft._deadline import Deadline
from etcdraft._etcd_errors import (
    CompactedError,
    LeaseNotFoundError,
    TransientError,
    _grpc_fields,
    _never_sent,
    _TokenExpired,
    map_http_error,
    map_transport_error,
)
from etcdraft._etcd_wire import (
    KV,
    RangeResult,
    TxnResult,
    b64,
    cmp_create,
    cmp_lease,
    cmp_mod,
    cmp_value,
    cmp_version,
    op_delete,
    op_put,
    op_range,
    prefix_end,
    unb64,
)
from etcdraft._http import ConnectError, Pool
from etcdraft.errors import (
    EtcdAuthError,
    EtcdError,
    EtcdraftError,
    EtcdRequestError,
    EtcdTimeoutError,
    EtcdUnavailableError,
)

__all__ = [
    "CompactedError",
    "EtcdClient",
    "KV",
    "LeaseNotFoundError",
    "RangeResult",
    "TransientError",
    "TxnResult",
    "b64",
    "cmp_create",
    "cmp_lease",
    "cmp_mod",
    "cmp_value",
    "cmp_version",
    "map_http_error",
    "map_transport_error",
    "op_delete",
    "op_put",
    "op_range",
    "prefix_end",
    "unb64",
]

log = logging.getLogger(__name__)

#: Extra wait added to a caller's deadline when it is split across endpoints.
MIN_ATTEMPT = 0.05
CONNECT_TIMEOUT = 0.5

# -- the client --------------------------------------------------------------------


_JSON_HEADERS = {"Content-Type": "application/json"}


class _Endpoint:
    def __init__(self, url: str, session: requests.Session, pool: Pool) -> None:
        parts = urlsplit(url)
        self.pool = pool
        self.url = url.rstrip("/")
        self.gw = Etcd3Client(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 2379,
            protocol=parts.scheme or "http",
            api_path="/v3/",
            session=session,
        )
        self.session = session
        self.token: str | None = None
        self.raft_term = 0
        self.bad_until = 0.0  # monotonic; skip while in the future

    def url_for(self, path: str) -> str:
        return str(self.gw.get_url(path))


class EtcdClient:
    """Thread-safe client over a list of etcd endpoints.

    Args:
        endpoints: client URLs (``http://host:port`` or ``https://...``).
        ca_file, cert_file, key_file: TLS verification and client certificate.
        username, password: etcd role-based auth (token obtained and renewed here).
        name: used in thread and log names.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        username: str | None = None,
        password: str | None = None,
        name: str = "etcdraft",
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is required")
        self.name = name
        self._username = username
        self._password = password
        self._lock = threading.Lock()
        self._endpoints: list[_Endpoint] = []
        context: ssl.SSLContext | None = None
        if any(u.startswith("https") for u in endpoints):
            context = ssl.create_default_context(cafile=ca_file)
            if cert_file and key_file:
                context.load_cert_chain(cert_file, key_file)
        for url in endpoints:
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=16)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.trust_env = False  # never route loopback etcd through a proxy
            if ca_file:
                session.verify = ca_file
            if cert_file and key_file:
                session.cert = (cert_file, key_file)
            session.headers["Content-Type"] = "application/json"
            self._endpoints.append(_Endpoint(url, session, Pool(url, context)))
        self._preferred = 0
        self._max_revision = 0
        self._on_endpoint_failure: list[Callable[[str], None]] = []
        self.failovers = 0

    # -- endpoint selection ----------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        return [e.url for e in self._endpoints]

    @property
    def max_revision(self) -> int:
        """The highest etcd revision seen in any response."""
        return self._max_revision

    def on_endpoint_failure(self, callback: Callable[[str], None]) -> None:
        """Register ``callback(endpoint_url)``, called when an endpoint fails."""
        self._on_endpoint_failure.append(callback)

    def _order(self) -> list[_Endpoint]:
        now = time.monotonic()
        with self._lock:
            start = self._preferred
        eps = self._endpoints[start:] + self._endpoints[:start]
        good = [e for e in eps if e.bad_until <= now]
        bad = [e for e in eps if e.bad_until > now]
        return good + bad

    def _mark_bad(self, ep: _Endpoint, seconds: float = 1.0) -> None:
        ep.bad_until = time.monotonic() + seconds
        with self._lock:
            if self._endpoints[self._preferred] is ep and len(self._endpoints) > 1:
                self._preferred = (self._endpoints.index(ep) + 1) % len(self._endpoints)
                self.failovers += 1
        for cb in list(self._on_endpoint_failure):
            try:
                cb(ep.url)
            except Exception:  # a listener must never break the request path
                log.exception("endpoint failure listener failed")

    def _mark_good(self, ep: _Endpoint) -> None:
        ep.bad_until = 0.0
        with self._lock:
            self._preferred = self._endpoints.index(ep)

    def preferred_endpoint(self) -> str:
        return self._order()[0].url

    def session_for(self, url: str) -> tuple[requests.Session, str, dict[str, str]]:
        """Session, base URL and extra headers for a raw request to ``url`` (the watch)."""
        for ep in self._endpoints:
            if ep.url == url:
                headers = {}
                if self._username:
                    if ep.token is None:
                        self._authenticate(ep, Deadline(5.0))
                    headers["Authorization"] = ep.token or ""
                return ep.session, ep.url_for(""), headers
        raise ValueError(f"unknown endpoint {url}")

    def report_failure(self, url: str) -> None:
        for ep in self._endpoints:
            if ep.url == url:
                self._mark_bad(ep)

    # -- core request --------------------------------------------------------------

    def _authenticate(self, ep: _Endpoint, deadline: Deadline) -> None:
        timeout = max(MIN_ATTEMPT, min(deadline.remaining(), 5.0))
        try:
            resp = ep.session.post(
                ep.url_for("auth/authenticate"),
                data=json.dumps({"name": self._username, "password": self._password}),
                timeout=(min(CONNECT_TIMEOUT, timeout), timeout),
            )
        except requests.exceptions.RequestException as exc:
            raise map_transport_error(exc, ep.url) from exc
        if resp.status_code != 200:
            err = map_http_error(resp.status_code, resp.text, ep.url)
            if isinstance(err, EtcdAuthError | EtcdRequestError):
                raise EtcdAuthError(
                    f"etcd at {ep.url} rejected user {self._username!r}: "
                    f"{_grpc_fields(resp.text)[1]}; check username and password",
                    endpoint=ep.url,
                )
            raise err
        ep.token = str(resp.json().get("token", ""))

    def _post_once(
        self, ep: _Endpoint, path: str, body: bytes, timeout: float, floor: int
    ) -> dict[str, Any]:
        headers = _JSON_HEADERS
        if self._username:
            if ep.token is None:
                self._authenticate(ep, Deadline(timeout))
            headers = {**_JSON_HEADERS, "Authorization": ep.token or ""}
        try:
            status, raw = ep.pool.post(
                path, body, headers, timeout, connect_timeout=CONNECT_TIMEOUT
            )
        except ssl.SSLError as exc:
            raise map_transport_error(requests.exceptions.SSLError(str(exc)), ep.url) from exc
        except ConnectError as exc:
            raise TransientError(f"cannot reach etcd at {ep.url}: {exc}", endpoint=ep.url) from exc
        except TimeoutError as exc:
            raise TransientError(
                f"etcd at {ep.url} did not answer in time", endpoint=ep.url
            ) from exc
        except OSError as exc:
            raise TransientError(
                f"cannot reach etcd at {ep.url}: {type(exc).__name__}: {exc}", endpoint=ep.url
            ) from exc
        if status != 200:
            raise map_http_error(status, raw.decode(errors="replace"), ep.url)
        try:
            data: dict[str, Any] = json.loads(raw)
        except ValueError as exc:
            raise TransientError(
                f"etcd at {ep.url} sent a malformed answer", endpoint=ep.url
            ) from exc
        header = data.get("header") or {}
        rev = int(header.get("revision", 0))
        term = int(header.get("raft_term", 0))
        if rev and rev < floor:
            raise TransientError(
                f"etcd at {ep.url} answered at revision {rev}, below revision {floor} "
                "already observed: its view went backwards, not trusting it",
                endpoint=ep.url,
            )
        if term and term < ep.raft_term:
            raise TransientError(
                f"etcd at {ep.url} reported raft term {term} below {ep.raft_term}",
                endpoint=ep.url,
            )
        ep.raft_term = max(ep.raft_term, term)
        if rev > self._max_revision:
            with self._lock:
                self._max_revision = max(self._max_revision, rev)
        return data

    def request(
        self,
        path: str,
        payload: dict[str, Any],
        deadline: Deadline,
        *,
        retry_ambiguous: bool = True,
        check_floor: bool = True,
    ) -> dict[str, Any]:
        """POST ``payload`` to ``/v3/<path>`` with endpoint failover until ``deadline``.

        Args:
            retry_ambiguous: retry after a failure where the request may have been
                applied (read timeout). True for idempotent and fenced operations.
            check_floor: reject answers whose revision is below one seen before.

        Raises:
            EtcdTimeoutError: the deadline expired (the last cause is chained).
            EtcdUnavailableError: not retryable any more.
            EtcdAuthError, EtcdRequestError, CompactedError, LeaseNotFoundError, EtcdError.
        """
        body = json.dumps(payload, separators=(",", ":")).encode()
        last: EtcdraftError | None = None
        attempt = 0
        while True:
            order = self._order()
            for i, ep in enumerate(order):
                remaining = deadline.remaining()
                if remaining <= 0 or deadline.cancelled():
                    break
                share = remaining / (len(order) - i)
                timeout = max(min(share, remaining), min(MIN_ATTEMPT, remaining))
                floor = self._max_revision if check_floor else 0
                attempt += 1
                try:
                    data = self._post_once(ep, path, body, timeout, floor)
                except _TokenExpired as exc:
                    ep.token = None
                    last = exc
                    try:
                        self._authenticate(ep, deadline)
                    except TransientError as auth_exc:
                        last = auth_exc
                        self._mark_bad(ep)
                    continue
                except TransientError as exc:
                    last = exc
                    self._mark_bad(ep)
                    cause = exc.__cause__
                    if not retry_ambiguous and (cause is None or not _never_sent(cause)):
                        raise EtcdUnavailableError(
                            f"{exc} (not retried: the request may have been applied)",
                            endpoint=ep.url,
                        ) from exc
                    log.debug("etcd request %s failed on %s: %s", path, ep.url, exc)
                    continue
                self._mark_good(ep)
                return data
            if deadline.remaining() <= 0 or deadline.cancelled():
                break
            # every endpoint failed fast (e.g. connection refused): back off a little
            deadline.sleep(min(0.05 * attempt, 0.25))
        what = f"etcd request {path} failed on every endpoint ({', '.join(self.endpoints)})"
        if last is None:
            raise EtcdTimeoutError(f"{what}: deadline expired before any attempt")
        raise EtcdTimeoutError(f"{what} within the deadline; last error: {last}") from last

    # -- operations ----------------------------------------------------------------

    def range(
        self,
        key: bytes,
        range_end: bytes | None = None,
        deadline: Deadline | None = None,
        *,
        revision: int = 0,
        limit: int = 0,
        count_only: bool = False,
        keys_only: bool = False,
        descending: bool = False,
    ) -> RangeResult:
        payload: dict[str, Any] = {"key": b64(key)}
        if descending:
            payload["sort_order"] = "DESCEND"
            payload["sort_target"] = "KEY"
        if range_end is not None:
            payload["range_end"] = b64(range_end)
        if revision:
            payload["revision"] = str(revision)
        if limit:
            payload["limit"] = str(limit)
        if count_only:
            payload["count_only"] = True
        if keys_only:
            payload["keys_only"] = True
        data = self.request("kv/range", payload, deadline or Deadline(5.0))
        return RangeResult(
            kvs=[KV.from_json(kv) for kv in data.get("kvs", [])],
            revision=int((data.get("header") or {}).get("revision", 0)),
            more=bool(data.get("more", False)),
            count=int(data.get("count", 0)),
        )

    def get(self, key: bytes, deadline: Deadline | None = None) -> KV | None:
        kvs = self.range(key, deadline=deadline).kvs
        return kvs[0] if kvs else None

    def txn(
        self,
        compare: list[dict[str, Any]],
        success: list[dict[str, Any]],
        failure: list[dict[str, Any]] | None = None,
        deadline: Deadline | None = None,
    ) -> TxnResult:
        payload: dict[str, Any] = {"compare": compare, "success": success}
        if failure:
            payload["failure"] = failure
        data = self.request("kv/txn", payload, deadline or Deadline(5.0))
        return TxnResult(
            succeeded=bool(data.get("succeeded", False)),
            revision=int((data.get("header") or {}).get("revision", 0)),
            responses=list(data.get("responses", [])),
        )

    def put(
        self, key: bytes, value: bytes, deadline: Deadline | None = None, lease: int = 0
    ) -> int:
        payload: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            payload["lease"] = str(lease)
        data = self.request("kv/put", payload, deadline or Deadline(5.0))
        return int((data.get("header") or {}).get("revision", 0))

    def delete(
        self, key: bytes, range_end: bytes | None = None, deadline: Deadline | None = None
    ) -> int:
        payload: dict[str, Any] = {"key": b64(key)}
        if range_end is not None:
            payload["range_end"] = b64(range_end)
        data = self.request("kv/deleterange", payload, deadline or Deadline(5.0))
        return int(data.get("deleted", 0))

    def lease_grant(self, ttl: int, deadline: Deadline) -> tuple[int, int]:
        """Grant a lease; returns (id, granted TTL). Not retried after an ambiguous
        failure (a retry would leak a lease until its TTL)."""
        data = self.request("lease/grant", {"TTL": str(ttl)}, deadline, retry_ambiguous=False)
        if data.get("error"):
            raise EtcdError(f"lease grant failed: {data['error']}")
        return int(data["ID"]), int(data.get("TTL", ttl))

    def lease_keepalive(self, lease_id: int, deadline: Deadline) -> int:
        """Refresh a lease once; returns the remaining TTL (0 = the lease is gone)."""
        data = self.request("lease/keepalive", {"ID": str(lease_id)}, deadline)
        result = data.get("result", data)
        return int(result.get("TTL", 0))

    def lease_revoke(self, lease_id: int, deadline: Deadline) -> None:
        with contextlib.suppress(LeaseNotFoundError):
            self.request("lease/revoke", {"ID": str(lease_id)}, deadline)

    def probe(self, url: str, deadline: Deadline, key: bytes = b"\x00etcdraft-probe") -> None:
        """One linearizable read on ``url`` only (no failover): is it serving?

        ``key`` must be readable by the user: pass a key under the namespace, since a
        role may grant nothing else."""
        for ep in self._endpoints:
            if ep.url == url:
                body = json.dumps({"key": b64(key), "count_only": True}).encode()
                timeout = max(MIN_ATTEMPT, min(deadline.remaining(), 5.0))
                try:
                    self._post_once(ep, "kv/range", body, timeout, self._max_revision)
                except _TokenExpired:  # a stale token says nothing about the endpoint
                    ep.token = None
                    timeout = max(MIN_ATTEMPT, min(deadline.remaining(), 5.0))
                    self._post_once(ep, "kv/range", body, timeout, self._max_revision)
                return
        raise ValueError(f"unknown endpoint {url}")

    def compact(self, revision: int, deadline: Deadline | None = None) -> None:
        self.request(
            "kv/compaction", {"revision": str(revision), "physical": True}, deadline or Deadline(5)
        )

    def close(self) -> None:
        for ep in self._endpoints:
            ep.pool.close()
            ep.session.close()
