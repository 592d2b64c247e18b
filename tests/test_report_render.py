"""The acceptance report's files: PDF pages and text, HTML escaping, XLSX values, CSV = replay.

The inputs come from a replay of a month scenario whose KPIs are known by hand, with
hand-made episodes, exemptions and daily KPIs (the renderers read only ReportInputs):

* iot 长寿路街道: 4 smoke sensors, one never reports → online 3/4 = 75 % (15 points under
  90 %), sensing 930/1000 = 93 % (2 points under 95 %) → 17 % of 238,958.33 = 40,622.9161
  → deduction 40,622.92, payable 198,335.41;
* iot 桃浦镇: 2 sensors always online, sensing 99 % → no deduction;
* cam 长寿路街道: 2 cameras, one silent → online 50 % (45 points), capture 2,700/3,000 =
  90 % (5 points) → 50 %, capped at 30 % of 358,299.76 = 107,489.928 → 107,489.93,
  payable 250,809.83;
* cam 桃浦镇: online 100 %, capture 100 % → no deduction;
* the other 8 streets have no devices: no data, no deduction, listed for the reviewers;
* a 2-hour monitoring gap on day 10 (13:00–15:00), never counted as offline.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import subprocess
import sys
import types
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from ptmon.cli import main
from ptmon.errors import PtmonError
from ptmon.ledger.records import Episode, Exemption
from ptmon.report.model import DailyKpi, InputFile, ReportInputs
from ptmon.report.render import render
from ptmon.report.view import build_view
from ptmon.results import CSV_COLUMNS
from ptmon.rules import Rules

from .conftest import T0, down, hb, make_registry, run, tick, up
from .programs import program

DAY = 86_400
US = 1_000_000
MONTH = "2026-11"
SCRIPT_ID = "<script>alert(\"1\")&'x'"
EVIL_REASON = "电源检修\r\n第二行 <b>加粗</b>\r末行 & \"引号\" \x1b[31m"
EVIL_APPROVER = "王<i>审批</i>\"'"
GAP = (T0 + 9 * DAY + 13 * 3600, T0 + 9 * DAY + 15 * 3600)
# Summary and warnings; per contract: street results and money, trend charts, maintenance and
# worst devices; exemptions, coverage and data quality; method, inputs and the signature block.
PAGES = 1 + 2 * 3 + 1 + 1


def _records() -> list[tuple[float, str, str]]:
    records = [up(T0)]
    sensors = [("iot-cs-1", "changshou"), ("iot-cs-2", "changshou"), ("iot-cs-3", "changshou"),
               ("iot-tp-1", "taopu"), ("iot-tp-2", "taopu")]
    for j in range(60):  # every 12 h; the smoke sensors' timeout is 13 h
        for device, street in sensors:
            payload: dict[str, int] = {"seq": j}
            ok = {"iot-cs-1": 930, "iot-tp-1": 990}.get(device)
            if ok is not None:
                payload |= {"reads": 1000 if j else 0, "read_ok": ok if j else 0}
            records.append(hb(T0 + 12 * 3600 * j, device, "iot", street, **payload))
    for k in range(30 * DAY // 120):  # every 2 min; the cameras' timeout is 3 min
        t = T0 + 120 * k
        if GAP[0] <= t < GAP[1]:
            continue
        first = k < 5  # 600 captures 2 minutes after the last heartbeat: within a camera's 5 a second (+ a minute's burst)
        records.append(hb(t, "cam-cs-1", "cam", "changshou", seq=k, face_try=0 if first else 400,
                          face_ok=0 if first else 380, plate_try=0 if first else 200, plate_ok=0 if first else 160))
        records.append(hb(t, "cam-tp-1", "cam", "taopu", seq=k, face_try=0 if first else 200, face_ok=0 if first else 200))
    records += [down(GAP[0]), up(GAP[1]), tick(T0 + 30 * DAY)]
    return sorted(records, key=lambda r: r[0])


def _episodes() -> list[Episode]:
    def ep(device: str, contract: str, street: str, start: float, end: float | None, restored: bool = False) -> Episode:
        return Episode(device=device, contract=contract, street=street, type="smoke" if contract == "iot" else "face_cam",
                       community=f"{street}-c1", gateway=f"gw-{street}", start=int(start * US),
                       end=None if end is None else int(end * US), restored=restored)

    return [
        ep(SCRIPT_ID, "iot", "changshou", T0 + 13 * 3600, None),  # never heard from: open all month
        ep("iot-cs-2", "iot", "changshou", T0 - 2 * DAY, T0 + 3 * 3600, restored=True),  # began last month: 2 d 3 h
        ep("iot-cs-2", "iot", "changshou", T0 + 5 * DAY, T0 + 5 * DAY + 6 * 3600, restored=True),  # 6 h
        ep("iot-cs-3", "iot", "changshou", T0 + 20 * DAY, T0 + 20 * DAY + 30 * 3600, restored=True),  # 30 h: late
        ep("iot-tp-2", "iot", "taopu", T0 + 29 * DAY, T0 + 31 * DAY, restored=True),  # restored after the month
        ep("cam-cs-2", "cam", "changshou", T0 + 180, None),
        ep("cam-tp-1", "cam", "taopu", T0 + 2 * DAY, T0 + 2 * DAY + 1800, restored=True),
    ]


def _exemptions() -> list[Exemption]:
    return [
        Exemption(id=1, scope="device", target="iot-tp-1", start=(T0 + 3 * DAY) * US, end=(T0 + 4 * DAY) * US,
                  reason=EVIL_REASON, approver=EVIL_APPROVER, created_at=(T0 + 2 * DAY) * US),
        Exemption(id=2, scope="street", target="taopu", start=(T0 + 10 * DAY) * US, end=(T0 + 10 * DAY + 7200) * US,
                  reason="道路施工断电", approver="李四", created_at=(T0 + 11 * DAY) * US,
                  revoked_at=(T0 + 12 * DAY) * US, revoked_by="张三", revoke_reason="误登记"),
    ]


def _daily(rules: Rules) -> list[DailyKpi]:
    """Daily KPIs in line with the month (day 10 lower, the day of the gap)."""
    out = []
    values = {("iot", "changshou"): {"online": (3, 4), "sensing": (31, 33)},
              ("iot", "taopu"): {"online": (1, 1), "sensing": (99, 100)},
              ("cam", "changshou"): {"online": (1, 2), "capture": (9, 10), "face": (19, 20), "plate": (4, 5)},
              ("cam", "taopu"): {"online": (1, 1), "capture": (1, 1), "face": (1, 1), "plate": (0, 0)}}
    for i in range(30):
        day = date(2026, 11, 1) + timedelta(days=i)
        for (contract, street), kpis in values.items():
            for kpi, (num, den) in kpis.items():
                scale = 100
                n = num * scale - (7 * den if i == 9 and num == den else 0)
                out.append(DailyKpi(day=day, contract=contract, street=street, kpi=kpi, numerator=n, denominator=den * scale))
    return out


@pytest.fixture(scope="module")
def inputs(rules: Rules) -> ReportInputs:
    registry = make_registry(
        rules, "iot-cs-1,iot,smoke,changshou", "iot-cs-2,iot,smoke,changshou", "iot-cs-3,iot,smoke,changshou",
        f"{SCRIPT_ID},iot,smoke,changshou", "iot-tp-1,iot,smoke,taopu", "iot-tp-2,iot,smoke,taopu",
        "cam-cs-1,cam,face_cam,changshou", "cam-cs-2,cam,face_cam,changshou", "cam-tp-1,cam,face_cam,taopu",
        "iot-old,iot,smoke,taopu,2025-01-01,2026-10-01")  # retired before the month: not in it
    results = run(registry, _records(), T0, T0 + 30 * DAY)
    files = [InputFile(role="ledger", path="/srv/ptmon/ledger.sqlite", sha256="a" * 64),
             InputFile(role="registry", path="registry.csv", sha256="b" * 64),
             InputFile(role="rules", path="rules/", sha256="c" * 64)]
    return ReportInputs(month=MONTH, start=T0 * US, end=(T0 + 30 * DAY) * US, source="ledger", rules=rules,
                        registry=registry, results=results, daily=_daily(rules), exemptions=_exemptions(),
                        episodes=_episodes(), files=files, digest="d" * 64,
                        warnings=["台账第 3 小时由其他版本计算 (test warning)"])


@pytest.fixture(scope="module")
def out(inputs: ReportInputs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("report")
    written = render(inputs, target)
    assert [p.name for p in written] == [f"report-{MONTH}.{f}" for f in ("html", "xlsx", "csv", "pdf")]  # the PDF last
    return target


def test_pass_fail_and_money_to_the_fen(inputs):
    """Test that pass/fail, deductions and payable amounts equal the hand-computed values."""
    view = build_view(inputs)
    iot, cam = view.contracts
    cs, tp = iot.streets[0], iot.streets[-1]
    assert (cs.code, cs.passed, tp.passed) == ("changshou", False, True)
    assert (cs.payment.deduction, cs.payment.payable) == (Decimal("40622.92"), Decimal("198335.41"))
    assert (tp.payment.deduction, tp.payment.payable) == (Decimal("0.00"), Decimal("238958.33"))
    assert iot.district.payment.fee == Decimal("2389583.30")
    assert (iot.district.payment.deduction, iot.district.payment.payable) == (Decimal("40622.92"), Decimal("2348960.38"))
    ccs = cam.streets[0]
    assert (ccs.passed, ccs.payment.capped, ccs.payment.deduction, ccs.payment.payable) == (
        False, True, Decimal("107489.93"), Decimal("250809.83"))
    assert cam.streets[-1].payment.deduction == Decimal("0.00")
    assert iot.streets[1].passed is None and iot.streets[1].payment.undetermined == ("online", "sensing")
    total = view.money_total()
    assert (total.fee, total.deduction, total.payable) == (Decimal("5972580.90"), Decimal("148112.85"), Decimal("5824468.05"))


def test_maintenance_and_worst_devices(inputs):
    """Test the maintenance record: restored, open, median/p90 and the response-time share."""
    view = build_view(inputs, "iot")
    cs = view.contracts[0].streets[0].maintenance
    # restored in the month: 51 h, 6 h, 30 h; open: the silent sensor (overdue), no retirements
    assert (cs.episodes, cs.restored, cs.open_at_end, cs.left) == (4, 3, 1, 0)
    assert (cs.median_restore, cs.p90_restore) == (30 * 3600, 51 * 3600)
    assert (cs.within_response, cs.due) == (1, 4)
    tp = view.contracts[0].streets[-1].maintenance
    assert (tp.episodes, tp.restored, tp.open_at_end) == (1, 0, 1)  # restored only after the month
    worst = view.contracts[0].worst["changshou"]
    assert [w.device for w in worst] == [SCRIPT_ID, "iot-cs-3", "iot-cs-2"]
    assert worst[0].offline_seconds == 30 * DAY - 13 * 3600 and worst[0].open_at_end
    assert worst[2].offline_seconds == 3 * 3600 + 6 * 3600 and worst[2].episodes == 2  # clipped to the month


def test_pdf_pages_are_a4_numbered_and_not_blank(out, tmp_path):
    """Test that the PDF turns into the expected number of non-blank A4 PNG pages."""
    from PIL import Image

    pdf = out / f"report-{MONTH}.pdf"
    subprocess.run([program("pdftoppm"), "-r", "30", "-gray", "-png", str(pdf), str(tmp_path / "page")], check=True, timeout=120)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) == PAGES
    for page in pages:
        with Image.open(page) as im:
            assert abs(im.width / im.height - 210 / 297) < 0.01  # A4 portrait
            dark = sum(im.histogram()[:200])
            assert dark > 0.005 * im.width * im.height, f"{page.name} looks blank"


def test_pdf_text_has_streets_figures_and_signature(out):
    """Test that the PDF's text holds the street names, the money, the marks and the signature block."""
    text = subprocess.run([program("pdftotext"), "-layout", str(out / f"report-{MONTH}.pdf"), "-"], capture_output=True,
                          text=True, check=True, timeout=120).stdout
    for expected in ("月度租赁服务考核验收报告", "长寿路街道", "桃浦镇", "曹杨新村街道", "达标", "未达标",
                     "40,622.92", "198,335.41", "107,489.93", "250,809.83", "2,348,960.38", "75.000%", "93.000%",
                     "50.000%", "90.000%", "审核人", "日期",
                     "监测缺口", "2026-11-10 13:01",  # the first missed sample (13:00 was observed)
                     "电源检修", "d" * 64, "时间加权（每 60 秒采样）"):
        assert expected in text, expected
    compact = text.replace(" ", "")  # pdftotext drops the spaces around CJK text unevenly
    assert f"第1页/共{PAGES}页" in compact and f"第{PAGES}页/共{PAGES}页" in compact


def test_html_escapes_ids_reasons_and_names(out):
    """Test that a <script> device id, a reason with CR/LF and markup, and a quoted approver print as text."""
    html = (out / f"report-{MONTH}.html").read_text(encoding="utf-8")
    assert "<script" not in html and "<b>" not in html and "<i>" not in html
    assert "&lt;script&gt;alert(&#34;1&#34;)&amp;&#39;x&#39;" in html
    assert "电源检修\n第二行 &lt;b&gt;加粗&lt;/b&gt;\n末行 &amp; &#34;引号&#34; \\x1b[31m" in html  # ESC made visible
    assert "王&lt;i&gt;审批&lt;/i&gt;&#34;&#39;" in html
    assert "\r" not in html and "\x1b" not in html


def test_xlsx_has_contract_and_device_sheets(out, inputs):
    """Test that the workbook opens with openpyxl, one sheet per contract with numbers, and the device sheet."""
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.load_workbook(out / f"report-{MONTH}.xlsx")
    assert wb.sheetnames[:3] == ["iot 考核与付款", "cam 考核与付款", "设备明细"]
    ws = wb["iot 考核与付款"]
    header = [c.value for c in ws[4]]
    rows = {r[0]: dict(zip(header, r)) for r in ws.iter_rows(min_row=5, values_only=True) if r[0]}
    cs = rows["changshou"]
    assert (cs["街镇"], cs["物联感知终端上线率"], cs["物联感知终端上线率 结论"]) == ("长寿路街道", 0.75, "未达标")
    assert (cs["月租赁费（元）"], cs["扣减金额（元）"], cs["应付金额（元）"]) == (238958.33, 40622.92, 198335.41)
    assert ws.cell(row=5, column=header.index("扣减金额（元）") + 1).number_format == "#,##0.00"
    assert rows["district"]["应付金额（元）"] == 2348960.38
    devices = list(wb["设备明细"].iter_rows(values_only=True))
    assert devices[0][:4] == ("设备编号", "合同", "类型代码", "类型")
    ids = {r[0]: r for r in devices[1:]}
    assert len(ids) == 9 and "iot-old" not in ids  # retired before the month
    assert ids[SCRIPT_ID][11] == round((30 * DAY - 13 * 3600) / 3600, 2) and ids[SCRIPT_ID][12] == 1
    ex = list(wb["豁免"].iter_rows(values_only=True))
    assert ex[1][7] == "电源检修\n第二行 <b>加粗</b>\n末行 & \"引号\" \\x1b[31m" and ex[1][8] == EVIL_APPROVER


def test_csv_is_the_replay_csv_plus_money(out, inputs):
    """Test that the CSV's first columns are the replay's rows byte for byte, then fee, deduction and
    payable, then the contract's coverage and whether the row is provisional."""
    lines = (out / f"report-{MONTH}.csv").read_text(encoding="utf-8").splitlines()
    replay = inputs.results.csv_text().splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS) + ",fee,deduction,payable,coverage,provisional"
    assert len(lines) == len(replay)
    for mine, theirs in zip(lines[1:], replay[1:]):
        assert mine.rsplit(",", 5)[0] == theirs
        # 119 sample minutes missed on day 10 (13:01-14:59): the month is over but not wholly observed
        assert mine.rsplit(",", 2)[1:] == ["0.997245370", "true"]
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    cs = [r for r in rows if (r["contract"], r["street"]) == ("iot", "changshou")]
    assert {(r["fee"], r["deduction"], r["payable"]) for r in cs} == {("238958.33", "40622.92", "198335.41")}
    district = next(r for r in rows if (r["contract"], r["street"], r["kpi"]) == ("cam", "district", "online"))
    assert (district["fee"], district["deduction"], district["payable"]) == ("3582997.60", "107489.93", "3475507.67")


def test_a_month_with_a_gap_is_provisional_but_runs_to_its_end(out, inputs):
    """Test that the finished month with a 2-hour monitoring gap is provisional for its coverage,
    while its durations still run to the month's end (the monitor saw the month's last sample)."""
    status = build_view(inputs).status
    assert (status.month_over, status.provisional, status.cut_short) == (True, True, False)
    html = (out / f"report-{MONTH}.html").read_text(encoding="utf-8")
    assert "<h1>月度租赁服务考核验收报告（临时报告）</h1>" in html
    headline = "".join(html.split("<h2>")[:2])  # the title block and the summary
    assert "本月未被完整监测 (month not wholly observed)" in headline and "截至" not in headline
    assert '<td class="num">99.725%</td>' in html  # coverage beside the headline amounts
    assert "<th>月末仍离线</th>" in html and "月末<br>仍离线" in html


def test_one_contract_only(inputs, tmp_path):
    """Test that --contract writes report-YYYY-MM-CODE files holding that contract only."""
    written = render(inputs, tmp_path, ["csv", "html"], contract="cam")
    assert [p.name for p in written] == [f"report-{MONTH}-cam.csv", f"report-{MONTH}-cam.html"]
    assert {r.split(",")[0] for r in written[0].read_text().splitlines()[1:]} == {"cam"}
    html = written[1].read_text(encoding="utf-8")
    assert "普陀区智能安防建设项目" in html and "物联感知设施租赁服务项目" not in html
    assert "电源检修" not in html  # the iot sensor's exemption is not the camera contract's


def test_cli_report(inputs, tmp_path, monkeypatch, capsys):
    """Test `ptmon report`: the builder gets the ledger, files are written, progress goes to stderr."""
    seen = {}

    def build_inputs(**kwargs):  # type: ignore[no-untyped-def]
        seen.update(kwargs)
        return inputs

    monkeypatch.setitem(sys.modules, "ptmon.report.build", types.SimpleNamespace(build_inputs=build_inputs))
    registry = tmp_path / "registry.csv"
    registry.write_text("device_id,contract,type,street,scenario,community,gateway,accepted_on,retired_on\n"
                        "x1,iot,smoke,taopu,s,c,g,2026-01-01,\n")
    ledger = tmp_path / "ledger.sqlite"
    ledger.write_bytes(b"")
    code = main(["report", "--month", MONTH, "--registry", str(registry), "--ledger", str(ledger), "--out",
                 str(tmp_path / "out"), "--format", "csv", "--contract", "iot"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert seen["month"] == MONTH and seen["ledger_path"] == ledger and seen["archive_dirs"] is None
    assert captured.out.strip() == str(tmp_path / "out" / f"report-{MONTH}-iot.csv")
    assert "ptmon report: wrote" in captured.err


@pytest.mark.parametrize(("missing", "hint"), [("fonts", "apt-get install fonts-noto-cjk"),
                                               ("weasyprint", "pip install 'ptmon[pdf]'")])
def test_without_what_the_pdf_needs_the_other_formats_are_written(inputs, tmp_path, monkeypatch, capsys, missing, hint):
    """Test that without the CJK fonts (fontconfig knows no Chinese font) or without the [pdf] extra, `ptmon
    report` still writes HTML, XLSX and CSV, and the PDF alone fails with one line naming what to install."""
    if missing == "fonts":
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "fc-list").write_text("#!/bin/sh\nexit 0\n")  # a fontconfig with no Chinese font
        (bin_dir / "fc-list").chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    else:
        monkeypatch.setitem(sys.modules, "weasyprint", None)  # as if the extra were not installed
    monkeypatch.setitem(sys.modules, "ptmon.report.build", types.SimpleNamespace(build_inputs=lambda **kw: inputs))
    registry = tmp_path / "registry.csv"
    registry.write_text("device_id,contract,type,street,scenario,community,gateway,accepted_on,retired_on\n"
                        "x1,iot,smoke,taopu,s,c,g,2026-01-01,\n")
    ledger = tmp_path / "ledger.sqlite"
    ledger.write_bytes(b"")
    code = main(["report", "--month", MONTH, "--registry", str(registry), "--ledger", str(ledger), "--out",
                 str(tmp_path / "out")])
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("ptmon report:")]
    assert code == 2
    assert len(errors) == 1 and errors[0].startswith("ptmon: error:") and hint in errors[0], errors
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"report-{MONTH}.{f}" for f in ("csv", "html", "xlsx")]


def test_a_format_that_cannot_be_written_replaces_none_of_the_files(inputs, tmp_path, monkeypatch):
    """Test that when one format fails to write (the disk full while the XLSX is written), the files of an
    earlier run stay as they were, every one: no new CSV beside an old XLSX, and no temporary file left."""
    out = tmp_path / "out"
    render(inputs, out, ("csv", "xlsx", "html"))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / f"report-{MONTH}.csv").write_bytes(b"last run's csv")
    before[f"report-{MONTH}.csv"] = b"last run's csv"

    def full_disk(view, path):  # type: ignore[no-untyped-def]
        path.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("ptmon.report.xlsx.render_xlsx", full_disk)
    refused = r"cannot write .*report-2026-\d\d\.xlsx: No space left on device; no report file was replaced"
    with pytest.raises(PtmonError, match=refused):
        render(inputs, out, ("csv", "xlsx", "html"))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_killed_reports_temporary_files_go_and_a_directory_in_the_way_is_refused_first(inputs, tmp_path,
                                                                                         monkeypatch, capsys):
    """Test that the temporary files a killed `ptmon report` left beside the report (its process gone) are
    removed by the next report while a running one's stay, and that a directory where a report file goes is
    refused before the month is read."""
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = out / f".report-{MONTH}.csv.{int(dead.stdout)}.tmp"
    running = out / f".report-{MONTH}.csv.1.tmp"  # pid 1 (init) runs as long as the machine does
    left.write_text("half")
    running.write_text("pid 1 is running")
    render(inputs, out, ("csv",))
    assert sorted(p.name for p in out.iterdir()) == [f".report-{MONTH}.csv.1.tmp", f"report-{MONTH}.csv"]

    (out / f"report-{MONTH}.pdf").mkdir()
    monkeypatch.setitem(sys.modules, "ptmon.report.build", types.SimpleNamespace(
        build_inputs=lambda **kw: pytest.fail("the month was read before the refusal")))
    registry = tmp_path / "registry.csv"
    registry.write_text("device_id,contract,type,street,scenario,community,gateway,accepted_on,retired_on\n"
                        "x1,iot,smoke,taopu,s,c,g,2026-01-01,\n")
    ledger = tmp_path / "ledger.sqlite"
    ledger.write_bytes(b"")
    code = main(["report", "--month", MONTH, "--registry", str(registry), "--ledger", str(ledger), "--out", str(out)])
    assert code == 2
    assert f"{out / f'report-{MONTH}.pdf'} is a directory where a report file goes" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--month", "2026-13"], "month must be YYYY-MM, got '2026-13'"),
        (["--month", "2026-11", "--format", "pdf,docx"], "--format takes a comma-separated list of pdf, html, xlsx, csv"),
        (["--month", "2026-11", "--ledger", "/nonexistent/ledger.sqlite"], "ledger not found: /nonexistent/ledger.sqlite"),
        (["--month", "2026-11", "--from-archive", "/nonexistent/archive"],
         "archive directory or file not found: /nonexistent/archive"),
        (["--month", "2026-11", "--contract", "lora"], "--contract 'lora' is not a contract of the rules (known: iot, cam)"),
    ],
    ids=["bad-month", "bad-format", "no-ledger", "no-archive", "bad-contract"],
)
def test_cli_report_errors(tmp_path, capsys, args, message):
    """Test that a bad month, format, contract or a missing ledger stop with status 2 and a clear message."""
    registry = tmp_path / "registry.csv"
    registry.write_text("device_id,contract,type,street,scenario,community,gateway,accepted_on,retired_on\n"
                        "x1,iot,smoke,taopu,s,c,g,2026-01-01,\n")
    assert main(["report", *args, "--registry", str(registry)]) == 2
    assert message in capsys.readouterr().err

