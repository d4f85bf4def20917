"""The pure parts of live migration: when to switch to post-copy or give up, where the VM is
once the migrate call returned, what the Task says, and the policy's validation."""

import libvirt
import pytest

from vpool.hypervisor.libvirt_migration import UNREACHABLE, JobProgress, with_disk_at
from vpool.model.errors import Invalid
from vpool.services.migration import MigrationPolicy, describe, next_step, settle, unused_copy, whereabouts

POLICY = MigrationPolicy(postcopy_after_iterations=5, postcopy_after_s=60, stall_timeout_s=30, timeout_s=600)


def _job(iteration: int, **kw) -> JobProgress:
    return JobProgress(active=True, iteration=iteration, **kw)


@pytest.mark.parametrize("p, elapsed, stalled, switched, allowed, expected", [
    (_job(1), 5, 0, False, True, None),  # first pass: keep going
    (_job(1), 120, 0, False, True, None),  # never switch during the first pass, however long
    (_job(3), 10, 0, False, True, None),  # converging within the bounds
    (_job(6), 10, 0, False, True, "postcopy"),  # too many passes
    (_job(2), 61, 0, False, True, "postcopy"),  # too long
    (_job(6), 61, 0, True, True, None),  # already switched
    (_job(6), 61, 0, False, False, None),  # post-copy not allowed: pre-copy runs on (auto-converge)
    (_job(2), 601, 0, False, True, "it did not finish within 600 s"),
    (_job(2), 40, 31, False, True, "no data moved for 30 s"),
    (None, 5, 0, False, True, None),  # the source did not answer one poll
])
def test_next_step(p, elapsed, stalled, switched, allowed, expected):
    assert next_step(POLICY, p, elapsed, stalled, switched, allowed) == expected


@pytest.mark.parametrize("succeeded, switched, source, dest, expected", [
    (True, False, "missing", "running", "destination"),
    (True, True, UNREACHABLE, UNREACHABLE, "destination"),  # libvirt said it finished
    (False, False, "running", "missing", "source"),  # aborted or cancelled
    (False, False, "running", UNREACHABLE, "source"),  # the destination died
    (False, False, "running", "paused", "source"),  # a half-arrived copy, never resumed
    (False, True, "paused", "paused", None),  # post-copy cut in the middle: both halves are the VM
    (False, True, "running", UNREACHABLE, None),
    (False, False, "missing", "running", "destination"),  # arrived, the confirmation failed
    (False, False, UNREACHABLE, "paused", None),  # the source died: cannot tell
    (False, False, UNREACHABLE, "missing", None),
    (False, False, "missing", "missing", None),
])
def test_settle(succeeded, switched, source, dest, expected):
    assert settle(succeeded, switched, source, dest) == expected


COPIES = {"source": [1, "/a/vm-x.qcow2", "s1"], "destination": [2, "/b/vm-x.qcow2", "s2"]}


@pytest.mark.parametrize("found_on, elsewhere, unused", [
    (1, "missing", "destination"),  # never arrived: the new copy goes
    (2, "shutoff", "source"),  # arrived, the source's definition left behind: its disk goes
    (2, UNREACHABLE, None),  # the source may still run it
    (1, "paused", None),  # the destination answers that it has it too: not settled yet
    (None, "missing", None),  # not found yet
    (3, "missing", None),  # found on a third host: neither copy is known unused
])
def test_an_undecided_copy_goes_only_once_the_vm_is_found_on_the_other(found_on, elsewhere, unused):
    asked = []
    assert unused_copy(COPIES, found_on, lambda host: asked.append(host) or elsewhere) == unused
    assert asked == ([] if found_on not in (1, 2) else [3 - found_on])


@pytest.mark.parametrize("where, switched, source, dest, says", [
    ("source", False, "running", "missing", "it still runs on a"),
    ("source", False, "paused", "missing", "it is paused on a"),
    ("source", True, "paused", "shutoff", "stop it (vpool vm stop --force) and start it again"),
    ("destination", True, UNREACHABLE, "running", "it runs on b"),
    (None, True, "paused", UNREACHABLE, "vpool cannot tell where it runs (a: paused, b: unreachable)"),
])
def test_whereabouts_never_says_a_paused_vm_runs(where, switched, source, dest, says):
    assert says in whereabouts(where, switched, "a", "b", source, dest)


def test_describe_says_what_an_operator_watches():
    mib = 2**20
    pct, message = describe(_job(3, memory_processed=300 * mib, memory_remaining=100 * mib,
                                 dirty_rate_bps=40 * mib, expected_downtime_ms=120, throttle_pct=30), False)
    assert pct == 5 + int(90 * 300 / 400)
    assert message == ("pass 3: 300 MiB sent, 100 MiB left, guest dirties 40 MiB/s, expected downtime 120 ms, "
                       "vCPU throttled 30%")
    assert describe(_job(7, memory_processed=10 * mib), True)[1].startswith("post-copy: 10 MiB sent")


def test_job_progress_reads_libvirt_stats():
    p = JobProgress.from_stats({"type": 2, "time_elapsed": 1500, "memory_total": 512, "memory_processed": 100,
                                "memory_remaining": 400, "memory_iteration": 2, "memory_dirty_rate": 10,
                                "memory_page_size": 4096, "downtime": 80})
    assert (p.active, p.iteration, p.dirty_rate_bps, p.expected_downtime_ms) == (True, 2, 40960, 80)
    assert JobProgress.from_stats({"type": 0}).active is False


@pytest.mark.parametrize("bad", [{"postcopy": "sometimes"}, {"max_outgoing": 0}, {"timeout_s": -1},
                                 {"max_downtime_ms": 0}])
def test_policy_refuses_what_cannot_work(bad):
    with pytest.raises(Invalid):
        MigrationPolicy(**bad).check()


def test_copy_storage_definition_points_at_the_new_flat_disk():
    xml = ("<domain><devices><disk type='file' device='disk'><source file='/shared/vm-a.qcow2' index='2'/>"
           "<backingStore type='file'><source file='/shared/img.qcow2'/></backingStore></disk>"
           "<disk type='file' device='cdrom'><source file='/iso'/></disk></devices></domain>")
    out = with_disk_at(xml, "/private/vm-a.qcow2")
    assert "<source file=\"/private/vm-a.qcow2\" />" in out and "backingStore" not in out and "/iso" in out


class _Ctx:
    def __init__(self):
        self.messages = []

    def progress(self, _percent, message=None):
        self.messages.append(message)


@pytest.mark.parametrize("answers, resumes, settled, resumed", [
    # the link comes back and the hosts finish the move: the migration succeeded after all
    ([("paused", UNREACHABLE), ("paused", "paused"), ("shutoff", "running")], ["link down"] * 3, "destination",
     False),
    # the stream broke: the second try to resume it gets through, and the VM is on the destination
    ([("paused", "paused"), ("missing", "running")], ["link down", None], "destination", True),
    # the destination never answers again: still unknown once the bound has passed
    ([("paused", UNREACHABLE)] * 100, ["unreachable"] * 100, None, False),
])
def test_a_broken_postcopy_is_watched_and_resumed_until_the_hosts_tell(monkeypatch, answers, resumes, settled,
                                                                         resumed):
    """After the switch a failed migrate call may still end on the destination: the task tries
    to resume the stream while the source's half is paused, and watches both hosts for
    postcopy_recovery_s."""
    from vpool.services import migration

    replies, now, tries = iter(answers), {}, iter(resumes)

    def state_at(uri, _uuid):  # each round asks the source, then the destination
        if uri == "src":
            now["pair"] = next(replies)
        return now["pair"][0 if uri == "src" else 1]

    monkeypatch.setattr(migration, "_state_at", state_at)
    monkeypatch.setattr(migration, "resume_postcopy", lambda spec, stall_s: next(tries))
    clock = iter(range(0, 10_000, 2))
    monkeypatch.setattr(migration.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(migration.time, "sleep", lambda s: None)
    run = migration._Run(started=True, error="client socket is closed", switched=True,
                         source_state="paused", dest_state=UNREACHABLE)
    job = {"name": "vm1", "uuid": "u", "src": "a", "dst": "b", "src_uri": "src", "dst_uri": "dst", "bandwidth": None}
    ctx = _Ctx()
    migration.MigrationService._await_split(None, ctx, job, MigrationPolicy(postcopy_recovery_s=60), run)
    assert settle(run.error is None, True, run.source_state, run.dest_state) == settled
    assert run.resumed is resumed
    if settled == "destination":
        assert run.error is None and run.interrupted == "client socket is closed"
    else:
        assert run.error == "client socket is closed" and len(ctx.messages) <= 31  # gave up after 60 s
        assert ctx.messages[-1].endswith("resuming failed: unreachable")
    assert "broke after the switch to post-copy" in ctx.messages[0]


class _Resume:
    """A resumed post-copy as `resume_postcopy` drives it: `moving` says whether its bytes move,
    `ends` whether libvirt ends the call once it is paused again."""

    def __init__(self, moving: bool, ends: bool):
        self.moving, self.ends, self.paused, self.closed, self.calls = moving, ends, False, False, 0
        self.state = (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED)
        self.error = None

    def source_state(self):
        return self.state

    def start(self, resume=False):
        assert resume

    def wait(self, timeout):
        self.calls += 1
        if self.moving and self.calls > 5:
            return True  # completed
        if self.paused and self.ends:
            self.error = "operation aborted: migration out job: canceled by client"
            return True
        return False

    def progress(self):
        return JobProgress(active=True, memory_processed=self.calls * 4096 if self.moving else 4096)

    def pause_postcopy(self):
        self.paused = True

    def close_when_done(self):
        self.closed = True


@pytest.mark.parametrize("moving, ends, answer", [
    (True, True, None),
    (False, True, "the resumed stream moved nothing for 5 s; paused again (operation aborted"),
    (False, False, "libvirt had not ended the call 5 s after pausing it"),
])
def test_a_resumed_postcopy_that_moves_nothing_is_paused_again_instead_of_waited_for(monkeypatch, moving, ends,
                                                                                      answer):
    """The resume call once waited in libvirt for ever on a stream that moved nothing, and the
    task with it. Its bytes are watched as a first migration's are: one that moves nothing for
    the stall bound is paused again (post-copy's abort keeps both halves) and the task tries
    again while its own recovery bound lasts."""
    from vpool.hypervisor import libvirt_migration
    from vpool.hypervisor.libvirt_migration import MigrationSpec, resume_postcopy

    fake = _Resume(moving, ends)
    monkeypatch.setattr(libvirt_migration, "LiveMigration", lambda spec: fake)
    clock = iter(range(0, 10_000))
    monkeypatch.setattr(libvirt_migration.time, "monotonic", lambda: next(clock))
    said = resume_postcopy(MigrationSpec("u", "src", "dst"), stall_s=5)
    assert said is None if answer is None else answer in said
    assert fake.paused is (not moving) and fake.closed

    fake = _Resume(True, True)
    fake.state = (libvirt.VIR_DOMAIN_RUNNING, 1)
    monkeypatch.setattr(libvirt_migration, "LiveMigration", lambda spec: fake)
    assert resume_postcopy(MigrationSpec("u", "src", "dst"), stall_s=5) == \
        "the source's half is not paused by a broken post-copy"
