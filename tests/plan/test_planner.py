import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbgfwd.errors import PortError, UsageError
from dbgfwd.plan.layout import layout
from dbgfwd.plan.ports import assign_local_ports
from dbgfwd.plan.ranksets import filter_ranks, parse_rank_set
from dbgfwd.workspace.ports import PortMemory


def test_parse_rank_set():
    assert parse_rank_set("0,2-3,8") == {0, 2, 3, 8}
    assert parse_rank_set(" 5 ") == {5}
    for bad in ("a", "3-1", "-1", "1-x", ",,"):
        with pytest.raises(UsageError):
            parse_rank_set(bad)


def test_layout_is_node_major():
    slots = layout(8, 4, 5678, ["a", "b"])
    assert [(s.rank, s.node, s.local_rank, s.remote_port) for s in slots[3:5]] == [
        (3, "a", 3, 5681), (4, "b", 0, 5678)]
    with pytest.raises(PortError):
        layout(4, 4, 65534)


def test_busy_ports_are_skipped_deterministically():
    busy = {5679, 5682}
    plan = assign_local_ports(layout(4, None, 5678), 5678, is_free=lambda p: p not in busy)
    assert [p.local_port for p in plan] == [5678, 5683, 5680, 5681]


def test_remembered_ports_are_kept_and_reserved_ports_never_used():
    slots = layout(3, None, 5678)
    plan = assign_local_ports(slots, 6000, remembered={1: 7001}, is_free=lambda p: True,
                                      reserved={6002})
    assert {p.rank: p.local_port for p in plan} == {0: 6000, 1: 7001, 2: 6003}


def test_remembered_port_now_busy_falls_back():
    plan = assign_local_ports(layout(1, None, 5678), 6000, remembered={0: 7001},
                                      is_free=lambda p: p != 7001)
    assert plan[0].local_port == 6000


def test_strict_local_base_refuses_a_busy_port():
    with pytest.raises(PortError, match="local port 6001 for rank 1 is busy"):
        assign_local_ports(layout(2, None, 5678), 6000, is_free=lambda p: p != 6001, strict=True)


def test_range_that_does_not_fit():
    with pytest.raises(PortError, match="do not fit"):
        assign_local_ports(layout(10, None, 5678), 65530, is_free=lambda p: True)


def test_only_filters_and_rejects_unknown_ranks():
    slots = layout(4, None, 5678)
    assert [s.rank for s in filter_ranks(slots, frozenset({0, 2}))] == [0, 2]
    with pytest.raises(UsageError):
        filter_ranks(slots, frozenset({9}))


def test_port_memory_round_trip_and_mode(tmp_path):
    mem = PortMemory(tmp_path / ".dbgfwd" / "ports.json")
    assert mem.load() == {}
    plan = assign_local_ports(layout(2, None, 5678), 6000, is_free=lambda p: True)
    mem.save(plan)
    assert mem.load() == {0: 6000, 1: 6001}
    assert (mem.path.stat().st_mode & 0o777) == 0o600


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 64), busy=st.sets(st.integers(6000, 6100)), remembered=st.dictionaries(
    st.integers(0, 63), st.integers(6000, 6100)))
def test_plan_is_collision_free_and_avoids_busy_ports(n, busy, remembered):
    plan = assign_local_ports(layout(n, None, 5678), 6000, remembered=remembered,
                                      is_free=lambda p: p not in busy)
    ports = [p.local_port for p in plan]
    assert len(set(ports)) == n
    assert not set(ports) & busy
    again = assign_local_ports(layout(n, None, 5678), 6000, remembered=remembered,
                                       is_free=lambda p: p not in busy)
    assert again == plan


def test_a_plan_may_end_exactly_at_the_last_port():
    """65535 is a port: remote and local plans that end on it are accepted, one further is refused."""
    slots = layout(4, 4, 65532)
    assert [s.remote_port for s in slots] == [65532, 65533, 65534, 65535]
    with pytest.raises(PortError):
        layout(4, 4, 65533)
    planned = assign_local_ports(slots, 65532, is_free=lambda port: True, strict=True)
    assert [p.local_port for p in planned] == [65532, 65533, 65534, 65535]
    with pytest.raises(PortError):
        assign_local_ports(slots, 65533, is_free=lambda port: True, strict=True)
