"""Terminal output of the `graphad` command: two streams, colours only on a TTY.

Colour is used when the stream is a terminal, NO_COLOR is unset and TERM is not "dumb"
(`--color always|never` overrides), so pipes, files and captured test output stay plain text.
"""
from __future__ import annotations

import os
import sys

_CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "blue": "34", "magenta": "35",
          "cyan": "36"}


def wants_color(stream, mode: str = "auto") -> bool:
    if mode == "always":
        return True
    if mode == "never":
        return False
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # closed stream
        return False


class Style:
    """`style("text", "red", "bold")` wraps text in ANSI codes when enabled, else returns it."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, text: str, *styles: str) -> str:
        if not self.enabled or not styles or not text:
            return text
        codes = ";".join(_CODES[s] for s in styles)
        return f"\033[{codes}m{text}\033[0m"


class Console:
    """The command's stdout and stderr with their styles."""

    def __init__(self, stdout=None, stderr=None, color: str = "auto"):
        self.out = stdout if stdout is not None else sys.stdout
        self.err = stderr if stderr is not None else sys.stderr
        self.set_color(color)

    def set_color(self, mode: str) -> None:
        self.out_style = Style(wants_color(self.out, mode))
        self.err_style = Style(wants_color(self.err, mode))

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def write_err(self, text: str) -> None:
        self.err.write(text)
        self.err.flush()

    def note(self, text: str) -> None:
        """A one-line remark on stderr (`note: ...`)."""
        self.write_err(f"{self.err_style('note:', 'cyan', 'bold')} {text}\n")

    def warn(self, text: str) -> None:
        self.write_err(f"{self.err_style('warning:', 'yellow', 'bold')} {text}\n")

    def error(self, text: str, prefix: str = "graphad") -> None:
        self.write_err(f"{prefix}: {self.err_style('error:', 'red', 'bold')} {text}\n")

    def dump(self, text: str) -> None:
        """An IR dump of an instrument (stderr), with its `// -----//` header and diff lines coloured."""
        st = self.err_style
        if st.enabled:
            lines = []
            for ln in text.split("\n"):
                if ln.startswith("// -----//"):
                    ln = st(ln, "blue", "bold")
                elif ln.startswith(("+++", "---")):
                    ln = st(ln, "bold")
                elif ln.startswith("@@"):
                    ln = st(ln, "cyan")
                elif ln.startswith("+"):
                    ln = st(ln, "green")
                elif ln.startswith("-"):
                    ln = st(ln, "red")
                lines.append(ln)
            text = "\n".join(lines)
        self.write_err(text + "\n")
