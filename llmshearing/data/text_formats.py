"""Turn source formats into plain text: roff man pages and RFC 822 e-mail messages."""

from __future__ import annotations

import email
import email.policy
import re

# --- roff (man(7) pages) -------------------------------------------------------------------------

_NAMED_GLYPHS = {
    "em": "\u2014", "en": "\u2013", "bu": "\u2022", "aq": "'", "dq": '"', "lq": "\u201c",
    "rq": "\u201d", "oq": "\u2018", "cq": "\u2019", "mu": "\u00d7", "+-": "\u00b1", "co": "\u00a9",
    "rg": "\u00ae", "ha": "^", "ti": "~", "ga": "`", "bs": "\\", "sl": "/", "hy": "-", "mi": "-",
    "pl": "+", "eq": "=", "<=": "\u2264", ">=": "\u2265", "!=": "\u2260", "->": "\u2192",
    "<-": "\u2190", "de": "\u00b0", "sc": "\u00a7", "tm": "\u2122", "R": "\u00ae", "lB": "[",
    "rB": "]", "lC": "{", "rC": "}", "la": "\u27e8", "ra": "\u27e9", "or": "|", "ba": "|",
}
_SIMPLE_ESCAPES = {"-": "-", "e": "\\", "\\": "\\", "~": " ", " ": " ", "0": " ", "'": "'",
                   "`": "`", ".": "."}
_ESCAPE = re.compile(
    r"\\(?:"
    r"f(?:\[[^\]]*\]|\(..|.)"                       # font change
    r"|\*(?:\[(?P<str_long>[^\]]*)\]|\((?P<str2>..)|(?P<str1>.))"  # string register
    r"|\[(?P<glyph_long>[^\]]*)\]|\((?P<glyph2>..)"  # named glyph
    r"|[hvwoXZbDlLx]'[^']*'"                         # escapes with a quoted argument
    r"|s[-+]?(?:\d|\(\d\d|\[\d+\])"                  # point size
    r"|n(?:\[[^\]]*\]|\(..|.)"                      # number register
    r"|(?P<other>.)"
    r")")
_MACRO_ARG = re.compile(r'"((?:[^"]|"")*)"?|(\S+)')
_SPACED_FONT_MACROS = {"B", "I", "SM", "SB"}
_ALTERNATING_FONT_MACROS = {"BR", "BI", "IR", "RB", "RI", "IB"}
_BREAK_MACROS = {"PP", "P", "LP", "TP", "TQ", "IP", "HP", "sp", "br", "RS", "RE", "in", "ti"}
_NOFILL_ON = {"nf", "EX"}
_NOFILL_OFF = {"fi", "EE"}


def _glyph(name: str) -> str:
    if name.startswith("u") and re.fullmatch(r"u[0-9A-Fa-f]{4,6}", name):
        return chr(int(name[1:], 16))
    return _NAMED_GLYPHS.get(name, "")


def _replace_escape(match: re.Match) -> str:
    groups = match.groupdict()
    for key in ("glyph_long", "glyph2", "str_long", "str2", "str1"):
        if groups[key] is not None:
            return _glyph(groups[key])
    other = groups["other"]
    if other is not None:
        return _SIMPLE_ESCAPES.get(other, "" if other in "&|^,/:%c!" else other)
    return ""


def unescape_roff(text: str) -> str:
    """Replace roff escapes by the characters they print (drops font and spacing escapes)."""
    return _ESCAPE.sub(_replace_escape, text)


def _macro_args(rest: str) -> list[str]:
    return [match.group(2) if match.group(2) is not None else match.group(1).replace('""', '"')
            for match in _MACRO_ARG.finditer(rest)]


class _RoffRenderer:
    """Tiny man(7) renderer: fills paragraphs, keeps no-fill blocks and tables line by line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.paragraph: list[str] = []
        self.nofill = False
        self.table_state: str | None = None  # None, "format" (tbl options/format) or "data"
        self.tag_pending = False  # the next text line is a .TP tag: keep it on its own line

    def flush(self) -> None:
        if self.paragraph:
            self.lines.append(" ".join(self.paragraph))
            self.paragraph = []

    def text(self, text: str) -> None:
        text = unescape_roff(text)
        if self.nofill or self.table_state:
            self.flush()
            self.lines.append(text.replace("\t", "  ").rstrip())
        elif text.strip():
            self.paragraph.append(text.strip())
            if self.tag_pending:
                self.flush()
                self.tag_pending = False
        else:
            self.flush()
            self.lines.append("")

    def table_line(self, line: str) -> None:
        if self.table_state == "format":
            if line.rstrip().endswith("."):
                self.table_state = "data"
            return
        if line.strip() in {"_", "=", "T{", "T}"}:
            return
        self.text(line.replace("T{", "").replace("T}", ""))

    def macro(self, name: str, rest: str) -> None:
        if name in {"SH", "SS"}:
            self.flush()
            self.lines.extend(["", unescape_roff(" ".join(_macro_args(rest)))])
        elif name in _SPACED_FONT_MACROS:
            if rest.strip():
                self.text(" ".join(_macro_args(rest)))
        elif name in _ALTERNATING_FONT_MACROS:
            self.text("".join(_macro_args(rest)))
        elif name in _BREAK_MACROS:
            self.flush()
            self.tag_pending = name in {"TP", "TQ"}
            if name == "IP" and rest.strip():
                self.text(_macro_args(rest)[0])
        elif name in _NOFILL_ON:
            self.flush()
            self.nofill = True
        elif name in _NOFILL_OFF:
            self.nofill = False
        elif name == "TS":
            self.flush()
            self.table_state = "format"
        elif name == "TE":
            self.table_state = None

    def feed(self, line: str) -> None:
        line = re.sub(r'\\".*', "", line) if '\\"' in line else line
        is_macro = line.startswith((".", "'"))
        if self.table_state == "format" or (self.table_state and not is_macro):
            self.table_line(line)
            return
        if is_macro:
            stripped = line[1:].strip()
            if not stripped:
                return
            name, _, rest = stripped.partition(" ")
            self.macro(name, rest)
        else:
            self.text(line)

    def render(self) -> str:
        self.flush()
        text = "\n".join(self.lines)
        return re.sub(r"\n{3,}", "\n\n", text).strip()


def roff_to_text(source: str) -> str:
    """Render a man(7) page's roff source as plain text. Returns "" for ``.so`` redirections."""
    renderer = _RoffRenderer()
    for line in source.splitlines():
        if line.startswith(".so "):
            return ""
        renderer.feed(line)
    return renderer.render()


# --- e-mail ---------------------------------------------------------------------------------------

_KEPT_HEADERS = ("From", "Date", "Subject")


def email_to_text(raw: bytes) -> str | None:
    """Render an RFC 822 message as a few headers plus its plain-text body.

    Returns None when the message has no readable text/plain part.
    """
    if raw.startswith(b"From "):  # mbox separator line
        raw = raw.split(b"\n", 1)[-1]
    message = email.message_from_bytes(raw, policy=email.policy.default)
    try:
        body = message.get_body(preferencelist=("plain",))
        content = body.get_content() if body is not None else None
    except (LookupError, ValueError, AssertionError):
        return None
    if not content or not content.strip():
        return None
    headers = []
    for name in _KEPT_HEADERS:
        try:
            value = message[name]
        except (ValueError, IndexError, AttributeError):
            value = None
        if value:
            headers.append(f"{name}: {' '.join(str(value).split())}")
    return "\n".join(headers) + "\n\n" + content.strip()
