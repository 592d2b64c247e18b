"""The report as a printable PDF: the HTML document laid out by WeasyPrint on A4.

WeasyPrint (HTML + CSS → PDF through Pango) makes the PDF and the HTML one document, takes
the CFF-based Noto CJK fonts that Debian ships (fonts-noto-cjk), draws the SVG charts as
vectors, and numbers pages from CSS (``counter(page)`` / ``counter(pages)``). With
libharfbuzz-subset0 installed it subsets the CJK fonts in C; without it, fontTools takes
about 5 s per font.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from ..errors import PtmonError

log = logging.getLogger(__name__)

FONT_HINT = "install a Simplified Chinese font, e.g. `apt-get install fonts-noto-cjk`"
EXTRA_HINT = "pip install 'ptmon[pdf]'"
LIB_HINT = "install Pango and HarfBuzz-Subset, e.g. `apt-get install libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0`"


def check_cjk_font() -> None:
    """Fail before rendering when fontconfig knows no Chinese font (the PDF would print boxes)."""
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return  # no fontconfig tools to ask; Pango will still find what fontconfig has
    found = subprocess.run([fc_list, ":lang=zh-cn", "family"], capture_output=True, text=True, check=False).stdout
    if not found.strip():
        raise PtmonError(f"the PDF report needs a Chinese font and fontconfig has none: {FONT_HINT}")


def render_pdf(html: str, path: Path) -> None:
    """Lay out ``html`` (from :func:`ptmon.report.html.render_html`) as an A4 PDF at ``path``."""
    try:
        from weasyprint import HTML  # imported here: it takes most of a second and only the PDF needs it
    except ModuleNotFoundError as exc:
        raise PtmonError(f"the PDF report needs WeasyPrint, which is not installed: {EXTRA_HINT}") from exc
    except (ImportError, OSError) as exc:
        raise PtmonError(f"cannot load WeasyPrint for the PDF report ({exc}): {LIB_HINT}") from exc
    check_cjk_font()
    logging.getLogger("fontTools").setLevel(logging.WARNING)
    HTML(string=html).write_pdf(path)
