"""Export labels as training data files in TRL's own column names (the rows: feedback/rows.py).

- dpo:    prompt / chosen / rejected / rule           (DPOTrainer)
- reward: prompt / chosen / rejected / margin / rule  (RewardTrainer; margin from strength or ratings)
- kto:    prompt / completion / label / rule          (KTOTrainer; desirable = True)
- sft:    prompt / completion / rule                  (SFTTrainer; rewrites and winners)

`rule` names the conversion that made each row (feedback/conversions.py); the trainers ignore it.
Prompts of the val split are held out: no export includes them unless asked (`include_val`).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.orm import Session

from db.models import LABEL_SOURCES
from feedback.errors import UserError
from feedback.projects import get_project
from feedback.rows import RowSettings, Scope, kto_rows, preference_rows, sft_rows

ExportFormat = Literal["dpo", "kto", "reward", "sft"]
FORMATS = ("dpo", "kto", "reward", "sft")


def rows_for(*, session: Session, fmt: str, scope: Scope, settings: RowSettings) -> list[dict[str, Any]]:
    """The rows of one format; what both exports and snapshots (training/snapshot.py) use."""
    if fmt == "kto":
        return kto_rows(session=session, scope=scope, settings=settings)
    if fmt == "sft":
        return sft_rows(session=session, scope=scope, settings=settings)
    if fmt in ("dpo", "reward"):
        return preference_rows(session=session, scope=scope, settings=settings, purpose=fmt)
    raise UserError(f"Unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}.")


def export_rows(*, session: Session, fmt: str, sources: Sequence[str] = LABEL_SOURCES, include_val: bool = False,
                project: str | None = None, settings: RowSettings | None = None,
                **setting_values) -> list[dict[str, Any]]:
    """Rows of `fmt` from the labels of `sources` (in `project`, if named). Conversion settings
    come as a RowSettings or as its field names (kto_threshold=0.7, rank_pairs="all_pairs", ...)."""
    if fmt not in FORMATS:
        raise UserError(f"Unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    unknown = set(sources) - set(LABEL_SOURCES)
    if unknown:
        raise UserError(f"Unknown label source(s) {', '.join(sorted(unknown))}; "
                        f"choose from {', '.join(LABEL_SOURCES)}.")
    project_id = get_project(session=session, name=project).id if project else None
    settings = settings or RowSettings(**setting_values)
    return rows_for(session=session, fmt=fmt, settings=settings,
                    scope=Scope(sources=tuple(sources), project_id=project_id, include_val=include_val))


def to_jsonl(rows: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def write_rows(rows: list[dict[str, Any]], out: Path) -> None:
    """JSONL, or parquet when the file name ends in .parquet; written atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix == ".parquet":
        import pandas as pd

        pd.DataFrame(rows).to_parquet(tmp, index=False)
    else:
        tmp.write_bytes(to_jsonl(rows))
    tmp.replace(out)
