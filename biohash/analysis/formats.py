"""Render a table (``paper_table``, ``best_configs`` ...) as markdown, CSV or LaTeX.

Hand-written markdown/LaTeX (a few lines each) instead of pandas' versions,
which need the optional ``tabulate`` / ``jinja2`` packages.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from biohash.registry import Registry

if TYPE_CHECKING:  # pandas is imported on use: the CLI builds its parser without it
    import pandas as pd

__all__ = ["FORMATS", "render"]

FORMATS: Registry[Callable[[pd.DataFrame], str]] = Registry("table format")


def _flat(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and body cells, with a (multi-)index turned into leading columns."""
    import pandas as pd

    frame = df.reset_index() if not isinstance(df.index, pd.RangeIndex) else df
    header = [" ".join(str(p) for p in c if str(p)) if isinstance(c, tuple) else str(c)
              for c in frame.columns]
    body = [["" if pd.isna(v) else (f"{v:.4g}" if isinstance(v, float) else str(v))
             for v in row] for row in frame.itertuples(index=False)]
    return header, body


@FORMATS.register("markdown")
def to_markdown(df: pd.DataFrame) -> str:
    header, body = _flat(df)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


@FORMATS.register("csv")
def to_csv(df: pd.DataFrame) -> str:
    import pandas as pd

    header, body = _flat(df)
    return pd.DataFrame(body, columns=header).to_csv(index=False)


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "±": r"$\pm$", "λ": r"$\lambda$"}


def _tex(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


@FORMATS.register("latex")
def to_latex(df: pd.DataFrame) -> str:
    header, body = _flat(df)
    lines = [r"\begin{tabular}{" + "l" * len(header) + "}", r"\toprule",
             " & ".join(_tex(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex(c) for c in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def render(df: pd.DataFrame, fmt: str = "markdown") -> str:
    """``df`` as text in format ``fmt`` (one of ``FORMATS.names()``)."""
    return FORMATS.get(fmt)(df)
