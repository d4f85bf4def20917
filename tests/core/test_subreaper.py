"""The subreaper starts a crashed daemon again, like Restart=on-failure, within a burst limit,
and leaves a daemon that exits, is stopped or is deliberately killed alone."""

import signal
import subprocess
import sys

import pytest

from vpool.hypervisor.subreaper import BURST


def killed_by(sig: int) -> int:
    """The subreaper exits with its daemon's status; a signal's -N comes out as 256 - N."""
    return 256 - sig


def run(tmp_path, script: str) -> tuple[int, int, str]:
    """Runs `script` under the subreaper; (exit code, times it started, stderr)."""
    starts = tmp_path / "starts"
    done = subprocess.run([sys.executable, "-m", "vpool.hypervisor.subreaper", "sh", "-c",
                           f'echo x >> "{starts}"; {script}'], capture_output=True, text=True, timeout=60)
    return done.returncode, len(starts.read_text().splitlines()), done.stderr


def test_a_crash_is_restarted_until_the_burst_limit(tmp_path):
    code, starts, said = run(tmp_path, 'kill -SEGV $$')
    assert starts == 1 + BURST
    assert code == killed_by(signal.SIGSEGV)  # given up: the last crash is the answer
    assert said.count("crashed (SIGSEGV); starting it again") == BURST


def test_one_crash_then_a_daemon_that_runs(tmp_path):
    code, starts, said = run(tmp_path, f'[ $(wc -l < "{tmp_path}/starts") -gt 1 ] && exit 0; kill -ABRT $$')
    assert (code, starts) == (0, 2)
    assert "crashed (SIGABRT)" in said


@pytest.mark.parametrize("script, code", [("exit 3", 3), ("kill -KILL $$", killed_by(signal.SIGKILL)), ("exit 0", 0)])
def test_exits_and_kills_are_not_restarted(tmp_path, script, code):
    assert run(tmp_path, script)[:2] == (code, 1)


def test_a_stopped_daemon_that_crashes_on_its_way_out_stays_stopped(tmp_path):
    starts = tmp_path / "starts"
    reaper = subprocess.Popen([sys.executable, "-m", "vpool.hypervisor.subreaper", "sh", "-c",
                               f'echo x >> "{starts}"; trap "kill -SEGV \\$\\$" TERM; while :; do sleep 0.1; done'])
    try:
        for _ in range(100):
            if starts.exists():
                break
            subprocess.run(["sleep", "0.1"])
        reaper.send_signal(signal.SIGTERM)
        assert reaper.wait(30) == killed_by(signal.SIGSEGV)
    finally:
        reaper.kill()
    assert len(starts.read_text().splitlines()) == 1
