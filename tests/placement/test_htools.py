import pytest

from vpool.placement import ClusterState, HostRecord, VMRecord
from vpool.placement.balance import balance
from vpool.placement.htools import HtoolsError, HtoolsInstance, from_state, new_disks, read_htools
from vpool.placement.score import hbal_score

GOOD_NODE = "n1|65536|2048|63488|1048576|1048576|32|N|u1|1||N|0|1|1.0"
GOOD_VM = "vm1|4096|20480|2|running|Y|n1||sharedfile||1|-|N"


def text(nodes=(GOOD_NODE,), vms=(GOOD_VM,), tags=(), policies=None, group="g|u1|preferred||"):
    sections = [[group], list(nodes), list(vms), list(tags)]
    if policies is not None:
        sections.append(list(policies))
    lines = sections[0]
    for s in sections[1:]:
        lines = lines + [""] + s
    return "\n".join(lines) + "\n"


def test_unchanged_files_are_written_back_byte_for_byte(tiny_file, generate):
    for path in (tiny_file, generate("-n", "12", "-i", "40", "--template", "drbd",
                                     "--anti-affinity-groups", "4", "--seed", "3")):
        assert read_htools(path.read_text()).render() == path.read_text()


@pytest.mark.parametrize("nodes, vms, tags, policies, message", [
    ([GOOD_NODE.replace("|63488|", "|6144.5|")], [GOOD_VM], [], None,
     "line 3: f_mem must be an integer, got '6144.5'"),
    ([GOOD_NODE.replace("|N|u1", "|X|u1")], [GOOD_VM], [], None, "node role must be N, M or Y"),
    ([GOOD_NODE], [GOOD_VM.replace("|n1|", "|n9|")], [], None, "runs on unknown node 'n9'"),
    ([GOOD_NODE], [GOOD_VM.replace("running", "sleeping")], [], None, "unknown status"),
    ([GOOD_NODE], [GOOD_VM.replace("sharedfile", "drbd")], [], None, "goes with the drbd"),
    ([GOOD_NODE], [GOOD_VM[:-1] + "Y"], [], None, "forthcoming"),
    ([GOOD_NODE], [GOOD_VM], ["htools:nlocation:rack"], None, "location or migration tags"),
    ([GOOD_NODE], [GOOD_VM], [], ["|4096,2,61440,1,1|128,1,1024,1,1,1;1,1,1,1,1,1|plain|4.0|32.0"],
     "a spec has 6 values"),
    ([GOOD_NODE.split("|", 3)[0]], [GOOD_VM], [], None, "at least 9 fields"),
])
def test_malformed_files_say_where_and_why(nodes, vms, tags, policies, message):
    with pytest.raises(HtoolsError, match=message):
        read_htools(text(nodes, vms, tags, policies))


def test_section_count_is_checked():
    with pytest.raises(HtoolsError, match="expected 4 or 5 sections"):
        read_htools("g|u1|preferred||\n\n" + GOOD_NODE + "\n")


def test_group_policy_wins_over_cluster_policy():
    policies = ["|4096,2,61440,1,1,1|128,1,1024,1,1,1;1,1,1,1,1,1|plain|4.0|32.0",
                "g|4096,2,61440,1,1,1|128,1,1024,1,1,1;1,1,1,1,1,1|plain|2.0|16.0"]
    state = read_htools(text(policies=policies)).to_state()
    assert state.hosts[0].cpu_ratio == 2.0 and state.hosts[0].spindle_capacity == 16.0


def test_with_moves_keeps_missing_memory_so_the_score_is_the_same(generate):
    cluster = read_htools(generate("-n", "10", "-i", "60", "--seed", "42").read_text())
    state = cluster.to_state()
    moves = [("vm00030", "node0001"), ("vm00059", "node0009")]
    rewritten = read_htools(cluster.with_moves(moves).render()).to_state()
    assert round(hbal_score(rewritten), 8) == 25.73219581    # hbal's score after step 2
    assert hbal_score(rewritten) == pytest.approx(hbal_score(state.with_moves(moves)))


def test_with_moves_of_drbd_vms_rewrites_both_nodes_and_free_disk(generate, reference_score):
    """A DRBD plan written back: hinfo (here its reference) scores the file as vpool scored
    the plan, so node disk follows the copies and memory the primaries."""
    path = generate("-n", "12", "-i", "60", "--seed", "7", "--template", "drbd")
    cluster = read_htools(path.read_text())
    plan = balance(cluster.to_state())
    assert any(m.dst_secondary != m.src_secondary for m in plan.moves)
    text = cluster.with_moves((m.vm, m.dst, m.dst_secondary) for m in plan.moves).render()
    rewritten = read_htools(text)
    final = {m.vm: (m.dst, m.dst_secondary) for m in plan.moves}
    assert all((i.pnode, i.snode) == final[i.name] for i in rewritten.instances if i.name in final)
    out = path.with_name("rewritten.txt")
    out.write_text(text)
    nodes, insts, tags, vcpu_ratio, spindle_ratio = reference_score.parse(str(out))
    total, _ = reference_score.score(nodes, insts, tags, vcpu_ratio, spindle_ratio, {}, None)
    assert total == pytest.approx(plan.score_after, abs=1e-8)
    assert hbal_score(rewritten.to_state()) == pytest.approx(plan.score_after, abs=1e-8)


def test_the_pool_exported_reads_back_with_the_same_score():
    hosts = [HostRecord("h1", cpus=16, memory_mib=65536, disk_gib=1000, reserved_cpus=1,
                        reserved_memory_mib=2048),
             HostRecord("h2", cpus=32, memory_mib=131072, disk_gib=2000, up=False),
             HostRecord("h3", cpus=8, memory_mib=32768, disk_gib=500, tags=frozenset({"ssd"}))]
    vms = [VMRecord("a", "h1", 2, 4096, 40, groups=frozenset({"web"})),
           VMRecord("b", "h1", 4, 8192, 80, groups=frozenset({"web"})),
           VMRecord("c", "h3", 1, 1024, 20, running=False),
           VMRecord("d", "h2", 1, 2048, 20)]
    state = ClusterState.from_records(hosts, vms, {"web": "anti-affinity"})
    text_out = from_state(state).render()
    back = read_htools(text_out).to_state()
    assert "htools:iextags:web" in text_out
    assert back.host_names == state.host_names
    assert hbal_score(back) == pytest.approx(hbal_score(state))


def test_names_that_cannot_be_written_are_refused():
    state = ClusterState.from_records([HostRecord("h|1", cpus=1, memory_mib=1024)])
    with pytest.raises(HtoolsError, match="cannot be written"):
        from_state(state)


def test_new_instances_get_the_first_template_the_policy_allows():
    cluster_policy = "|4096,2,61440,1,1,1|128,1,1024,1,1,1;1,1,1,1,1,1|drbd,plain|4.0|32.0"
    group_policy = "g|4096,2,61440,1,1,1|128,1,1024,1,1,1;1,1,1,1,1,1|plain,drbd|4.0|32.0"
    assert read_htools(text(policies=[cluster_policy])).new_instance_template == "drbd"
    assert read_htools(text(policies=[cluster_policy, group_policy])).new_instance_template == "plain"
    assert read_htools(text()).new_instance_template == "diskless"    # hspace's without a policy
    assert [new_disks(t) for t in ("drbd", "plain", "sharedfile", "diskless", "file")] == [
        "mirrored", "local", "shared", "shared", "shared"]
    with pytest.raises(ValueError, match="unknown disk template 'raid'"):
        new_disks("raid")


def test_added_instances_take_memory_and_disk_from_their_nodes():
    second = GOOD_NODE.replace("n1|", "n2|")
    cluster = read_htools(text(nodes=(GOOD_NODE, second)))
    mirrored = HtoolsInstance(("new", "8192", "10240", "2", "running", "Y", "n1", "n2", "drbd", "",
                               "1", "-", "N"), 0)
    grown = read_htools(cluster.with_instances([mirrored]).render())
    n1, n2 = grown.nodes
    assert (n1.f_mem, n1.f_dsk) == (63488 - 8192, 1048576 - 10240)
    assert (n2.f_mem, n2.f_dsk) == (63488, 1048576 - 10240)      # the mirror: disk, no memory
    before, after = cluster.to_state(), grown.to_state()
    assert after.hosts[0].missing_memory_mib == before.hosts[0].missing_memory_mib
    assert after.vms[-1].secondary == "n2"
