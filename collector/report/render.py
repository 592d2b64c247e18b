"""``render``: the report's files from its inputs, in any of PDF, HTML, XLSX and CSV.

``report-YYYY-MM[-contract].{pdf,html,xlsx,csv}`` in ``out_dir``; each is written to a
temporary name, and the formats are renamed together once all are rendered: a file with the final
name is always complete, and a format that fails (a full disk) replaces none of the files, so the
set in the directory is from one run. The PDF alone may fail after the others are written, when
what it needs is not installed.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ..durable import is_special, replacing_file, temporary_beside
from ..errors import PtmonError, UsageError, reason
from .model import ReportInputs
from .view import ReportView, build_view

FORMATS = ("pdf", "html", "xlsx", "csv")


def parse_formats(text: str) -> tuple[str, ...]:
    """``pdf,html`` → ('pdf', 'html'), in the order given, checked."""
    chosen = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    bad = [f for f in chosen if f not in FORMATS]
    if bad or not chosen:
        raise UsageError(f"--format takes a comma-separated list of {', '.join(FORMATS)}: {text!r}")
    return chosen


def report_stem(month: str, contract: str | None) -> str:
    return f"report-{month}" + (f"-{contract}" if contract else "")


def render(inputs: ReportInputs, out_dir: Path, formats: Iterable[str] = FORMATS, *, contract: str | None = None,
           progress: Callable[[str], None] | None = None, stem: str | None = None) -> list[Path]:
    """Write the report of ``contract`` (default: every contract) in ``formats``; the paths written.
    ``stem`` names the files (default ``report-YYYY-MM[-contract]``)."""
    say = progress or (lambda _: None)
    chosen: Sequence[str] = tuple(formats)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PtmonError(f"cannot create the directory {out_dir}: {reason(exc)}") from exc
    began = time.monotonic()
    view = build_view(inputs, contract)
    say(f"summaries built ({time.monotonic() - began:.1f} s)")
    base = out_dir / (stem or report_stem(inputs.month, contract))
    html_text = ""
    rendered: list[tuple[Path, Path]] = []  # (temporary, target): renamed together, a set from one run
    pdf_failure: PtmonError | None = None
    seconds: dict[Path, float] = {}
    try:
        # The PDF last: it alone needs more than Python (the [pdf] extra, Pango, the CJK fonts), and
        # when that is missing the other formats are written all the same.
        for fmt in sorted(chosen, key=lambda f: f == "pdf"):
            target = base.with_name(f"{base.name}.{fmt}")
            step = time.monotonic()
            if fmt in ("html", "pdf") and not html_text:
                from .html import render_html

                html_text = render_html(view)  # one document for both: the PDF is this HTML laid out
            _remove_stale_temporaries(target)
            tmp = temporary_beside(target, durable=False)
            rendered.append((tmp, target))
            try:
                _render_one(fmt, view, html_text, tmp)
            except OSError as exc:
                raise PtmonError(f"cannot write {target}: {reason(exc)}; no report file was replaced") from exc
            except PtmonError as exc:
                if fmt != "pdf" or len(rendered) == 1:
                    raise
                rendered.pop()
                tmp.unlink(missing_ok=True)
                pdf_failure = exc
            seconds[target] = time.monotonic() - step
        for n, (tmp, target) in enumerate(rendered):
            _rename(tmp, target, [t for _, t in rendered[:n]])
            say(f"wrote {target} ({seconds[target]:.1f} s)")
    finally:
        for tmp, _ in rendered:
            tmp.unlink(missing_ok=True)
    written = [target for _, target in rendered]
    if pdf_failure is not None:
        raise PtmonError(f"{pdf_failure} (written: {', '.join(p.name for p in written)})") from pdf_failure
    return written


def _render_one(fmt: str, view: ReportView, html_text: str, path: Path) -> None:
    if fmt == "html":
        path.write_text(html_text, encoding="utf-8")
    elif fmt == "pdf":
        from .pdf import render_pdf

        render_pdf(html_text, path)
    elif fmt == "xlsx":
        from .xlsx import render_xlsx

        render_xlsx(view, path)
    elif fmt == "csv":
        from .csv_out import render_csv

        render_csv(view, path)
    else:
        raise UsageError(f"unknown report format {fmt!r} (known: {', '.join(FORMATS)})")


def _rename(tmp: Path, target: Path, written: list[Path]) -> None:
    try:
        if is_special(target) or target.is_symlink():  # written in place, or the link's target replaced
            with tmp.open("rb") as rendered, replacing_file(target, "wb", durable=False) as out:
                shutil.copyfileobj(rendered, out)
        else:
            os.replace(tmp, target)
    except OSError as exc:
        done = (f"; written before it: {', '.join(p.name for p in written)}, the others left as they were" if written
                else "; no report file was replaced")
        raise PtmonError(f"cannot write {target}: {reason(exc)}{done}") from exc


def _remove_stale_temporaries(target: Path) -> None:
    """The temporary files of ``target`` that a killed ``ptmon report`` left (``.NAME.PID.tmp``, its
    process gone); those of a report still running are left alone."""
    for tmp in target.parent.glob(f".{target.name}.*.tmp"):
        pid = tmp.name[len(target.name) + 2 : -len(".tmp")]
        if pid.isdigit() and not _running(int(pid)):
            tmp.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: running all the same
    return True
