"""Where evaluation items come from: a local directory laid out like ``shared/data/eval``, or the hub.

Every hcx task config loads its items with ``custom_dataset: !function ...`` calling
:func:`load_benchmark`. lm-eval passes the TaskManager's ``metadata`` to that function, so
``metadata={"data_dir": ...}`` (``hcx eval --data-dir``) makes every task read
``<data_dir>/eval/<benchmark>/<file>`` offline, and without it the task falls back to the
public dataset on the Hugging Face hub (SPEC §6, issue 7 "Offline").
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets

from hcx.paths import find_data_dir
from hcx.records import Rejected, read_records


class MissingBenchmarkError(FileNotFoundError):
    """A data directory was given but lacks the files a benchmark needs."""


def eval_root(data_dir: str | Path | None) -> Path | None:
    """``<data_dir>/eval`` for an explicit directory (shared data root or its eval folder), else None."""
    if data_dir is None:
        return None
    root = Path(data_dir)
    return root if root.name == "eval" or not (root / "eval").is_dir() else root / "eval"


def load_benchmark(
    benchmark: str,
    files: dict[str, str],
    *,
    hub: tuple[str, str | None] | None = None,
    hub_splits: dict[str, str] | None = None,
    data_dir: str | Path | None = None,
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    **_: Any,
) -> datasets.DatasetDict:
    """Load ``{split: file}`` of ``benchmark`` from ``data_dir`` (offline) or ``hub`` (online).

    ``transform`` maps each local row (a dict) before the dataset is built, e.g. to drop fields
    whose type varies between rows, or to map a reformatted copy to the hub schema. Extra
    keyword arguments are lm-eval metadata (e.g. ``max_length``) and are ignored.
    """
    root = eval_root(data_dir)
    if root is not None:
        folder = root / benchmark
        paths = {split: folder / name for split, name in files.items()}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise MissingBenchmarkError(
                f"benchmark {benchmark!r}: data directory {root} lacks {', '.join(missing)}"
            )
        return datasets.DatasetDict({split: read_split(path, transform) for split, path in paths.items()})
    if hub is None:
        raise MissingBenchmarkError(
            f"benchmark {benchmark!r} has no public hub source here; pass --data-dir with eval/{benchmark}/"
        )
    path, name = hub
    loaded = datasets.load_dataset(path, name)
    if hub_splits:
        loaded = datasets.DatasetDict({ours: loaded[theirs] for ours, theirs in hub_splits.items()})
    return loaded


def read_split(
    path: Path, transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None
) -> datasets.Dataset:
    """One jsonl(.gz) file as a dataset; a bad line fails with ``file:line`` (issue 7 "Bad input").

    Rows are read one by one rather than by Arrow's JSON reader, which fails when the splits
    of a benchmark carry different columns (KoBEST SentiNeg's train file has fewer) and
    reports no line numbers; a row the ``transform`` cannot map is reported by its line too.
    """

    def parse(row: dict[str, Any]) -> dict[str, Any]:
        try:
            return transform(dict(row)) if transform is not None else dict(row)
        except (KeyError, ValueError, TypeError) as exc:
            raise Rejected("unexpected item", f"{type(exc).__name__}: {exc}") from None

    rows = read_records(path, parse, policy="fail", what="benchmark")
    if not rows:
        raise MissingBenchmarkError(f"{path}: no items")
    keys = list(dict.fromkeys(key for row in rows for key in row))
    return datasets.Dataset.from_list([{key: row.get(key) for key in keys} for row in rows])


def default_data_dir() -> Path | None:
    """The shared data when present (tests, the tiny recipe); None sends tasks to the hub."""
    return find_data_dir(required=False)
