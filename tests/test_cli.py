"""The ptmon command line: replay output, determinism, and error messages."""

from __future__ import annotations

import csv
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ptmon.archive import write_archive
from ptmon.cli import main
from ptmon.results import CSV_COLUMNS

from .conftest import HEADER, T0, hb, raw


@pytest.fixture
def archive_and_registry(tmp_path):
    rng = random.Random(3)
    registry = tmp_path / "registry.csv"
    devices = [(f"c{i}", "cam", "face_cam", "taopu") for i in range(20)] + [(f"s{i}", "iot", "smoke", "wanli") for i in range(20)]
    registry.write_text(HEADER + "\n" + "".join(f"{d},{c},{t},{s},scn,{s}-c1,gw-{s},2026-01-01,\n" for d, c, t, s in devices))
    records = []
    for k in range(0, 7200, 30):
        d, c, _, s = rng.choice(devices)
        counters = {"face_try": k, "face_ok": k - k // 50} if c == "cam" else {"reads": k, "read_ok": k}
        records.append(hb(T0 + k + rng.random(), d, c, s, seq=k, **counters))
    records.append(raw(T0 + 100.5, "putuo/cam/taopu/ghost/hb", "{}"))
    records.sort()
    parts = [tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"]
    write_archive(parts[0], records[: len(records) // 2])
    write_archive(parts[1], records[len(records) // 2 :])
    return parts, registry


def test_replay_csv_is_byte_identical_across_runs(tmp_path, archive_and_registry, capsys):
    """Test that the same archives and registry give the same CSV bytes, whatever the file order."""
    parts, registry = archive_and_registry
    outs = []
    for n, order in enumerate([parts, parts[::-1], parts]):
        out = tmp_path / f"kpi{n}.csv"
        code = main(["replay", *map(str, order), "--start", "2026-11-01T00:00", "--end", "2026-11-01T02:00",
                     "--registry", str(registry), "--csv", str(out)])
        assert code == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]
    rows = list(csv.DictReader(outs[0].decode().splitlines()))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert {r["street"] for r in rows} >= {"taopu", "wanli", "district"}
    online = next(r for r in rows if (r["contract"], r["street"], r["kpi"]) == ("cam", "taopu", "online"))
    # first record at 00:00:00.x: the 00:00 sample was not observed
    assert len(online["value"].split(".")[1]) >= 6 and online["observed_seconds"] == "7140"
    table = capsys.readouterr().out
    assert "桃浦镇" in table and "putuo/cam/taopu/ghost/hb" in table


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--month", "2026-11", "--start", "2026-11-01"], "either --month or --start/--end"),
        (["--start", "2026-11-01"], "give the period"),
        (["--start", "2026-11-02", "--end", "2026-11-01"], "is not after --start"),
        (["--start", "2026-11-01T00:00:30", "--end", "2026-11-02"], "must fall on the 60 s sample grid"),
        (["--month", "2026-11", "--rules", "/nonexistent"], "rules directory not found"),
    ],
    ids=["both", "missing", "reversed", "off-grid", "rules"],
)
def test_replay_argument_errors(archive_and_registry, capsys, args, message):
    """Test that bad replay arguments exit 2 with a message saying what is wrong."""
    parts, registry = archive_and_registry
    assert main(["replay", str(parts[0]), "--registry", str(registry), *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", ["registry", "rules", "ledger", "month", "exempt"])
def test_a_command_without_its_action_says_which_are_needed(command, capsys):
    """Test that a command of several actions named without one (`ptmon registry`) stops with
    argparse's usage and exit 2, not a traceback."""
    with pytest.raises(SystemExit) as stopped:
        main([command])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert f"usage: ptmon {command}" in err and "required" in err and "Traceback" not in err


def test_help_explains_commands():
    """Test that `ptmon --help` lists the commands with their purpose (run as a real process)."""
    out = subprocess.run([sys.executable, "-m", "ptmon.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("replay", "registry", "rules", "demo"):
        assert command in out
    assert "上线率" in out


@pytest.mark.parametrize(("command", "buffered"), [(["replay", "--quiet", "--csv", "-"], True),
                                                  (["replay", "--quiet", "--csv", "-"], False), (["--help"], True)],
                         ids=["replay-buffered", "replay-unbuffered", "help-buffered"])
def test_output_to_a_pipe_closed_early_stops_quietly(archive_and_registry, command, buffered):
    """Test that `ptmon replay --csv - | head` or `ptmon --help | true`, the reader gone before the
    output is written, exits as a command killed by SIGPIPE would (141) with no traceback nor
    "Exception ignored", whether stdout is buffered (a CSV still in the buffer at exit used to be
    lost with status 0) or not. (Unbuffered, argparse drops a help it cannot write, status 0.)"""
    parts, registry = archive_and_registry
    if command[0] == "replay":
        command = [*command, *map(str, parts), "--registry", str(registry), "--start", "2026-11-01T00:00",
                   "--end", "2026-11-01T02:00"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | ({} if buffered else {"PYTHONUNBUFFERED": "1"})
    proc = subprocess.Popen([sys.executable, "-m", "ptmon.cli", *command], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    proc.stdout.close()  # the reader leaves before the first byte
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "Exception ignored" not in err


@pytest.mark.skipif(not Path("/dev/full").is_char_device(), reason="no /dev/full")
@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_output_to_a_full_disk_is_an_error(archive_and_registry, buffered):
    """Test that `ptmon replay --csv - > file-on-a-full-disk` (/dev/full) ends with exit 2 and one
    line saying the output cannot be written, not status 0 or a traceback."""
    parts, registry = archive_and_registry
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | ({} if buffered else {"PYTHONUNBUFFERED": "1"})
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "ptmon.cli", "replay", *map(str, parts), "--registry", str(registry),
                               "--start", "2026-11-01T00:00", "--end", "2026-11-01T02:00", "--quiet", "--csv", "-"],
                              stdout=full, stderr=subprocess.PIPE, text=True, env=env, timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == "ptmon: error: cannot write the output: No space left on device"
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


def test_out_of_memory_is_one_line_naming_the_limit(archive_and_registry, capsys, monkeypatch):
    """Test that a command running out of memory (MemoryError: a ulimit -v, a container's limit) ends
    with exit 2 and one line that says so, naming the address-space limit when one is set."""
    import resource

    parts, registry = archive_and_registry

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr("ptmon.cli.load_registry", exhausted)
    args = ["replay", str(parts[0]), "--registry", str(registry), "--start", "2026-11-01T00:00", "--end", "2026-11-01T02:00"]
    assert main(args) == 2
    assert capsys.readouterr().err == "ptmon: error: out of memory: the command stopped\n"
    monkeypatch.setattr(resource, "getrlimit", lambda which: (512 * 2**20, resource.RLIM_INFINITY))
    assert main(args) == 2
    limited = "ptmon: error: out of memory (address space limited to 512 MiB by ulimit -v): the command stopped\n"
    assert capsys.readouterr().err == limited


_DURING_IMPORT = """
import os, signal, sys
class During:  # the import of ptmon's rule module is where the Ctrl-C or the allocation failure lands
    def find_spec(self, name, path=None, target=None):
        if name == "ptmon.rules":
            if sys.argv[1] == "ctrl-c":
                os.kill(os.getpid(), signal.SIGINT)  # a real one, taken by whatever handler is set
            elif sys.argv[1] == "no-memory":
                raise MemoryError
            else:  # what the loader says when it cannot map an extension module's pages
                raise ImportError("/x/_ext.so: failed to map segment from shared object")
if sys.argv[1] == "no-mapping":
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (2**36, resource.getrlimit(resource.RLIMIT_AS)[1]))
sys.meta_path.insert(0, During())
from ptmon.__main__ import main
sys.exit(main())
"""


@pytest.mark.parametrize(("event", "status", "said"), [
    ("ctrl-c", 130, "ptmon: interrupted\n"),
    ("no-memory", 2, "ptmon: error: out of memory while starting\n"),
    ("no-mapping", 2, "ptmon: error: out of memory while starting (address space limited to 65,536 MiB by ulimit -v): "
                      "/x/_ext.so: failed to map segment from shared object\n"),
    ("no-mapping-unlimited", 1, "Traceback"),
])
def test_ctrl_c_or_no_memory_while_the_command_line_loads_is_one_line(event, status, said):
    """Test that a Ctrl-C in the half second `ptmon` spends importing ends it once the imports are
    done, as one later does (exit 130, "interrupted"; a KeyboardInterrupt inside an import could
    surface as another module's error), and an address-space limit too small for the imports says
    so (exit 2), with no traceback, whether it shows as a MemoryError or as the loader failing to
    map an extension module; without a limit, that loader error is a broken install's, and shown."""
    done = subprocess.run([sys.executable, "-c", _DURING_IMPORT, event, "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == status
    assert done.stderr.startswith(said) and (said == "Traceback" or done.stderr == said)
    assert done.stdout == ""  # --help was not run


def test_the_installed_command_runs_the_command_line():
    """Test that `python -m ptmon`, the installed `ptmon` script's entry point, is the command line."""
    done = subprocess.run([sys.executable, "-m", "ptmon", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("ptmon ")


def test_replay_reads_an_archive_directory(tmp_path, archive_and_registry, capsys):
    """Test that `ptmon replay DIR` reads the archive files of a directory, as the collector names them,
    and gives the CSV of the files named one by one; an empty or missing directory is an error."""
    parts, registry = archive_and_registry
    archive = tmp_path / "archive"
    archive.mkdir()
    for n, part in enumerate(parts):
        (archive / f"ptmon-2026-11-01{'.' + str(n) if n else ''}.jsonl.gz").write_bytes(part.read_bytes())
    period = ["--start", "2026-11-01T00:00", "--end", "2026-11-01T02:00", "--registry", str(registry), "--quiet"]
    assert main(["replay", str(archive), *period, "--csv", str(tmp_path / "dir.csv")]) == 0
    assert main(["replay", *map(str, parts), *period, "--csv", str(tmp_path / "files.csv")]) == 0
    assert (tmp_path / "dir.csv").read_bytes() == (tmp_path / "files.csv").read_bytes()
    (tmp_path / "empty").mkdir()
    assert main(["replay", str(tmp_path / "empty"), *period]) == 2
    assert "no archive files" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "nowhere"), *period]) == 2
    assert "no such archive file or directory" in capsys.readouterr().err


EXEMPT = ["--from", "2026-11-03T09:00", "--to", "2026-11-03T12:00", "--reason", "停电检修", "--approver", "王工"]


def test_exempt_options_work_after_the_action(tmp_path, capsys):
    """Test that --config (and --ledger) are taken before or after `exempt add`, and locate the config's ledger."""
    config = tmp_path / "ptmon.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    assert main(["exempt", "add", "--config", str(config), "--street", "taopu", *EXEMPT]) == 0
    assert main(["exempt", "--config", str(config), "add", "--street", "wanli", *EXEMPT]) == 0
    assert main(["exempt", "list", "--config", str(config)]) == 0
    listed = capsys.readouterr().out
    assert "street taopu" in listed and "street wanli" in listed
    assert (tmp_path / "data" / "ledger.sqlite").is_file()


@pytest.mark.parametrize(
    ("target", "with_registry", "message"),
    [
        (["--street", "nowhere"], False, "--street 'nowhere' is not a street of the rules (known: changshou,"),
        (["--device", "s999"], True, "--device 's999' is not in the registry"),
        (["--gateway", "gw-nowhere"], True, "--gateway 'gw-nowhere' has no device in the registry"),
        (["--device", "s1"], False, "--device 's1' cannot be checked: give the registry"),
    ],
    ids=["street", "device", "gateway", "no-registry"],
)
def test_exempt_add_refuses_unknown_targets(tmp_path, archive_and_registry, capsys, target, with_registry, message):
    """Test that an exemption of a street, device or gateway that does not exist is refused with status 2,
    a message saying why, and no ledger written."""
    _, registry = archive_and_registry
    ledger = tmp_path / "ledger.sqlite"
    extra = ["--registry", str(registry)] if with_registry else []
    assert main(["exempt", "add", "--ledger", str(ledger), *target, *EXEMPT, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not ledger.exists()
    assert main(["exempt", "add", "--ledger", str(ledger), "--device", "s1", *EXEMPT, "--registry", str(registry)]) == 0


@pytest.mark.parametrize(
    ("window", "message"),
    [
        (["--from", "1026-11-01", "--to", "2026-11-01T04:00"], "--from '1026-11-01' is before 1970: an exemption lies "
                                                               "between 2000-01-01T00:00:00+08:00 and"),
        (["--from", "2026-11-01", "--to", "9999-01-01"], "--to '9999-01-01' is 9999-01-01T00:00:00+08:00"),
        (["--from", "2026-11-01", "--to", "2026-11-02", "--reason", "停电\n检修"], "--reason must be one line of text"),
        (["--from", "2026-11-01", "--to", "2026-11-02", "--approver", " "], "--approver must be one line of text"),
    ],
    ids=["year-typo", "far-future", "newline", "blank"],
)
def test_exempt_add_refuses_a_window_or_text_no_operator_approved(tmp_path, capsys, window, message):
    """Test that a mistyped year (which would exempt a street over every month back to it, closed ones too) and a
    reason or approver that is not one line are refused with status 2 and no ledger written."""
    ledger = tmp_path / "ledger.sqlite"
    args = {"--reason": "停电检修", "--approver": "王工"}
    args.update(dict(zip(window[::2], window[1::2])))
    assert main(["exempt", "add", "--ledger", str(ledger), "--street", "taopu",
                 *[x for kv in args.items() for x in kv]]) == 2
    assert message in capsys.readouterr().err
    assert not ledger.exists()


def test_exempt_add_creates_no_ledger_where_no_collector_reads_it(tmp_path, monkeypatch, capsys):
    """Test that `exempt add` without --config or --ledger, where there is no ledger, and with a --ledger in a
    directory that does not exist, is refused and writes nothing; a new --ledger file is created with a note."""
    monkeypatch.chdir(tmp_path)
    assert main(["exempt", "add", "--street", "taopu", *EXEMPT]) == 2
    assert "no ledger at ptmon-data/ledger.sqlite (the default): give the collector's --config" in capsys.readouterr().err
    assert main(["exempt", "add", "--ledger", "typo/ledger.sqlite", "--street", "taopu", *EXEMPT]) == 2
    assert "--ledger typo/ledger.sqlite: no directory typo" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert main(["exempt", "add", "--ledger", "new.sqlite", "--street", "taopu", *EXEMPT]) == 0
    assert "note: new.sqlite did not exist: a new ledger is created" in capsys.readouterr().err


def test_rules_check_validates_alerts_as_the_collector_does(tmp_path, capsys):
    """Test that `ptmon rules check` fails on an alerts.yaml typo exactly as `collect --check-config` does."""
    import shutil

    from ptmon.rules import DEFAULT_RULES_DIR

    rules_dir = tmp_path / "rules"
    shutil.copytree(DEFAULT_RULES_DIR, rules_dir, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    assert main(["rules", "check", str(rules_dir)]) == 0
    assert "alert rules: 4 in" in capsys.readouterr().out
    alerts = rules_dir / "alerts.yaml"
    alerts.write_text(alerts.read_text().replace("resolve_for: 10m", "resolve_fro: 10m"))
    assert main(["rules", "check", str(rules_dir)]) == 2
    rules_error = capsys.readouterr().err
    config = tmp_path / "ptmon.toml"
    config.write_text(f'rules = "{rules_dir}"\nregistry = "{tmp_path / "registry.csv"}"\n')
    (tmp_path / "registry.csv").write_text(HEADER + "\ns1,iot,smoke,taopu,scn,taopu-c1,gw-taopu,2026-01-01,\n")
    assert main(["collect", "--config", str(config), "--check-config"]) == 2
    assert "resolve_fro" in rules_error and rules_error == capsys.readouterr().err


@pytest.mark.parametrize(("file", "old", "new", "message"), [
    ("anomaly.yaml", "  ratio: 0.1", "  ratio: 1.5", "ratio"),
    ("anomaly.yaml", "  ratio: 0.1", "  ratio: 0.1\n  min_rat: 2", "min_rat"),
    ("alerts.yaml", "grouping:\n", "grouping:\n  group_wait: 2m\n", "duplicate key 'group_wait'"),
    ("streets.yaml", "taopu:      {", "changzheng: {name: 长征镇, supervisor: 区公安}\ntaopu:      {",
     "duplicate key 'changzheng'"),
], ids=["anomaly-value", "anomaly-key", "alerts-duplicate", "streets-duplicate"])
def test_both_checks_refuse_what_the_collector_would(tmp_path, capsys, file, old, new, message):
    """Test that `ptmon rules check` and `collect --check-config` load anomaly.yaml as the collector
    does (a bad value or unknown key fails both), and refuse a key given twice with file and line."""
    import shutil

    from ptmon.rules import DEFAULT_RULES_DIR

    rules_dir = tmp_path / "rules"
    shutil.copytree(DEFAULT_RULES_DIR, rules_dir, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    assert main(["rules", "check", str(rules_dir)]) == 0
    assert f"anomaly rules: {rules_dir / 'anomaly.yaml'}" in capsys.readouterr().out
    path = rules_dir / file
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))
    assert main(["rules", "check", str(rules_dir)]) == 2
    rules_error = capsys.readouterr().err
    assert message in rules_error and file in rules_error
    if "duplicate" in message:
        assert re.search(r"first given at line \d+", rules_error) and re.search(r"line \d+, column", rules_error)
    config = tmp_path / "ptmon.toml"
    config.write_text(f'rules = "{rules_dir}"\nregistry = "{tmp_path / "registry.csv"}"\n')
    (tmp_path / "registry.csv").write_text(HEADER + "\ns1,iot,smoke,taopu,scn,taopu-c1,gw-taopu,2026-01-01,\n")
    assert main(["collect", "--config", str(config), "--check-config"]) == 2
    assert message in capsys.readouterr().err


def test_an_empty_district_list_is_warned_about(tmp_path, capsys):
    """Test that `recipients.district: []` passes the checks with a warning that the district's own
    emails (silences, gaps, the digest) reach nobody."""
    import shutil

    from ptmon.rules import DEFAULT_RULES_DIR

    rules_dir = tmp_path / "rules"
    shutil.copytree(DEFAULT_RULES_DIR, rules_dir, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    alerts = rules_dir / "alerts.yaml"
    alerts.write_text(alerts.read_text().replace("district: [ops@ptcenter.example]", "district: []"))
    config = tmp_path / "ptmon.toml"
    config.write_text(f'rules = "{rules_dir}"\nregistry = "{tmp_path / "registry.csv"}"\n')
    (tmp_path / "registry.csv").write_text(HEADER + "\ns1,iot,smoke,taopu,scn,taopu-c1,gw-taopu,2026-01-01,\n")
    for argv in (["rules", "check", str(rules_dir)], ["collect", "--config", str(config), "--check-config"]):
        assert main(argv) == 0
        assert "warning: recipients.district is empty" in capsys.readouterr().out


@pytest.mark.parametrize("command", [["rules", "check"], ["registry", "check"]], ids=["rules", "registry"])
def test_check_commands_explain_themselves(command, capsys):
    """Test that `rules check --help` and `registry check --help` say what they validate."""
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "validate" in text.lower() and "exit status is then 2" in text


@pytest.mark.parametrize(("start", "anchor"), [("1965-03-01T00:00", 1800000000), ("9999-12-31T23:59:50", 1800000000),
                                               ("9999-01-01T00:00", 0)])  # 56 years of wall time since the anchor
def test_a_simulated_clock_outside_the_months_kept_is_refused_before_anything_is_written(
        archive_and_registry, tmp_path, capsys, start, anchor):
    """Test that `collect --sim-start` whose clock starts, or already is, in a month the archive and
    ledger cannot name is refused in one line before the data directory is written; such an archive
    file would stop every later start, and a date past 9999 crashed the archive's rotation."""
    _, registry = archive_and_registry
    data = tmp_path / "data"
    code = main(["collect", "--registry", str(registry), "--broker", "mqtt://127.0.0.1:1", "--data-dir", str(data),
                 "--sim-start", start, "--sim-anchor", str(anchor)])
    assert code == 2
    assert capsys.readouterr().err.endswith(f"ptmon: error: --sim-start {start} --sim-anchor {anchor} --sim-speed 1: "
                                            "the simulated clock is outside the months ptmon keeps (1970-01 to "
                                            "9999-11, Shanghai time)\n")
    assert not data.exists()
