"""Reports that must not mislead: a month not yet over, one observed in part, durations capped at
the last observed instant, and the data quality section.

The inputs come from ledgers rebuilt from synthetic archives (``write_archive`` →
``rebuild_ledger`` → ``build_inputs``), as the collector's own ledger would hold them:

* *in progress*: the monitor ran on 2026-11-18 from 11:50 to 14:05 (Shanghai) and the report is
  made at 14:20, with the month not over; changzheng's cameras fell silent at 13:50, so they are
  still offline at 14:05, some 12 minutes after their 3-minute timeout, and nothing is known
  after that;
* *complete*: the whole of November observed, the report made on 2 December: a final report.
"""

from __future__ import annotations

import csv
import html as html_lib
import io
import re
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from ptmon.ledger.rebuild import rebuild_ledger
from ptmon.ledger.store import Ledger
from ptmon.registry import Registry
from ptmon.report import fmt
from ptmon.report.build import build_inputs
from ptmon.report.csv_out import ratio_text
from ptmon.report.model import ReportInputs
from ptmon.report.quality import ENGINE_KINDS, REJECT_KINDS
from ptmon.report.render import render
from ptmon.report.status import observed_until
from ptmon.report.view import ReportView, build_view
from ptmon.results import CSV_COLUMNS
from ptmon.simulators.synthetic import Outage, Scenario, write_archive
from ptmon.timebase import month_bounds

from .conftest import T0, hb, make_registry, raw, run, tick, up

US = 1_000_000
MINUTE = 60 * US
MONTH = "2026-11"
START, END = month_bounds(MONTH)
STOP = (T0 + 17 * 86_400 + 14 * 3600 + 5 * 60) * US  # 2026-11-18 14:05, when the collector stopped
FROM = STOP - 135 * MINUTE  # 11:50
NOW = STOP + 15 * MINUTE  # the report is made at 14:20
SILENT_FROM = STOP - 15 * MINUTE  # changzheng's cameras are silent from 13:50
AS_OF = "2026-11-18 14:05"
STREETS = ("changzheng", "taopu")


def _registry(rules, tmp_path: Path) -> Registry:  # type: ignore[no-untyped-def]
    rows = [f"s-{street}-{t}-{n},iot,{t},{street}" for street in STREETS for t in ("elevator", "noise") for n in range(3)]
    rows += [f"c-{street}-{t},cam,{t},{street}" for street in STREETS for t in ("face_cam", "plate_cam")]
    registry = make_registry(rules, *rows)
    path = tmp_path / "registry.csv"
    path.write_text("")  # the report fingerprints the registry file; its content is not re-read
    return type(registry)(**{**vars(registry), "path": str(path)})


def _inputs_from_ledger(registry: Registry, tmp_path: Path, start: int, end: int, scenario: Scenario,
                        now: int) -> tuple[ReportInputs, Path]:
    archive = tmp_path / "archive.jsonl.gz"
    write_archive(archive, registry, registry.rules, start, end, scenario)
    ledger_path = tmp_path / "ledger.sqlite"
    with Ledger(ledger_path) as ledger:
        rebuild_ledger([str(archive)], registry, ledger)
    inputs = build_inputs(month=MONTH, registry=registry, rules=registry.rules, ledger_path=ledger_path,
                          archive_dirs=None, now=now)
    return inputs, archive


@pytest.fixture(scope="module")
def in_progress(rules, tmp_path_factory) -> tuple[ReportInputs, Path]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("in-progress")
    registry = _registry(rules, tmp)
    scenario = Scenario(seed=5, lead_in=True, outages=(Outage(street="changzheng", contract="cam",
                                                               from_us=SILENT_FROM, to_us=STOP),))
    inputs, _ = _inputs_from_ledger(registry, tmp, FROM + 10 * MINUTE, STOP, scenario, NOW)
    out = tmp / "out"
    render(inputs, out)
    return inputs, out


@pytest.fixture(scope="module")
def complete(rules, tmp_path_factory) -> tuple[ReportInputs, Path]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("complete")
    registry = _registry(rules, tmp)
    inputs, _ = _inputs_from_ledger(registry, tmp, START, END, Scenario(seed=6, lead_in=True), END + 86_400 * US)
    out = tmp / "out"
    render(inputs, out, ["html", "xlsx", "csv"])
    return inputs, out


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _pdf_text(path: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True,
                          timeout=120).stdout


def _coverage(inputs: ReportInputs, contract: str) -> Fraction:
    cov = inputs.results.coverage[contract]
    return Fraction(cov["observed_seconds"], cov["period_seconds"])


def test_in_progress_status_comes_from_the_inputs(in_progress):
    """Test that a report made before the month's end, from a ledger observed until 14:05, is
    provisional, not over, and runs to the collector's last observed instant."""
    inputs, _ = in_progress
    assert inputs.made_at == NOW and inputs.observed_until == STOP
    view = build_view(inputs)
    status = view.status
    assert (status.provisional, status.month_over, status.cut_short) == (True, False, True)
    assert status.observed_until == STOP and status.as_of() == AS_OF
    assert all(c.provisional for c in view.contracts)
    assert 0 < _coverage(inputs, "cam") < Fraction(1, 100)  # about two hours of thirty days


def test_in_progress_html_title_headline_coverage_and_amounts(in_progress):
    """Test that the HTML says 临时报告 in its title and headline, gives the data's cut-off and the
    coverage beside the headline, each KPI table and each money table, and marks every deduction
    and payable 暂定."""
    inputs, out = in_progress
    page = _text(out / f"report-{MONTH}.html")
    view = build_view(inputs)
    assert re.search(r"<title>[^<]*临时报告[^<]*</title>", page)
    assert "<h1>月度租赁服务考核验收报告（临时报告）</h1>" in page
    assert f"临时报告（Provisional report） · 截至 {AS_OF}（上海时间）" in page
    assert "本月尚未结束 (month not yet over)" in page
    for c in view.contracts:
        line = html_lib.escape(c.coverage_line(), quote=False)
        assert page.count(line) >= 3, line  # headline, KPI table, money table
        share = fmt.fraction_percent(_coverage(inputs, c.contract.code), 3)
        assert f'<td class="num">{share}</td>' in page  # the headline table's coverage column
        for s in [*c.streets, c.district]:
            for amount in (s.payment.deduction, s.payment.payable):
                assert f'{fmt.money(amount)} <span class="prov">暂定</span>' in page, (c.contract.code, s.code)
    total = view.money_total()
    assert f'{fmt.money(total.payable)} <span class="prov">暂定</span>' in page
    assert page.count('<caption class="coverage">') == 2 * len(view.contracts)


def test_in_progress_pdf_text(in_progress):
    """Test that the PDF's text carries the provisional title, the cut-off, the coverage and the 暂定 marks."""
    inputs, out = in_progress
    text = _pdf_text(out / f"report-{MONTH}.pdf")
    compact = re.sub(r"\s+", "", text)
    assert "月度租赁服务考核验收报告（临时报告）" in compact
    assert f"截至{AS_OF.replace(' ', '')}（上海时间）" in compact
    assert "本月尚未结束(monthnotyetover)" in compact
    view = build_view(inputs)
    for c in view.contracts:
        assert re.sub(r"\s+", "", c.coverage_line()) in compact
        for s in c.streets:
            assert f"{fmt.money(s.payment.deduction)}暂定{fmt.money(s.payment.payable)}暂定" in compact, s.code
    assert f"截至{AS_OF.replace(' ', '')}仍离线" in compact


def test_in_progress_xlsx(in_progress):
    """Test that the workbook's title, contract sheets, worst-device sheet and about sheet say provisional,
    with the coverage and 暂定 on every line that has an amount."""
    openpyxl = pytest.importorskip("openpyxl")
    inputs, out = in_progress
    wb = openpyxl.load_workbook(out / f"report-{MONTH}.xlsx")
    assert "临时报告" in wb.properties.title
    for code in ("iot", "cam"):
        ws = wb[f"{code} 考核与付款"]
        assert "临时报告" in ws["A1"].value and "暂定" in ws["A1"].value
        header = [c.value for c in ws[4]]
        assert header[-2:] == ["监测覆盖率", "金额状态"]
        rows = [dict(zip(header, r)) for r in ws.iter_rows(min_row=5, values_only=True) if r[1]]
        assert len(rows) == 11  # ten streets and the district
        for row in rows:
            assert row["金额状态"] == "暂定 (provisional)" and row["扣减金额（元）"] is not None
            assert row["监测覆盖率"] == pytest.approx(float(_coverage(inputs, code)))
    worst = list(wb["离线最长设备"].iter_rows(values_only=True))
    assert worst[0][-1] == f"截至 {AS_OF} 状态"
    about = {r[0]: r[1] for r in wb["说明"].iter_rows(values_only=True) if r and r[0]}
    assert about["报告状态"].startswith("临时报告 (provisional report)：本月尚未结束")
    assert about["数据截至"] == f"{AS_OF}（上海时间）"


def test_in_progress_csv_columns(in_progress):
    """Test that the CSV keeps the replay columns and money, then adds coverage and provisional=true."""
    inputs, out = in_progress
    lines = _text(out / f"report-{MONTH}.csv").splitlines()
    assert lines[0] == ",".join((*CSV_COLUMNS, "fee", "deduction", "payable", "coverage", "provisional"))
    replay = inputs.results.csv_text().splitlines()
    assert [line.rsplit(",", 5)[0] for line in lines[1:]] == replay[1:]  # the replay's columns, byte for byte
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    assert len(rows) == len(replay) - 1
    for row in rows:
        assert row["provisional"] == "true"
        assert row["coverage"] == ratio_text(_coverage(inputs, row["contract"]))
        assert row["deduction"] and row["payable"]


def test_open_episodes_end_at_the_last_observed_instant(in_progress):
    """Test that cameras silent since 13:50 are offline about 12 minutes, still offline as of 14:05,
    and not counted up to the month's end (nor overdue for the 24-hour response time)."""
    inputs, out = in_progress
    open_ones = [e for e in inputs.episodes if e.end is None]
    assert {e.device for e in open_ones} == {"c-changzheng-face_cam", "c-changzheng-plate_cam"}
    view = build_view(inputs, "cam")
    worst = view.contracts[0].worst["changzheng"]
    assert {w.device for w in worst} == {e.device for e in open_ones}
    for w in worst:
        mine = [e for e in inputs.episodes if e.device == w.device]  # also the minutes before its first heartbeat
        still = next(e for e in mine if e.end is None)
        assert w.open_at_end and w.episodes == len(mine)
        assert w.longest_seconds == (STOP - still.start) / US and 10 * 60 < w.longest_seconds < 13 * 60
        assert w.offline_seconds == sum(((e.end or STOP) - e.start) / US for e in mine) < 20 * 60
    record = next(s for s in view.contracts[0].streets if s.code == "changzheng").maintenance
    # due: the two restored at the start only; 12 minutes open is not yet overdue for a 24-hour response
    assert (record.open_at_end, record.restored, record.due) == (2, 2, 2)
    table = view.device_table()
    assert max(table.offline_seconds) < 20 * 60  # the device sheet too
    page = _text(out / f"report-{MONTH}.html")
    assert f"<th>截至<br>{AS_OF}<br>仍离线</th>" in page  # the maintenance table
    assert "<th>截至<br>11-18 14:05<br>仍离线</th></tr></thead>" in page  # the worst-devices table (narrow column)
    assert "12 分" in page and " 天 " not in page.split("本月离线时长最长的设备")[1].split("</table>")[0]


def test_archive_and_ledger_agree_on_the_last_observed_instant(in_progress, tmp_path):
    """Test that `--from-archive` finds the same last observed instant and status as the ledger."""
    inputs, _ = in_progress
    archive = Path(inputs.files[-1].path).parent / "archive.jsonl.gz"
    again = build_inputs(month=MONTH, registry=inputs.registry, rules=inputs.rules, ledger_path=None,
                         archive_dirs=[archive], now=NOW)
    assert again.observed_until == inputs.observed_until == STOP
    assert build_view(again).status == build_view(inputs).status


def test_a_complete_month_has_no_provisional_marks(complete):
    """Test that a month over and observed throughout is final: no 临时 title, no 暂定 mark, no
    coverage captions, provisional=false in the CSV and no status columns in the workbook."""
    inputs, out = complete
    assert _coverage(inputs, "iot") == _coverage(inputs, "cam") == 1
    view = build_view(inputs)
    assert not view.status.provisional and not view.status.cut_short
    assert view.status.observed_until == END
    page = _text(out / f"report-{MONTH}.html")
    before_method = page.split("计算方法与数据来源")[0]  # the method notes define 临时报告 for every report
    for mark in ("临时报告", "暂定", "provisional", 'class="prov"', "截至"):
        assert mark not in before_method, mark
    assert "<h1>月度租赁服务考核验收报告</h1>" in page and "月末仍离线" in page
    rows = list(csv.DictReader(io.StringIO(_text(out / f"report-{MONTH}.csv"))))
    assert {(r["coverage"], r["provisional"]) for r in rows} == {("1.000000000", "false")}
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.load_workbook(out / f"report-{MONTH}.xlsx")
    assert "临时" not in wb.properties.title
    ws = wb["iot 考核与付款"]
    assert "临时" not in ws["A1"].value and "金额状态" not in [c.value for c in ws[4]]
    assert "报告状态" not in [r[0] for r in wb["说明"].iter_rows(values_only=True)]


def test_a_month_over_but_not_wholly_observed_is_provisional(in_progress):
    """Test that the same ledger read after the month's end is still provisional (coverage below
    100 %), now for that reason, and durations still stop at the last observed instant."""
    inputs, _ = in_progress
    later = ReportInputs(**{**vars(inputs), "made_at": END + 86_400 * US})
    status = build_view(later).status
    assert status.month_over and status.provisional and status.cut_short
    assert status.reasons()[0].startswith("本月未被完整监测 (month not wholly observed)")
    assert f"数据截至 {AS_OF}" in status.reasons()[0]


@pytest.mark.parametrize(
    ("gaps", "spans_end", "expected"),
    [
        ([], None, END),
        ([(START + 60 * MINUTE, START + 120 * MINUTE)], None, END),  # a gap inside the month only
        ([(STOP + MINUTE, END)], None, STOP + MINUTE),  # from the gaps: the first missed sample
        ([(STOP + MINUTE, END)], STOP + 37 * US, STOP + 37 * US),  # from the spans: to the second
        ([(START, END)], None, START),  # nothing observed
    ],
    ids=["observed-to-the-end", "gap-inside", "trailing-gap", "trailing-gap-spans", "nothing-observed"],
)
def test_observed_until(in_progress, gaps, spans_end, expected):
    """Test that the last observed instant is the month's end unless a gap runs to it."""
    inputs, _ = in_progress
    results = type(inputs.results)(**{**vars(inputs.results), "gaps": gaps})
    assert observed_until(ReportInputs(**{**vars(inputs), "results": results, "observed_until": spans_end})) == expected


def _quality_view(rules) -> ReportView:  # type: ignore[no-untyped-def]
    """A replay with a duplicate, a reordered and a late heartbeat, malformed and unknown-device
    messages; plus kinds the collector is growing (retained, lost) and one this report does not know."""
    registry = make_registry(rules, "cam-1,cam,face_cam,taopu")
    records = [up(T0), hb(T0 + 10, "cam-1", seq=1), hb(T0 + 70, "cam-1", seq=3), hb(T0 + 75, "cam-1", seq=3),
               hb(T0 + 80, "cam-1", seq=2), hb(T0 + 130, "cam-1", seq=4), hb(T0 + 120, "cam-1", seq=5),
               raw(T0 + 140, "putuo/cam/taopu/cam-1/hb", "{not json"), hb(T0 + 150, "ghost-9", seq=1),
               tick(T0 + 600)]
    results = run(registry, records, T0, T0 + 30 * 86_400)
    assert (results.engine_stats["duplicate"], results.engine_stats["stale"], results.engine_stats["late"]) == (1, 1, 1)
    results.engine_stats |= {"retained": 4, "lost": 7, "brand_new_kind": 5}
    inputs = ReportInputs(month=MONTH, start=START, end=END, source="archive", rules=rules, registry=registry,
                          results=results)
    return build_view(inputs)


def test_data_quality_lists_every_kind_with_its_explanation(rules, tmp_path):
    """Test that the data quality section lists rejects, duplicates, reordered, late, retained and
    lost messages with their counts and explanations, an unknown kind by its code, and not the
    counters of ordinary traffic."""
    view = _quality_view(rules)
    render(view.inputs, tmp_path, ["html", "xlsx"])
    page = _text(tmp_path / f"report-{MONTH}.html")
    section = page.split("<h3>数据质量</h3>")[1].split("</section>")[0]
    expected = {"bad_json": (1, REJECT_KINDS["bad_json"]), "unknown_device": (1, REJECT_KINDS["unknown_device"]),
                "duplicate": (1, ENGINE_KINDS["duplicate"]), "stale": (1, ENGINE_KINDS["stale"]),
                "late": (1, ENGINE_KINDS["late"]), "outside_lease": (0, ENGINE_KINDS["outside_lease"]),
                "retained": (4, ENGINE_KINDS["retained"]), "lost": (7, ENGINE_KINDS["lost"]),
                "recovered": (1, ENGINE_KINDS["recovered"]),
                "brand_new_kind": (5, "（本报告未收录此类别的说明）")}
    rows = dict(re.findall(r'<td class="id">([^<]+)</td><td class="num">[\d,]+</td><td>([^<]+)</td>', section))
    counts = dict(re.findall(r'<td class="id">([^<]+)</td><td class="num">([\d,]+)</td>', section))
    assert set(rows) == set(expected)
    for kind, (n, explanation) in expected.items():
        assert (int(counts[kind]), rows[kind]) == (n, html_lib.escape(explanation, quote=False)), kind
    assert "heartbeats" not in section and "samples" not in section
    assert "ghost-9" in section  # the unknown device's topic is still listed
    openpyxl = pytest.importorskip("openpyxl")
    about = list(openpyxl.load_workbook(tmp_path / f"report-{MONTH}.xlsx")["说明"].iter_rows(values_only=True))
    start = next(i for i, r in enumerate(about) if r[0] == "数据质量（处理 类别）")
    listed = {r[0].split(" ", 1)[1]: r[1] for r in about[start + 1:] if r and r[0]}
    assert listed == {kind: n for kind, (n, _) in expected.items()}


def test_no_rejects_says_so(complete):
    """Test that a month without rejects says 无拒收报文 and still shows the duplicate, reordered and late lines at 0."""
    _, out = complete
    section = _text(out / f"report-{MONTH}.html").split("<h3>数据质量</h3>")[1]
    assert "<td>拒收</td><td class=\"id\">—</td><td class=\"num\">0</td><td>无拒收报文</td>" in section
    for kind in ("duplicate", "stale", "late"):
        assert f'<td class="id">{kind}</td><td class="num">0</td>' in section
