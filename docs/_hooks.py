"""MkDocs hook: render the Sphinx roles of numpydoc docstrings (``:class:`eigrad.X```).

mkdocstrings renders ``:class:`eigrad.GaugeWarning``` as the literal text
``:class:`` followed by code. This hook drops the role and links names that
the API page documents (``::: eigrad.X`` lines of ``api.md``) to their entry.
"""

from __future__ import annotations

import re
from pathlib import Path

_ROLE = re.compile(r":(?:class|func|meth|attr|exc|mod|data|obj):<code>([\w.]+)</code>")
_DOCUMENTED = set(
    re.findall(r"^::: (eigrad\.\w+)", (Path(__file__).parent / "api.md").read_text(encoding="utf-8"), re.MULTILINE)
)


def on_page_content(html, page, config, files):
    prefix = "" if page.file.src_uri == "api.md" else "../" * page.url.count("/") + "api/"

    def repl(m):
        name = m.group(1)
        if name in _DOCUMENTED:
            return f'<a href="{prefix}#{name}"><code>{name}</code></a>'
        return f"<code>{name}</code>"

    return _ROLE.sub(repl, html)
