"""run_cluster_show against small real executables standing in for repmgr."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import pytest

from agrajag.daemon.repmgr import ParseError, RepmgrError, run_cluster_show

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "repmgr"
CONFIG = "/etc/repmgr.conf"


def fake_repmgr(tmp_path: Path, body: str, *, executable: bool = True) -> str:
    path = tmp_path / "repmgr"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755 if executable else 0o644)
    return str(path)


def test_exit_25_with_a_table_is_accepted_with_its_warnings(tmp_path: Path) -> None:
    repmgr = fake_repmgr(
        tmp_path,
        f"cat '{FIXTURES / 'after-failover-5.3-handmade.txt'}'\n"
        "echo 'WARNING: following issues were detected' >&2\n"
        "echo '  - unable to connect to node \"node1\" (ID: 1)' >&2\n"
        "echo 'HINT: execute with --verbose option to see connection error messages' >&2\n"
        "exit 25\n",
    )
    result = run_cluster_show(repmgr, CONFIG, timeout=10)
    assert result.exit_code == 25
    assert result.view.primary is not None
    assert result.view.primary.name == "node2"
    assert result.warnings == (
        "WARNING: following issues were detected",
        '  - unable to connect to node "node1" (ID: 1)',
        "HINT: execute with --verbose option to see connection error messages",
    )


def test_argv_is_passed_without_a_shell_and_in_the_c_locale(tmp_path: Path) -> None:
    seen = tmp_path / "argv"
    repmgr = fake_repmgr(
        tmp_path,
        f"printf '%s\\n' \"$@\" \"LC_ALL=$LC_ALL\" > '{seen}'\n"
        f"cat '{FIXTURES / 'compact-5.3-handmade.txt'}'\n",
    )
    config = str(tmp_path / "repmgr; echo injected.conf")
    result = run_cluster_show(repmgr, config, timeout=10, extra_args=["--compact"])
    assert (result.exit_code, result.warnings) == (0, ())
    assert result.view.primary is not None
    assert seen.read_text().splitlines() == [
        "-f",
        config,
        "cluster",
        "show",
        "--compact",
        "LC_ALL=C",
    ]


def test_other_exit_codes_name_the_command_and_quote_stderr(tmp_path: Path) -> None:
    repmgr = fake_repmgr(
        tmp_path,
        "echo 'ERROR: connection to database failed' >&2\n"
        "echo 'DETAIL: connection to server on socket failed' >&2\n"
        "exit 1\n",
    )
    with pytest.raises(RepmgrError) as caught:
        run_cluster_show(repmgr, CONFIG, timeout=10)
    message = str(caught.value)
    assert message.startswith(
        shlex.join([repmgr, "-f", CONFIG, "cluster", "show"]) + ": exit code 1"
    )
    assert (
        "stderr: 'ERROR: connection to database failed\\n"
        "DETAIL: connection to server on socket failed'" in message
    )


def test_long_stderr_is_trimmed(tmp_path: Path) -> None:
    repmgr = fake_repmgr(tmp_path, "head -c 50000 /dev/zero | tr '\\0' x >&2\nexit 3\n")
    with pytest.raises(RepmgrError, match="exit code 3") as caught:
        run_cluster_show(repmgr, CONFIG, timeout=10)
    assert len(str(caught.value)) < 3000


def test_killed_by_a_signal(tmp_path: Path) -> None:
    repmgr = fake_repmgr(tmp_path, "kill -9 $$\n")
    with pytest.raises(RepmgrError, match="killed by signal 9"):
        run_cluster_show(repmgr, CONFIG, timeout=10)


@pytest.mark.parametrize("exit_code", [0, 25])
def test_accepted_exit_code_without_a_table(tmp_path: Path, exit_code: int) -> None:
    repmgr = fake_repmgr(
        tmp_path, f"echo 'no node records were found'\necho 'WARNING: hmm' >&2\nexit {exit_code}\n"
    )
    with pytest.raises(RepmgrError, match=f"exit code {exit_code} but no usable table") as caught:
        run_cluster_show(repmgr, CONFIG, timeout=10)
    assert isinstance(caught.value.__cause__, ParseError)
    assert "stderr: 'WARNING: hmm'" in str(caught.value)


def test_missing_binary(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-repmgr")
    with pytest.raises(RepmgrError, match=r"cannot run .*no-such-repmgr.*No such file"):
        run_cluster_show(missing, CONFIG, timeout=10)


def test_binary_not_executable(tmp_path: Path) -> None:
    repmgr = fake_repmgr(tmp_path, "exit 0\n", executable=False)
    with pytest.raises(RepmgrError, match=r"cannot run .*Permission denied"):
        run_cluster_show(repmgr, CONFIG, timeout=10)


def test_deadline(tmp_path: Path) -> None:
    repmgr = fake_repmgr(tmp_path, "echo 'INFO: connecting to database' >&2\nexec sleep 30\n")
    started = time.monotonic()
    with pytest.raises(RepmgrError, match=r"no answer within 0\.5 s") as caught:
        run_cluster_show(repmgr, CONFIG, timeout=0.5)
    assert time.monotonic() - started < 5
    assert "connecting to database" in str(caught.value)


def test_repmgr_gets_a_connect_timeout_for_conninfos_without_one(tmp_path: Path) -> None:
    """A conninfo with no connect_timeout would leave repmgr on a silent host for minutes
    of TCP retries: PGCONNECT_TIMEOUT is libpq's default for it."""
    seen = tmp_path / "env"
    repmgr = fake_repmgr(
        tmp_path,
        f"echo \"$PGCONNECT_TIMEOUT\" > '{seen}'\ncat '{FIXTURES / 'compact-5.3-handmade.txt'}'\n",
    )
    run_cluster_show(repmgr, CONFIG, timeout=10, connect_timeout=2)
    assert seen.read_text().strip() == "2"
