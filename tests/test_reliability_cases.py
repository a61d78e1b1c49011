"""Every bad input of the troubleshooting table → exit 2, one line naming the file/field,
no traceback, no file created, changed or deleted (issue 7)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import bad_inputs as ts  # tests/bad_inputs.py: the table of bad inputs
from as3l_plugin.errors import AS3LError

REPO = Path(__file__).resolve().parents[1]

#: cases whose fix lives in a module owned by another helper at the time of writing
KNOWN_ISSUES = {}


def _param(case):
    marks = []
    if case.id in KNOWN_ISSUES:
        marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_ISSUES[case.id]))
    return pytest.param(case, id=case.id, marks=marks)


def test_case_table_is_well_formed():
    ids = [c.id for c in ts.CASES]
    assert len(ids) == len(set(ids))
    areas = {c.area for c in ts.CASES}
    assert areas == {"features", "budget", "labels", "prior", "sidecar", "config", "output"}
    for c in ts.CASES:
        assert c.error is None or c.error is SystemExit or issubclass(c.error, AS3LError), c.id
        assert c.message and c.problem and c.fix, c.id
    assert {c.fault for c in ts.CASES} == {None, "readonly", "disk_full"}


@pytest.mark.parametrize("case", [_param(c) for c in ts.CASES])
def test_bad_input_gives_one_clear_error_and_writes_nothing(case, tmp_path):
    res = ts.run_case(case, tmp_path / "ws")
    problems = ts.check_result(res)
    assert not problems, f"{case.id}: {problems}\nstdout: {res.stdout[-800:]}"
    if case.error not in (None, SystemExit):
        err = res.error
        # the message names the file or the field (the `path` / `field` of the error)
        assert err.path or err.field, case.id
        for name in (err.path, err.field):
            if name:
                assert name in res.error_line


def test_readme_troubleshooting_table_is_generated_from_the_cases():
    readme = (REPO / "README.md").read_text()
    block = re.search(re.escape(ts.README_BEGIN) + r".*?" + re.escape(ts.README_END), readme,
                      re.S)
    assert block, "README.md lacks the generated troubleshooting table markers"
    assert block.group(0) == ts.readme_block(), (
        "README troubleshooting table is stale: run "
        "`.venv/bin/python tests/bad_inputs.py --write-readme README.md`")
    section = readme.split("<!-- section: troubleshooting -->", 1)[1].split("<!-- section:", 1)[0]
    assert ts.README_BEGIN in section


def test_update_readme_rewrites_only_the_table(tmp_path):
    p = tmp_path / "R.md"
    p.write_text(f"intro\n{ts.README_BEGIN}\nold\n{ts.README_END}\noutro\n")
    assert ts.update_readme(p) is True
    text = p.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n")
    assert ts.render_table() in text and "\nold\n" not in text
    assert ts.update_readme(p) is False
    p.write_text("no markers\n")
    with pytest.raises(AS3LError, match="markers"):
        ts.update_readme(p)


@pytest.mark.parametrize("case_id", ["features-truncated", "budget-not-integer",
                                     "labels-duplicate", "output-missing-dir"])
@pytest.mark.slow
def test_real_process_prints_one_line_and_exits_2(case_id, tmp_path):
    """The console entry (`python -m as3l_plugin`) in a real process, not just cli.run."""
    case = ts.get_case(case_id)
    ws = tmp_path / "ws"
    argv = ts.build_case(case, ws)
    before = ts.snapshot(ws)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "as3l_plugin", *argv], cwd=ws, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    prefix = "as3l " if case.error is SystemExit else "as3l: error: "
    assert ts.message_regex(case.message, prefix=prefix).fullmatch(lines[0]), lines[0]
    assert ts.snapshot(ws) == before


def test_debug_flag_shows_the_traceback(tmp_path):
    from as3l_plugin.cli import main
    case = ts.get_case("features-nan")
    argv = ts.build_case(case, tmp_path)
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(case.error, match="NaN or inf"):
            main(["--debug", *argv])
    finally:
        os.chdir(old)


def test_faults_are_really_simulated(tmp_path):
    """The simulated full disk leaves a half-written temp file that atomic writes remove."""
    from as3l_plugin import io as aio
    from as3l_plugin.errors import OutputError
    (tmp_path / "sel").mkdir()
    target = tmp_path / "sel" / "a.bin"
    target.write_bytes(b"old")
    for fault in ("disk_full", "readonly"):
        with ts.simulated_fault(fault, tmp_path):
            with pytest.raises(OutputError):
                aio.atomic_write_bytes(target, b"new content" * 100)
        assert target.read_bytes() == b"old"
        assert sorted(p.name for p in (tmp_path / "sel").iterdir()) == ["a.bin"]
    aio.atomic_write_bytes(target, b"new")  # faults are gone afterwards
    assert target.read_bytes() == b"new"
