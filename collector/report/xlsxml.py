"""A minimal XLSX (Office Open XML) writer: typed cells, a few number formats, frozen header.

Why not openpyxl or XlsxWriter: the device-level sheet has 114k rows × 13 columns, which
takes them 8–12 s on this machine; writing the sheet XML directly takes about 1.5 s, and the
report has a 30 s budget. The output is plain SpreadsheetML (inline strings, one styles part)
that Excel, LibreOffice and openpyxl read; tests read it back with openpyxl.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable, Sequence
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from xml.sax.saxutils import escape

Cell = str | int | float | Decimal | Fraction | bool | None

# Style name -> index into cellXfs below.
STYLES = {"default": 0, "header": 1, "money": 2, "percent": 3, "int": 4, "hours": 5, "title": 6, "text": 7,
          "wrap": 8, "total": 9, "total_money": 10, "total_percent": 11, "total_int": 12, "note": 13,
          "percent4": 14, "total_percent4": 15, "total_hours": 16}

_STYLES_XML = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">
<numFmts count="5"><numFmt numFmtId="164" formatCode="#,##0.00"/><numFmt numFmtId="165" formatCode="0.000%"/>\
<numFmt numFmtId="166" formatCode="#,##0"/><numFmt numFmtId="167" formatCode="0.00"/><numFmt numFmtId="168" formatCode="0.0000%"/></numFmts>
<fonts count="4"><font><sz val="10"/><name val="等线"/><family val="2"/><charset val="134"/></font>\
<font><b/><sz val="10"/><name val="等线"/><family val="2"/><charset val="134"/></font>\
<font><b/><sz val="14"/><name val="等线"/><family val="2"/><charset val="134"/></font>\
<font><sz val="9"/><color rgb="FF555555"/><name val="等线"/><family val="2"/><charset val="134"/></font></fonts>
<fills count="4"><fill><patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/></fill>\
<fill><patternFill patternType="solid"><fgColor rgb="FFE9EEF5"/><bgColor indexed="64"/></patternFill></fill>\
<fill><patternFill patternType="solid"><fgColor rgb="FFF4F4F4"/><bgColor indexed="64"/></patternFill></fill></fills>
<borders count="2"><border><left/><right/><top/><bottom/><diagonal/></border>\
<border><left style="thin"><color rgb="FF999999"/></left><right style="thin"><color rgb="FF999999"/></right>\
<top style="thin"><color rgb="FF999999"/></top><bottom style="thin"><color rgb="FF999999"/></bottom><diagonal/></border></borders>
<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>
<cellXfs count="17">\
<xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>\
<xf numFmtId="0" fontId="1" fillId="2" borderId="1" xfId="0" applyFont="1" applyFill="1" applyBorder="1" applyAlignment="1">\
<alignment horizontal="center" vertical="center" wrapText="1"/></xf>\
<xf numFmtId="164" fontId="0" fillId="0" borderId="1" xfId="0" applyNumberFormat="1" applyBorder="1"/>\
<xf numFmtId="165" fontId="0" fillId="0" borderId="1" xfId="0" applyNumberFormat="1" applyBorder="1"/>\
<xf numFmtId="166" fontId="0" fillId="0" borderId="1" xfId="0" applyNumberFormat="1" applyBorder="1"/>\
<xf numFmtId="167" fontId="0" fillId="0" borderId="1" xfId="0" applyNumberFormat="1" applyBorder="1"/>\
<xf numFmtId="0" fontId="2" fillId="0" borderId="0" xfId="0" applyFont="1"/>\
<xf numFmtId="0" fontId="0" fillId="0" borderId="1" xfId="0" applyBorder="1"/>\
<xf numFmtId="0" fontId="0" fillId="0" borderId="1" xfId="0" applyBorder="1" applyAlignment="1"><alignment vertical="top" wrapText="1"/></xf>\
<xf numFmtId="0" fontId="1" fillId="3" borderId="1" xfId="0" applyFont="1" applyFill="1" applyBorder="1"/>\
<xf numFmtId="164" fontId="1" fillId="3" borderId="1" xfId="0" applyNumberFormat="1" applyFont="1" applyFill="1" applyBorder="1"/>\
<xf numFmtId="165" fontId="1" fillId="3" borderId="1" xfId="0" applyNumberFormat="1" applyFont="1" applyFill="1" applyBorder="1"/>\
<xf numFmtId="166" fontId="1" fillId="3" borderId="1" xfId="0" applyNumberFormat="1" applyFont="1" applyFill="1" applyBorder="1"/>\
<xf numFmtId="0" fontId="3" fillId="0" borderId="0" xfId="0" applyFont="1" applyAlignment="1"><alignment wrapText="0"/></xf>\
<xf numFmtId="168" fontId="0" fillId="0" borderId="1" xfId="0" applyNumberFormat="1" applyBorder="1"/>\
<xf numFmtId="168" fontId="1" fillId="3" borderId="1" xfId="0" applyNumberFormat="1" applyFont="1" applyFill="1" applyBorder="1"/>\
<xf numFmtId="167" fontId="1" fillId="3" borderId="1" xfId="0" applyNumberFormat="1" applyFont="1" applyFill="1" applyBorder="1"/>\
</cellXfs>
<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>
</styleSheet>"""

_NS = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" ' \
      'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_BAD_SHEET_CHARS = re.compile(r"[\[\]:*?/\\]")


def column_letter(index: int) -> str:
    """0 → A, 25 → Z, 26 → AA."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _text(value: str) -> str:
    value = _ILLEGAL.sub("\ufffd", value)
    space = ' xml:space="preserve"' if value != value.strip() or "\n" in value else ""
    return f"<is><t{space}>{escape(value)}</t></is>"


def _cell(ref: str, value: Cell, style: int) -> str:
    s = f' s="{style}"' if style else ""
    if value is None or value == "":
        return f'<c r="{ref}"{s}/>' if style else ""
    if isinstance(value, str):
        return f'<c r="{ref}"{s} t="inlineStr">{_text(value)}</c>'
    if isinstance(value, bool):
        return f'<c r="{ref}"{s} t="b"><v>{int(value)}</v></c>'
    if isinstance(value, Fraction):
        value = float(value)
    return f'<c r="{ref}"{s}><v>{value}</v></c>'


class Sheet:
    """One worksheet, written row by row."""

    def __init__(self, name: str, *, widths: Sequence[float] = (), freeze_rows: int = 0) -> None:
        self.name = _BAD_SHEET_CHARS.sub("_", name)[:31]
        self.widths = list(widths)
        self.freeze_rows = freeze_rows
        self.filter: tuple[int, int, int] | None = None  # (header row, first data row, last row), 1-based
        self._rows: list[str] = []
        self._letters = [column_letter(i) for i in range(64)]

    @property
    def next_row(self) -> int:
        return len(self._rows) + 1

    def append(self, values: Sequence[Cell] = (), styles: Sequence[str] | str = "default") -> None:
        """A row; ``styles`` per cell, or one style for every cell."""
        r = self.next_row
        names = [styles] * len(values) if isinstance(styles, str) else styles
        cells = "".join(_cell(f"{self._letters[i]}{r}", v, STYLES[names[i]]) for i, v in enumerate(values))
        self._rows.append(f'<row r="{r}">{cells}</row>')

    def append_columns(self, columns: Sequence[Sequence[Cell]], styles: Sequence[str]) -> None:
        """Many rows at once from equal-length columns (the fast path for big tables)."""
        letters = self._letters[: len(columns)]
        style_ids = [STYLES[s] for s in styles]
        first = self.next_row
        rows = self._rows
        for k, values in enumerate(zip(*columns)):
            r = first + k
            rows.append(f'<row r="{r}">'
                        + "".join([_cell(f"{letters[i]}{r}", v, style_ids[i]) for i, v in enumerate(values)])
                        + "</row>")

    def autofilter(self, header_row: int, columns: int) -> None:
        self.filter = (header_row, columns, self.next_row - 1)

    def xml(self) -> str:
        parts = [f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet {_NS}>']
        if self.freeze_rows:
            top = f"A{self.freeze_rows + 1}"
            parts.append(f'<sheetViews><sheetView workbookViewId="0"><pane ySplit="{self.freeze_rows}" topLeftCell="{top}" '
                         f'activePane="bottomLeft" state="frozen"/><selection pane="bottomLeft" activeCell="{top}" '
                         f'sqref="{top}"/></sheetView></sheetViews>')
        if self.widths:
            parts.append("<cols>" + "".join(f'<col min="{i + 1}" max="{i + 1}" width="{w}" customWidth="1"/>'
                                            for i, w in enumerate(self.widths)) + "</cols>")
        parts.append("<sheetData>")
        parts.extend(self._rows)
        parts.append("</sheetData>")
        if self.filter is not None:
            parts.append(f'<autoFilter ref="{self.filter_ref()}"/>')
        parts.append("</worksheet>")
        return "".join(parts)

    def filter_ref(self, absolute: bool = False) -> str:
        assert self.filter is not None
        header, columns, last = self.filter
        d = "$" if absolute else ""
        return f"{d}A{d}{header}:{d}{column_letter(columns - 1)}{d}{max(last, header)}"


def save(sheets: Iterable[Sheet], path: Path, *, title: str = "") -> None:
    """Write the workbook (zip of the sheet parts, workbook, styles and relationships)."""
    sheets = list(sheets)
    names = [s.name for s in sheets]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate sheet names: {names}")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        parts = [("[Content_Types].xml", _content_types(len(sheets))), ("_rels/.rels", _ROOT_RELS),
                 ("docProps/core.xml", _core(title)), ("xl/workbook.xml", _workbook(sheets)),
                 ("xl/_rels/workbook.xml.rels", _workbook_rels(len(sheets))), ("xl/styles.xml", _STYLES_XML)]
        parts += [(f"xl/worksheets/sheet{i}.xml", sheet.xml()) for i, sheet in enumerate(sheets, 1)]
        for name, text in parts:
            # A fixed timestamp (the zip epoch), not the clock: the same report gives the same bytes.
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, text, compresslevel=6)


_ROOT_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">\
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>\
<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/package/2006/relationships/metadata/core-properties" Target="docProps/core.xml"/>\
</Relationships>"""


def _content_types(n: int) -> str:
    sheets = "".join(f'<Override PartName="/xl/worksheets/sheet{i}.xml" '
                     'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
                     for i in range(1, n + 1))
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/styles.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
            '<Override PartName="/docProps/core.xml" ContentType="application/vnd.openxmlformats-package.core-properties+xml"/>'
            f"{sheets}</Types>")


def _core(title: str) -> str:
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>'
            f"{escape(_ILLEGAL.sub('', title))}</dc:title><dc:creator>ptmon</dc:creator></cp:coreProperties>")


def _workbook(sheets: list[Sheet]) -> str:
    entries = "".join(f'<sheet name="{escape(s.name, {chr(34): "&quot;"})}" sheetId="{i}" r:id="rId{i}"/>'
                      for i, s in enumerate(sheets, 1))
    names = "".join(
        f'<definedName name="_xlnm._FilterDatabase" localSheetId="{i}" hidden="1">'
        f"{escape(_quote_sheet(s.name))}!{s.filter_ref(absolute=True)}</definedName>"
        for i, s in enumerate(sheets) if s.filter is not None)
    return (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<workbook {_NS}>'
            f"<bookViews><workbookView/></bookViews><sheets>{entries}</sheets>"
            + (f"<definedNames>{names}</definedNames>" if names else "") + "</workbook>")


def _quote_sheet(name: str) -> str:
    return "'" + name.replace("'", "''") + "'"


def _workbook_rels(n: int) -> str:
    rels = "".join(f'<Relationship Id="rId{i}" '
                   'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" '
                   f'Target="worksheets/sheet{i}.xml"/>' for i in range(1, n + 1))
    styles = (f'<Relationship Id="rId{n + 1}" '
              'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/>')
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            f'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">{rels}{styles}'
            "</Relationships>")
