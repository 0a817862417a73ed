"""Export labels as training data files in TRL's own column names (the rows: feedback/rows.py).

- dpo:    prompt / chosen / rejected / rule           (DPOTrainer)
- reward: prompt / chosen / rejected / margin / rule  (RewardTrainer; margin from strength or ratings)
- kto:    prompt / completion / label / rule          (KTOTrainer; desirable = True)
- sft:    prompt / completion / rule                  (SFTTrainer; rewrites and winners)

`rule` names the conversion that made each row (feedback/conversions.py); the trainers ignore it.
Prompts of the val split are held out: no export includes them unless asked (`include_val`, or
`split="val"`). With `metadata=True` each row also has the METADATA_COLUMNS of feedback/rows.py
(ids to join it back, policy versions, sources, strength, votes and agreement, split, ...), which
the trainers ignore too.

Filters: source, project, policy version (items whose responses all come from the named ones),
since (labels made at or after a moment) and split.

`export_dataset` writes a `datasets.DatasetDict` with `save_to_disk` (train from the train split;
test from the val split only when asked) and pushes it to the Hugging Face hub when HF_TOKEN is
set (the token is passed to the hub client, never printed or stored).
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import LABEL_SOURCES, SPLITS, PolicyVersion
from feedback.errors import UserError
from feedback.projects import get_project
from feedback.rows import RowSettings, Scope, kto_rows, preference_rows, sft_rows
from feedback.settings import get_settings

if TYPE_CHECKING:
    from datasets import DatasetDict

ExportFormat = Literal["dpo", "kto", "reward", "sft"]
FORMATS = ("dpo", "kto", "reward", "sft")


def rows_for(*, session: Session, fmt: str, scope: Scope, settings: RowSettings,
             metadata: bool = False) -> list[dict[str, Any]]:
    """The rows of one format; what both exports and snapshots (training/snapshot.py) use."""
    if fmt == "kto":
        return kto_rows(session=session, scope=scope, settings=settings, metadata=metadata)
    if fmt == "sft":
        return sft_rows(session=session, scope=scope, settings=settings, metadata=metadata)
    if fmt in ("dpo", "reward"):
        return preference_rows(session=session, scope=scope, settings=settings, purpose=fmt, metadata=metadata)
    raise UserError(f"Unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}.")


def export_rows(*, session: Session, fmt: str, sources: Sequence[str] = LABEL_SOURCES, include_val: bool = False,
                project: str | None = None, policy_versions: Sequence[str] = (),
                since: str | datetime | None = None, split: str | None = None, metadata: bool = False,
                settings: RowSettings | None = None, **setting_values) -> list[dict[str, Any]]:
    """Rows of `fmt` from the labels of `sources` (in `project`, if named; on items whose responses
    all come from `policy_versions`, if named; made at or after `since`, an ISO date or a datetime;
    on prompts of `split`, if named), with the metadata columns when asked. Conversion settings
    come as a RowSettings or as its field names (kto_threshold=0.7, rank_pairs="all_pairs", ...)."""
    if fmt not in FORMATS:
        raise UserError(f"Unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    unknown = set(sources) - set(LABEL_SOURCES)
    if unknown:
        raise UserError(f"Unknown label source(s) {', '.join(sorted(unknown))}; "
                        f"choose from {', '.join(LABEL_SOURCES)}.")
    if split is not None and split not in SPLITS:
        raise UserError(f"Unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
    missing = set(policy_versions) - set(session.scalars(
        select(PolicyVersion.name).where(PolicyVersion.name.in_(list(policy_versions)))))
    if missing:
        raise UserError(f"No policy version called {', '.join(sorted(missing))}.")
    project_id = get_project(session=session, name=project).id if project else None
    settings = settings or RowSettings(**setting_values)
    scope = Scope(sources=tuple(sources), project_id=project_id, include_val=include_val,
                  policy_versions=tuple(policy_versions), since=_moment(since), split=split)
    return rows_for(session=session, fmt=fmt, settings=settings, scope=scope, metadata=metadata)


def _moment(value: str | datetime | None) -> datetime | None:
    """An ISO date or date-time (UTC unless it says otherwise) as an aware datetime."""
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"{value!r} is not an ISO date or date-time (YYYY-MM-DD or YYYY-MM-DDTHH:MM).") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def export_dataset(*, session: Session, fmt: str, to_dir: Path | None = None, with_test: bool = False,
                   push_to_hub: str | None = None, split: str | None = None, include_val: bool = False,
                   **export_args) -> DatasetDict:
    """The rows of `fmt` as a `datasets.DatasetDict`: "train" from the train split and, with
    `with_test`, "test" from the val split (the gate's prompts: only when asked). Written with
    `save_to_disk` to `to_dir` (replacing an earlier dataset there) and/or pushed to the hub
    repository `push_to_hub` with HF_TOKEN (a repository it creates is private). `export_args` are
    export_rows's filters, settings and `metadata`; the splits are this function's to choose (a
    `split` or `include_val` is refused)."""
    if split is not None or include_val:
        raise UserError("A dataset's splits are train, and test from the val prompts with --with-test; "
                        "--split and --include-val are for file exports.")
    if to_dir is None and push_to_hub is None:
        raise UserError("Say where the dataset goes: a directory, the hub, or both.")
    token = _hub_token() if push_to_hub else None  # before any work: a missing token is no half-done export
    to_dir = Path(to_dir) if to_dir is not None else None
    if to_dir is not None:
        _check_target(to_dir)
    train = export_rows(session=session, fmt=fmt, split="train", **export_args)
    if not train:
        raise UserError(f"No labels on train prompts to export as {fmt} (label some items first).")
    test = export_rows(session=session, fmt=fmt, split="val", **export_args) if with_test else None
    dataset = to_dataset_dict(train, test)
    if to_dir is not None:
        save_dataset(dataset, to_dir)
    if push_to_hub:
        dataset.push_to_hub(push_to_hub, token=token, private=True)
    return dataset


def _hub_token() -> str:
    token = get_settings().hf_token
    if token is None or not token.get_secret_value():
        raise UserError("Pushing to the Hugging Face hub needs a token: set HF_TOKEN (a write token).")
    return token.get_secret_value()


def to_dataset_dict(train: list[dict[str, Any]], test: list[dict[str, Any]] | None = None) -> DatasetDict:
    """Rows as a DatasetDict whose splits share one schema: TRL's columns as the rows have them
    (chat messages as lists of role/content structs), the metadata columns as metadata_features()
    says, so a column that happens to be all None (no finish reasons, say) keeps its type."""
    from datasets import Dataset, DatasetDict, Features

    inferred = Dataset.from_list(train + (test or [])).features
    declared = metadata_features()
    features = Features({name: declared.get(name, feature) for name, feature in inferred.items()})
    splits = {"train": train} if test is None else {"train": train, "test": test}
    # from_list cannot type an empty list (a val split without labels): an empty table of these columns
    return DatasetDict({name: Dataset.from_list(rows, features=features) if rows
                        else Dataset.from_dict({column: [] for column in features}, features=features)
                        for name, rows in splits.items()})


def metadata_features() -> dict[str, Any]:
    """The datasets feature of each metadata column (METADATA_COLUMNS of feedback/rows.py)."""
    from datasets import List, Value

    text, number, integer = Value("string"), Value("float64"), Value("int64")
    return {"prompt_id": integer, "item_id": integer, "label_ids": List(integer), "policy_versions": List(text),
            "sources": List(text), "producers": List(text), "strength": number, "votes": integer,
            "agreement": number, "split": text, "finish_reasons": List(text), "project": text}


def _check_target(to_dir: Path) -> None:
    if to_dir.exists() and not (to_dir.is_dir() and (not any(to_dir.iterdir())
                                                     or (to_dir / "dataset_dict.json").exists())):
        raise UserError(f"{to_dir} exists and is not a dataset directory: choose another directory.")


def save_dataset(dataset: DatasetDict, to_dir: Path) -> None:
    """`save_to_disk` into a new directory next to `to_dir`, then swapped in: a reader never sees
    half a dataset, and an earlier dataset there is replaced (anything else is left alone)."""
    _check_target(to_dir)
    to_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = to_dir.with_name(to_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dataset.save_to_disk(str(tmp))
    if to_dir.exists():
        shutil.rmtree(to_dir)
    tmp.rename(to_dir)


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
