"""Host specs, MPI hostfiles and Slurm node lists: properties and line-numbered errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbgfwd.errors import BadFileError, UsageError
from dbgfwd.providers.ssh.targets import HostSpec, expand_nodelist, parse_host_spec, parse_hostfile

hostnames = st.from_regex(r"[a-z][a-z0-9\-]{0,12}(\.[a-z][a-z0-9]{0,6}){0,2}", fullmatch=True)
users = st.none() | st.from_regex(r"[a-z_][a-z0-9_\-]{0,10}", fullmatch=True)
ports = st.none() | st.integers(1, 65535)


@given(hostnames, users, ports)
def test_host_spec_round_trips(host, user, port):
    spec = HostSpec(host, user, port)
    assert parse_host_spec(spec.key) == spec


@given(st.ip_addresses(v=6).map(str), ports)
def test_ipv6_in_brackets(addr, port):
    text = f"[{addr}]" + (f":{port}" if port else "")
    assert parse_host_spec(text) == HostSpec(addr, None, port)


@pytest.mark.parametrize("bad", ["", "@h", "h:0", "h:70000", "h:ab", "a b", "[::1", "u@", "h:"])
def test_bad_host_specs_name_the_spec(bad):
    with pytest.raises(UsageError) as info:
        parse_host_spec(bad)
    assert repr(bad) in info.value.message and info.value.hint


entries = st.lists(st.tuples(hostnames, st.none() | st.integers(1, 64)), min_size=1, max_size=12,
                   unique_by=lambda e: e[0])


@given(entries, st.sampled_from(["openmpi", "mpich"]), st.booleans())
def test_hostfile_round_trips(items, style, noise):
    lines = ["# generated", ""] if noise else []
    for host, slots in items:
        if slots is None:
            lines.append(host)
        elif style == "openmpi":
            lines.append(f"{host} slots={slots} max_slots={slots + 1}" + ("   # comment" if noise else ""))
        else:
            lines.append(f"{host}:{slots}")
    parsed = parse_hostfile("\n".join(lines) + "\n")
    assert [(s.host, s.slots) for s in parsed] == items


def test_hostfile_sums_repeated_hosts_like_openmpi():
    parsed = parse_hostfile("a slots=2\nb\na slots=3\n")
    assert [(s.host, s.slots) for s in parsed] == [("a", 5), ("b", None)]


@pytest.mark.parametrize("text,line", [
    ("good slots=2\n\nbad slots=zero\n", 3),
    ("# c\nhost flavor=x\n", 2),
    ("a\nb c\n", 2),
    ("a:0\n", 1),
    ("a slots=-1\n", 1),
    ("ok\nbad!host\n", 2),
])
def test_bad_hostfile_lines_are_numbered(text, line):
    with pytest.raises(BadFileError) as info:
        parse_hostfile(text, "hosts.txt")
    assert info.value.line == line
    assert info.value.message.startswith(f"hosts.txt:{line}: ")


def test_empty_hostfile_is_an_error():
    with pytest.raises(BadFileError, match="no hosts"):
        parse_hostfile("# nothing\n\n", "h")


def test_nodelist_example_from_slurm_docs():
    assert expand_nodelist("node[01-04,07],gpu-a[1-2]") == [
        "node01", "node02", "node03", "node04", "node07", "gpu-a1", "gpu-a2"]


def test_nodelist_several_bracket_groups_expand_as_product():
    assert expand_nodelist("r[1-2]n[08-09]") == ["r1n08", "r1n09", "r2n08", "r2n09"]


def _compress(prefix: str, numbers: list[int], width: int) -> str:
    """Write numbers as a Slurm range list (the inverse of expansion), runs collapsed to a-b."""
    pieces, run = [], [numbers[0]]
    for n in numbers[1:]:
        if n == run[-1] + 1:
            run.append(n)
        else:
            pieces.append(run)
            run = [n]
    pieces.append(run)
    fmt = lambda n: str(n).zfill(width)  # noqa: E731
    body = ",".join(fmt(r[0]) if len(r) == 1 else f"{fmt(r[0])}-{fmt(r[-1])}" for r in pieces)
    return f"{prefix}[{body}]"


groups = st.lists(
    st.tuples(st.from_regex(r"[a-z][a-z\-]{0,6}", fullmatch=True),
              st.lists(st.integers(0, 300), min_size=1, max_size=20, unique=True).map(sorted),
              st.integers(1, 4)),
    min_size=1, max_size=4, unique_by=lambda g: g[0])


@settings(max_examples=200)
@given(groups)
def test_nodelist_expansion_inverts_compression(gs):
    text = ",".join(_compress(prefix, nums, width) for prefix, nums, width in gs)
    expected = [f"{prefix}{str(n).zfill(width)}" for prefix, nums, width in gs for n in nums]
    assert expand_nodelist(text) == list(dict.fromkeys(expected))


@given(st.text(alphabet="ab[]-,0123456789", max_size=20))
def test_nodelist_never_fails_other_than_usage_error(text):
    try:
        hosts = expand_nodelist(text)
    except UsageError as exc:
        assert exc.hint and "--nodelist" in exc.hint
    else:
        assert hosts and all("[" not in h and "," not in h for h in hosts)


@pytest.mark.parametrize("bad", ["node[1-", "node]1[", "n[a-b]", "n[3-1]", "n[1-2]x[", "n[[1]]", ",,"])
def test_bad_nodelists(bad):
    with pytest.raises(UsageError):
        expand_nodelist(bad)
