"""Unit tests for :mod:`etcdraft.config` (pure parsing and validation, no etcd)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etcdraft.config import (
    DEFAULT_NAMESPACE,
    ENV_PREFIX,
    GO_FIELD_NAMES,
    Config,
    Peer,
    format_duration,
    parse_duration,
    parse_peer,
)
from etcdraft.errors import ConfigError, EtcdraftError

SECRET = "s3cr3t-Pa55word"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No stray ETCDRAFT_* variable from the caller's environment leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


@pytest.fixture
def pem_files(tmp_path: Path) -> dict[str, str]:
    files = {}
    for name in ("ca.pem", "cert.pem", "key.pem"):
        path = tmp_path / name
        path.write_text("-----BEGIN PLACEHOLDER-----\n")
        files[name] = str(path)
    return files


def make(**kwargs: Any) -> Config:
    kwargs.setdefault("node_id", "node-1")
    return Config(**kwargs)


def config_error(**kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        make(**kwargs)
    return info.value


# --------------------------------------------------------------------------- defaults


def test_defaults() -> None:
    cfg = Config(node_id="node-1")
    assert cfg.node_id == "node-1"
    assert cfg.raft_addr == ""
    assert cfg.raft_dir == ""
    assert cfg.bootstrap is False
    assert cfg.peers == []
    assert cfg.peer_list() == []
    assert cfg.snap_count == 3
    assert cfg.send_timeout == 1.0
    assert cfg.shutdown_timeout == 5.0
    assert cfg.heartbeat_timeout == 0.5
    assert cfg.leader_lease_timeout == 0.5
    assert cfg.election_timeout == 2.0
    assert cfg.snapshot_threshold == 1000
    assert cfg.trailing_logs == 1000
    assert cfg.endpoints == []
    assert cfg.namespace == DEFAULT_NAMESPACE == "/etcdraft/default"
    assert cfg.tls_ca_file is None
    assert cfg.tls_cert_file is None
    assert cfg.tls_key_file is None
    assert cfg.username is None
    assert cfg.password is None


def test_config_error_is_value_error_and_etcdraft_error() -> None:
    err = config_error(node_id="")
    assert isinstance(err, ValueError)
    assert isinstance(err, EtcdraftError)


# ----------------------------------------------------------- every field, kwargs and env

# (field, keyword value, environment value, expected attribute value)
FIELD_CASES: list[tuple[str, Any, str, Any]] = [
    ("node_id", "node-7", "node-7", "node-7"),
    ("raft_addr", "10.0.0.1:7000", "10.0.0.1:7000", "10.0.0.1:7000"),
    ("raft_dir", "/var/lib/etcdraft", "/var/lib/etcdraft", "/var/lib/etcdraft"),
    ("bootstrap", True, "true", True),
    ("peers", ["a@h1:1", "b@h2:2"], "a@h1:1,b@h2:2", ["a@h1:1", "b@h2:2"]),
    ("snap_count", 7, "7", 7),
    ("send_timeout", "200ms", "200ms", 0.2),
    ("shutdown_timeout", "30s", "30s", 30.0),
    ("heartbeat_timeout", "100ms", "100ms", 0.1),
    ("leader_lease_timeout", "250ms", "250ms", 0.25),
    ("election_timeout", "5s", "5s", 5.0),
    ("snapshot_threshold", 50, "50", 50),
    ("trailing_logs", 20, "20", 20),
    ("fast_takeover", False, "false", False),
    ("dial_timeout", "750ms", "750ms", 0.75),
    ("trailing_bytes", "64MiB", "64MiB", 64 * 1024**2),
    ("max_block_bytes", 5_000_000, "5MB", 5_000_000),
    ("etcd_max_request_bytes", "256KiB", "262144", 262144),
    ("keepalive_time", "20s", "20s", 20.0),
    ("keepalive_timeout", "3s", "3s", 3.0),
    (
        "endpoints",
        ["http://127.0.0.1:2379", "http://127.0.0.2:2379"],
        "http://127.0.0.1:2379,http://127.0.0.2:2379",
        ["http://127.0.0.1:2379", "http://127.0.0.2:2379"],
    ),
    ("namespace", "/etcdraft/my-chain", "/etcdraft/my-chain", "/etcdraft/my-chain"),
    ("username", "alice", "alice", "alice"),
    ("http_addr", "127.0.0.1:8080", "127.0.0.1:8080", "127.0.0.1:8080"),
    ("readiness_max_blocks_behind", 0, "0", 0),
]


@pytest.mark.parametrize(("field", "kwarg", "env", "expected"), FIELD_CASES)
def test_field_from_kwargs(field: str, kwarg: Any, env: str, expected: Any) -> None:
    extra: dict[str, Any] = {field: kwarg}
    if field == "username":
        extra["password"] = SECRET
    if field != "node_id":
        extra.setdefault("node_id", "node-1")
    cfg = Config(**extra)
    assert getattr(cfg, field) == expected
    assert field in cfg.model_fields_set


@pytest.mark.parametrize(("field", "kwarg", "env", "expected"), FIELD_CASES)
def test_field_from_env(
    monkeypatch: pytest.MonkeyPatch, field: str, kwarg: Any, env: str, expected: Any
) -> None:
    monkeypatch.setenv(f"ETCDRAFT_{field.upper()}", env)
    monkeypatch.setenv("ETCDRAFT_PASSWORD", SECRET)
    if field != "username":
        monkeypatch.setenv("ETCDRAFT_USERNAME", "bob")
    if field != "node_id":
        monkeypatch.setenv("ETCDRAFT_NODE_ID", "node-1")
    cfg = Config()
    assert getattr(cfg, field) == expected


def test_every_field_is_covered() -> None:
    covered = {case[0] for case in FIELD_CASES} | {
        "password",
        "tls_ca_file",
        "tls_cert_file",
        "tls_key_file",
        "tls_key_password",
        "tls_server_name",
    }
    assert covered == set(Config.model_fields)


def test_tls_server_name_and_key_password(
    pem_files: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ETCDRAFT_TLS_SERVER_NAME", "etcd.internal")
    monkeypatch.setenv("ETCDRAFT_TLS_KEY_PASSWORD", SECRET)
    cfg = make(
        endpoints="https://10.0.0.1:2379",
        tls_cert_file=pem_files["cert.pem"],
        tls_key_file=pem_files["key.pem"],
    )
    assert cfg.tls_server_name == "etcd.internal"
    assert cfg.tls_key_password is not None
    assert cfg.tls_key_password.get_secret_value() == SECRET
    assert SECRET not in repr(cfg) and SECRET not in str(cfg.describe())
    monkeypatch.delenv("ETCDRAFT_TLS_SERVER_NAME")
    monkeypatch.delenv("ETCDRAFT_TLS_KEY_PASSWORD")
    err = config_error(tls_key_password=SECRET, endpoints="https://h:2379")
    assert err.field == "tls_key_file"
    err = config_error(tls_server_name="etcd.internal", endpoints="http://h:2379")
    assert err.field == "endpoints" and "https://" in str(err)


def test_keepalive_time_zero_disables_pings_and_negative_is_an_error() -> None:
    assert make(keepalive_time=0).keepalive_time == 0.0
    assert config_error(keepalive_time="-1s").field == "keepalive_time"
    assert config_error(dial_timeout=0).field == "dial_timeout"


def test_password_from_kwargs_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make(username="alice", password=SECRET)
    assert cfg.password is not None
    assert cfg.password.get_secret_value() == SECRET
    monkeypatch.setenv("ETCDRAFT_USERNAME", "alice")
    monkeypatch.setenv("ETCDRAFT_PASSWORD", SECRET)
    cfg = make()
    assert cfg.password is not None
    assert cfg.password.get_secret_value() == SECRET


def test_tls_files_from_kwargs(pem_files: dict[str, str]) -> None:
    cfg = make(
        endpoints="https://etcd.example:2379",
        tls_ca_file=pem_files["ca.pem"],
        tls_cert_file=pem_files["cert.pem"],
        tls_key_file=pem_files["key.pem"],
    )
    assert cfg.tls_ca_file == pem_files["ca.pem"]
    assert cfg.tls_cert_file == pem_files["cert.pem"]
    assert cfg.tls_key_file == pem_files["key.pem"]


def test_tls_files_from_env(monkeypatch: pytest.MonkeyPatch, pem_files: dict[str, str]) -> None:
    monkeypatch.setenv("ETCDRAFT_NODE_ID", "node-1")
    monkeypatch.setenv("ETCDRAFT_ENDPOINTS", "https://etcd.example:2379")
    monkeypatch.setenv("ETCDRAFT_TLS_CA_FILE", pem_files["ca.pem"])
    monkeypatch.setenv("ETCDRAFT_TLS_CERT_FILE", pem_files["cert.pem"])
    monkeypatch.setenv("ETCDRAFT_TLS_KEY_FILE", pem_files["key.pem"])
    cfg = Config()
    assert cfg.tls_ca_file == pem_files["ca.pem"]
    assert cfg.tls_cert_file == pem_files["cert.pem"]
    assert cfg.tls_key_file == pem_files["key.pem"]


def test_kwargs_win_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCDRAFT_NODE_ID", "from-env")
    monkeypatch.setenv("ETCDRAFT_SEND_TIMEOUT", "2s")
    cfg = Config(node_id="from-kwargs")
    assert cfg.node_id == "from-kwargs"
    assert cfg.send_timeout == 2.0


def test_env_var_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("etcdraft_node_id", "lower")
    assert Config().node_id == "lower"


def test_empty_env_var_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCDRAFT_NODE_ID", "node-1")
    monkeypatch.setenv("ETCDRAFT_SHUTDOWN_TIMEOUT", "")
    monkeypatch.setenv("ETCDRAFT_PEERS", "")
    cfg = Config()
    assert cfg.shutdown_timeout == 5.0
    assert cfg.peers == []


def test_unrelated_prefixed_env_vars_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # The test suite itself uses ETCDRAFT_TEST_*; they must not trip extra="forbid".
    monkeypatch.setenv("ETCDRAFT_TEST_ENDPOINTS", "http://h:1")
    assert make().endpoints == []


def test_unknown_kwarg_is_rejected_with_suggestion() -> None:
    err = config_error(send_timout="1s")
    assert err.field == "send_timout"
    assert "did you mean 'send_timeout'" in str(err)


# --------------------------------------------------------------------------- lists


def test_env_lists_strip_whitespace_and_drop_empty_items(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCDRAFT_PEERS", " a@h1:1 , ,b@h2:2,")
    monkeypatch.setenv("ETCDRAFT_ENDPOINTS", "http://h1:2379, http://h2:2379 ,")
    cfg = make()
    assert cfg.peers == ["a@h1:1", "b@h2:2"]
    assert cfg.endpoints == ["http://h1:2379", "http://h2:2379"]


def test_kwargs_lists_accept_strings_lists_tuples_and_peers() -> None:
    assert make(peers="a@h1:1, b@h2:2").peers == ["a@h1:1", "b@h2:2"]
    assert make(peers=("a@h1:1", " ", "b@h2:2")).peers == ["a@h1:1", "b@h2:2"]
    assert make(peers=[Peer("a", "h1:1")]).peers == ["a@h1:1"]


def test_env_list_is_not_json_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCDRAFT_PEERS", '["a@h1:1"]')
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.field == "peers"


def test_peer_list_and_parse_peer() -> None:
    cfg = make(peers="a@10.0.0.1:7000,b@10.0.0.2:7000")
    assert cfg.peer_list() == [Peer("a", "10.0.0.1:7000"), Peer("b", "10.0.0.2:7000")]
    peer = parse_peer(" node-2@10.0.0.2:7000 ")
    assert peer == Peer(node_id="node-2", addr="10.0.0.2:7000")
    node_id, addr = peer
    assert (node_id, addr) == ("node-2", "10.0.0.2:7000")
    assert str(peer) == "node-2@10.0.0.2:7000"


@pytest.mark.parametrize("entry", ["nohost", "@addr", "id@", "a/b@h:1", "a b@h:1", "id@h 1"])
def test_parse_peer_rejects_malformed(entry: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_peer(entry)
    assert info.value.field == "peers"


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("200ms", 0.2),
        ("1.5s", 1.5),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("2h45m", 9900.0),
        ("1h2m3s", 3723.0),
        ("500us", 0.0005),
        ("500\u00b5s", 0.0005),
        ("500\u03bcs", 0.0005),
        ("10ns", 1e-8),
        ("1m30.5s", 90.5),
        (".5s", 0.5),
        ("+1s", 1.0),
        ("0", 0.0),
        ("0s", 0.0),
        ("0.5", 0.5),
        (" 3 ", 3.0),
        (2, 2.0),
        (0.25, 0.25),
        (timedelta(milliseconds=1500), 1.5),
    ],
)
def test_parse_duration(value: Any, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds, rel=1e-12, abs=0)


@pytest.mark.parametrize(
    "value",
    ["", "abc", "1", "-1s", "-0.5", "1S", "1d", "1.2.3s", "ms", "1 s", "s1", "nan", "inf"],
)
def test_parse_duration_rejects(value: str) -> None:
    if value == "1":
        assert parse_duration(value) == 1.0  # a plain number is seconds: accepted
        return
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize(
    "value", [-1, -0.001, timedelta(seconds=-1), float("nan"), float("inf"), True, None, [1]]
)
def test_parse_duration_rejects_non_strings(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_parse_duration_error_message_explains_syntax() -> None:
    with pytest.raises(ValueError, match=r"cannot parse duration 'abc': use Go-style"):
        parse_duration("abc")
    with pytest.raises(ValueError, match="negative"):
        parse_duration("-200ms")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (1e-8, "10ns"),
        (0.0000015, "1.5\u00b5s"),
        (0.0005, "500\u00b5s"),
        (0.2, "200ms"),
        (0.0015, "1.5ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (60, "1m"),
        (90.5, "1m30.5s"),
        (3600, "1h"),
        (9900, "2h45m"),
        (3723, "1h2m3s"),
        (-1.5, "-1.5s"),
        (timedelta(milliseconds=200), "200ms"),
    ],
)
def test_format_duration(seconds: Any, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    "value", ["200ms", "1.5s", "1m", "1h", "2h45m", "500us", "0.5", 2, timedelta(minutes=2)]
)
@pytest.mark.parametrize("field", ["send_timeout", "shutdown_timeout", "election_timeout"])
def test_duration_fields_accept_every_form(field: str, value: Any) -> None:
    seconds = parse_duration(value)
    extra: dict[str, Any] = {field: value}
    if field != "election_timeout":
        extra["election_timeout"] = max(seconds, 2.0)
    else:
        extra["send_timeout"] = min(seconds, 1.0)
        extra["heartbeat_timeout"] = seconds / 4
        extra["leader_lease_timeout"] = seconds / 4
    cfg = make(**extra)
    assert getattr(cfg, field) == seconds


@pytest.mark.parametrize(
    "field",
    [
        "send_timeout",
        "shutdown_timeout",
        "heartbeat_timeout",
        "leader_lease_timeout",
        "election_timeout",
    ],
)
@pytest.mark.parametrize("value", ["abc", "-1s", "-2", "0", "0s", timedelta(0)])
def test_bad_durations_name_the_field(field: str, value: Any) -> None:
    err = config_error(**{field: value})
    assert err.field == field
    assert f"'{field}'" in str(err)
    assert f"ETCDRAFT_{field.upper()}" in str(err)


def test_bad_duration_from_env_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCDRAFT_SEND_TIMEOUT", "abc")
    err = config_error()
    assert err.field == "send_timeout"
    assert str(err) == (
        "invalid config field 'send_timeout' (env ETCDRAFT_SEND_TIMEOUT): cannot parse "
        "duration 'abc': use Go-style durations such as '200ms', '1.5s', '1m' or a "
        "number of seconds"
    )


@given(st.integers(min_value=0, max_value=10 * 24 * 3600 * 1000))
def test_format_parse_round_trip_milliseconds(milliseconds: int) -> None:
    seconds = milliseconds / 1000
    text = format_duration(seconds)
    assert parse_duration(text) == seconds
    assert format_duration(parse_duration(text)) == text


# --------------------------------------------------------------------------- shutdown_timeout


def test_shutdown_timeout_defaults_to_five_send_timeouts() -> None:
    assert make().shutdown_timeout == 5 * 1.0
    assert make(send_timeout="300ms").shutdown_timeout == pytest.approx(1.5)
    assert make(send_timeout="300ms", shutdown_timeout=None).shutdown_timeout == pytest.approx(1.5)
    assert make(send_timeout="300ms", shutdown_timeout="10s").shutdown_timeout == 10.0


def test_shutdown_timeout_default_follows_env_send_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ETCDRAFT_SEND_TIMEOUT", "400ms")
    assert make().shutdown_timeout == pytest.approx(2.0)


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize("node_id", ["", "a/b", "a b", "a\tb", "a@b", "a,b", "node\n1", " node-1"])
def test_bad_node_id(node_id: str) -> None:
    err = config_error(node_id=node_id)
    assert err.field == "node_id"


def test_missing_node_id() -> None:
    with pytest.raises(ConfigError) as info:
        Config()
    assert info.value.field == "node_id"
    assert "ETCDRAFT_NODE_ID" in str(info.value)


def test_bad_node_id_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCDRAFT_NODE_ID", "a/b")
    with pytest.raises(ConfigError) as info:
        Config()
    assert info.value.field == "node_id"


@pytest.mark.parametrize(
    "peers",
    [
        "a@h1:1,a@h2:2",  # same node id twice
        "a@h1:1,b@h1:1",  # same address twice
        "nohost",
        "@addr",
        "id@",
        "a@h1:1,nohost",
    ],
)
def test_bad_peers(peers: str) -> None:
    err = config_error(peers=peers)
    assert err.field == "peers"


def test_bad_peers_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCDRAFT_PEERS", "a@h1:1,a@h2:2")
    err = config_error()
    assert err.field == "peers"
    assert "appears twice" in str(err)


def test_peers_must_agree_with_raft_addr() -> None:
    # This node listed in peers: fine when the address matches, an error otherwise.
    assert make(raft_addr="h1:1", peers="node-1@h1:1,b@h2:2").peers
    assert config_error(raft_addr="h1:1", peers="node-1@h9:9").field == "peers"
    assert config_error(raft_addr="h1:1", peers="b@h1:1").field == "peers"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("snap_count", 0),
        ("snap_count", "x"),
        ("snap_count", True),
        ("snapshot_threshold", 0),
        ("snapshot_threshold", -5),
        ("trailing_logs", 0),
        ("trailing_logs", 1.5),
        ("bootstrap", "maybe"),
        ("raft_addr", "h 1"),
    ],
)
def test_bad_scalars(field: str, value: Any) -> None:
    assert config_error(**{field: value}).field == field


def test_raft_dir_must_not_be_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("")
    assert config_error(raft_dir=str(path)).field == "raft_dir"
    assert make(raft_dir=str(tmp_path / "missing")).raft_dir == str(tmp_path / "missing")


def test_election_timeout_below_heartbeat_timeout() -> None:
    err = config_error(election_timeout="1s", heartbeat_timeout="1.5s")
    assert err.field == "election_timeout"
    assert "election_timeout must be greater than heartbeat_timeout" in str(err)


def test_election_timeout_equal_to_heartbeat_timeout() -> None:
    assert config_error(election_timeout="1s", heartbeat_timeout="1s").field == "election_timeout"


@pytest.mark.parametrize("lease", ["2s", "3s"])
def test_leader_lease_timeout_not_below_election_timeout(lease: str) -> None:
    err = config_error(election_timeout="2s", leader_lease_timeout=lease)
    assert err.field == "leader_lease_timeout"
    assert "raise election_timeout" in str(err)


def test_heartbeat_plus_lease_must_fit_in_election_timeout() -> None:
    err = config_error(election_timeout="2s", heartbeat_timeout="1s", leader_lease_timeout="1s")
    assert err.field == "heartbeat_timeout"
    make(election_timeout="2s", heartbeat_timeout="1s", leader_lease_timeout="900ms")


def test_send_timeout_must_not_exceed_election_timeout() -> None:
    assert config_error(send_timeout="3s").field == "send_timeout"
    assert make(send_timeout="2s").send_timeout == 2.0


def test_timing_invariants_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCDRAFT_ELECTION_TIMEOUT", "400ms")
    err = config_error()
    assert err.field == "election_timeout"


def test_all_failing_fields_are_reported_first_one_named() -> None:
    err = config_error(node_id="", send_timeout="abc", namespace="x")
    assert err.field == "node_id"
    message = str(err)
    for field in ("node_id", "send_timeout", "namespace"):
        assert f"invalid config field '{field}'" in message


@pytest.mark.parametrize(
    "endpoint",
    [
        "127.0.0.1:2379",  # no scheme
        "ftp://127.0.0.1:2379",
        "http://127.0.0.1",  # no port
        "http://:2379",  # no host
        "http://127.0.0.1:notaport",
        "http://127.0.0.1:2379/v3",
        "http://user:pw@127.0.0.1:2379",
        "nonsense",
    ],
)
def test_bad_endpoint(endpoint: str) -> None:
    err = config_error(endpoints=[endpoint])
    assert err.field == "endpoints"
    assert "pw@" not in str(err)


def test_duplicate_endpoint() -> None:
    assert config_error(endpoints="http://h:2379,http://h:2379").field == "endpoints"


def test_ipv6_and_https_endpoints() -> None:
    cfg = make(endpoints="http://[::1]:2379,http://etcd.example:2379/")
    assert cfg.endpoints == ["http://[::1]:2379", "http://etcd.example:2379/"]
    cfg = make(endpoints="https://[::1]:2379,https://etcd.example:2379/")
    assert cfg.endpoints == ["https://[::1]:2379", "https://etcd.example:2379/"]


def test_mixed_http_and_https_endpoints_are_rejected() -> None:
    err = config_error(endpoints="http://[::1]:2379,https://etcd.example:2379/")
    assert err.field == "endpoints"
    assert "mix http:// and https://" in str(err)


def test_http_endpoint_with_tls_is_rejected(pem_files: dict[str, str]) -> None:
    err = config_error(endpoints="http://h:2379", tls_ca_file=pem_files["ca.pem"])
    assert err.field == "endpoints"
    assert "https://" in str(err)


def test_cert_without_key(pem_files: dict[str, str]) -> None:
    assert config_error(tls_cert_file=pem_files["cert.pem"]).field == "tls_key_file"
    assert config_error(tls_key_file=pem_files["key.pem"]).field == "tls_cert_file"


@pytest.mark.parametrize("field", ["tls_ca_file", "tls_cert_file", "tls_key_file"])
def test_missing_tls_file(tmp_path: Path, pem_files: dict[str, str], field: str) -> None:
    values = {
        "tls_ca_file": pem_files["ca.pem"],
        "tls_cert_file": pem_files["cert.pem"],
        "tls_key_file": pem_files["key.pem"],
    }
    values[field] = str(tmp_path / "missing.pem")
    err = config_error(endpoints="https://h:2379", **values)
    assert err.field == field
    assert "does not exist" in str(err)


def test_tls_file_that_is_a_directory(tmp_path: Path) -> None:
    assert config_error(tls_ca_file=str(tmp_path)).field == "tls_ca_file"


def test_username_and_password_go_together() -> None:
    assert config_error(username="alice").field == "password"
    assert config_error(password=SECRET).field == "username"
    assert config_error(username="", password=SECRET).field == "username"
    assert config_error(username="alice", password="").field == "password"


@pytest.mark.parametrize(
    "namespace", ["etcdraft/x", "/etcdraft/x/", "/", "", "/a b", "/a//b", "x/"]
)
def test_bad_namespace(namespace: str) -> None:
    err = config_error(namespace=namespace)
    assert err.field == "namespace"


def test_namespace_error_suggests_fix() -> None:
    assert "use '/etcdraft/x'" in str(config_error(namespace="/etcdraft/x/"))
    assert "use '/etcdraft/x'" in str(config_error(namespace="etcdraft/x"))


def test_config_error_chains_validation_error() -> None:
    err = config_error(send_timeout="abc")
    assert err.__cause__ is not None
    assert type(err.__cause__).__name__ == "ValidationError"


# --------------------------------------------------------------------------- secrets, immutability


def test_password_never_shown() -> None:
    cfg = make(username="alice", password=SECRET)
    assert SECRET not in repr(cfg)
    assert SECRET not in str(cfg)
    assert SECRET not in cfg.model_dump_json()
    described = cfg.describe()
    assert SECRET not in repr(described)
    assert described["password"] == "**********"
    assert described["username"] == "alice"
    assert make().describe()["password"] is None


def test_password_never_in_error_messages() -> None:
    err = config_error(password=SECRET)  # no username
    assert SECRET not in str(err)
    assert SECRET not in str(err.__cause__)
    err = config_error(username="alice", password=SECRET, send_timeout="abc")
    assert SECRET not in str(err)
    assert SECRET not in str(err.__cause__)
    err = config_error(passwrd=SECRET)  # a typo of the field name
    assert SECRET not in str(err)
    assert SECRET not in str(err.__cause__)


def test_describe_uses_go_durations_and_is_env_compatible(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make(send_timeout="250ms", peers="a@h:1", endpoints="http://h:2379")
    described = cfg.describe()
    assert described["send_timeout"] == "250ms"
    assert described["shutdown_timeout"] == "1.25s"
    assert set(described) == set(Config.model_fields)
    for name, value in described.items():
        if value is None:
            continue
        text = ",".join(value) if isinstance(value, list) else str(value)
        monkeypatch.setenv(Config.env_var(name), text)
    assert Config() == cfg


def test_config_is_immutable() -> None:
    cfg = make()
    with pytest.raises(ConfigError) as info:
        cfg.send_timeout = 5.0
    assert info.value.field == "send_timeout"
    with pytest.raises(ConfigError):
        del cfg.node_id
    assert cfg.send_timeout == 1.0


def test_replace_revalidates_and_keeps_derived_shutdown_timeout() -> None:
    cfg = make(send_timeout="200ms")
    other = cfg.replace(send_timeout="400ms")
    assert other.send_timeout == 0.4
    assert other.shutdown_timeout == pytest.approx(2.0)
    assert cfg.send_timeout == 0.2
    pinned = make(shutdown_timeout="9s").replace(send_timeout="400ms")
    assert pinned.shutdown_timeout == 9.0
    with pytest.raises(ConfigError) as info:
        cfg.replace(election_timeout="100ms")
    assert info.value.field == "election_timeout"


def test_replace_does_not_reread_env(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make()
    monkeypatch.setenv("ETCDRAFT_RAFT_ADDR", "changed:1")
    assert cfg.replace(bootstrap=True).raft_addr == ""


# --------------------------------------------------------------------------- names


def test_go_field_names() -> None:
    assert GO_FIELD_NAMES["node_id"] == "NodeID"
    assert GO_FIELD_NAMES["raft_addr"] == "RaftAddr"
    assert GO_FIELD_NAMES["trailing_logs"] == "TrailingLogs"
    assert len(GO_FIELD_NAMES) == 13
    names = Config.go_field_names()
    assert list(names) == list(Config.model_fields)
    assert names["endpoints"] is None
    assert names["leader_lease_timeout"] == "LeaderLeaseTimeout"


def test_env_var_names() -> None:
    assert Config.env_var("send_timeout") == "ETCDRAFT_SEND_TIMEOUT"
    with pytest.raises(ConfigError):
        Config.env_var("nope")
