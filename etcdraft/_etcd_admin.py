"""etcd's maintenance and cluster calls for the operator tools, health checks and
fault tests: member status, alarms (NOSPACE), defragmentation, raft leader moves and
membership. Reached as ``EtcdClient.admin``. Part of :mod:`etcdraft.etcd`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from etcdraft._deadline import Deadline
from etcdraft.proto import etcd_rpc_pb2 as pb

if TYPE_CHECKING:
    from etcdraft.etcd import EtcdClient

__all__ = ["AlarmInfo", "EndpointStatus", "EtcdAdmin", "EtcdMember"]

DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """One member's answer to ``Maintenance/Status``."""

    endpoint: str
    member_id: int
    version: str
    db_size: int
    db_size_in_use: int
    db_size_quota: int
    leader: int
    raft_term: int
    raft_index: int
    is_learner: bool
    errors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AlarmInfo:
    member_id: int
    alarm: str  # "NOSPACE", "CORRUPT"


@dataclass(frozen=True, slots=True)
class EtcdMember:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool


class EtcdAdmin:
    """The operator calls of one :class:`~etcdraft.etcd.EtcdClient`."""

    def __init__(self, client: EtcdClient) -> None:
        self._client = client

    def status(self, url: str, deadline: Deadline | None = None) -> EndpointStatus:
        """``Maintenance/Status`` of the member at ``url`` (no failover)."""
        ep = self._client._eps.get(url)
        d = deadline or Deadline(DEFAULT_TIMEOUT)
        resp: pb.StatusResponse = self._client._eps.call_once(
            ep, lambda s: s.maintenance.Status, pb.StatusRequest(), d.remaining(), 0
        )
        return EndpointStatus(
            endpoint=ep.url,
            member_id=resp.header.member_id,
            version=resp.version,
            db_size=resp.dbSize,
            db_size_in_use=resp.dbSizeInUse,
            db_size_quota=resp.dbSizeQuota,
            leader=resp.leader,
            raft_term=resp.raftTerm,
            raft_index=resp.raftIndex,
            is_learner=resp.isLearner,
            errors=tuple(resp.errors),
        )

    def alarms(self, deadline: Deadline | None = None) -> list[AlarmInfo]:
        """The alarms raised in the cluster (``NOSPACE`` when the backend is full)."""
        resp: pb.AlarmResponse = self._client.request(
            lambda s: s.maintenance.Alarm,
            pb.AlarmRequest(action=pb.AlarmRequest.GET),
            deadline or Deadline(DEFAULT_TIMEOUT),
            what="alarm list",
            check_floor=False,
        )
        return [AlarmInfo(a.memberID, pb.AlarmType.Name(a.alarm)) for a in resp.alarms]

    def alarm_disarm(self, alarm: AlarmInfo, deadline: Deadline | None = None) -> None:
        self._client.request(
            lambda s: s.maintenance.Alarm,
            pb.AlarmRequest(
                action=pb.AlarmRequest.DEACTIVATE,
                memberID=alarm.member_id,
                alarm=pb.AlarmType.Value(alarm.alarm),  # type: ignore[arg-type]
            ),
            deadline or Deadline(DEFAULT_TIMEOUT),
            what="alarm disarm",
            check_floor=False,
        )

    def defragment(self, url: str, deadline: Deadline | None = None) -> None:
        """Defragment the member at ``url`` (no failover; it blocks that member)."""
        d = deadline or Deadline(30.0)
        self._client._eps.call_once(
            self._client._eps.get(url),
            lambda s: s.maintenance.Defragment,
            pb.DefragmentRequest(),
            d.remaining(),
            0,
        )

    def move_leader(
        self, url: str, target_member_id: int, deadline: Deadline | None = None
    ) -> None:
        """Ask the etcd leader (at ``url``) to hand its raft leadership to a member."""
        d = deadline or Deadline(DEFAULT_TIMEOUT)
        self._client._eps.call_once(
            self._client._eps.get(url),
            lambda s: s.maintenance.MoveLeader,
            pb.MoveLeaderRequest(targetID=target_member_id),
            d.remaining(),
            0,
        )

    def member_list(self, deadline: Deadline | None = None) -> list[EtcdMember]:
        resp: pb.MemberListResponse = self._client.request(
            lambda s: s.cluster.MemberList,
            pb.MemberListRequest(),
            deadline or Deadline(DEFAULT_TIMEOUT),
            what="member list",
            check_floor=False,
        )
        return [_member(m) for m in resp.members]

    def member_add(self, peer_urls: Sequence[str], deadline: Deadline | None = None) -> EtcdMember:
        resp: pb.MemberAddResponse = self._client.request(
            lambda s: s.cluster.MemberAdd,
            pb.MemberAddRequest(peerURLs=list(peer_urls)),
            deadline or Deadline(DEFAULT_TIMEOUT),
            what="member add",
            retry_ambiguous=False,
            check_floor=False,
        )
        return _member(resp.member)

    def member_remove(self, member_id: int, deadline: Deadline | None = None) -> None:
        self._client.request(
            lambda s: s.cluster.MemberRemove,
            pb.MemberRemoveRequest(ID=member_id),
            deadline or Deadline(DEFAULT_TIMEOUT),
            what="member remove",
            check_floor=False,
        )


def _member(m: pb.Member) -> EtcdMember:
    return EtcdMember(
        id=m.ID,
        name=m.name,
        peer_urls=tuple(m.peerURLs),
        client_urls=tuple(m.clientURLs),
        is_learner=m.isLearner,
    )
