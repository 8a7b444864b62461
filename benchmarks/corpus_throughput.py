"""Throughput of the whole corpus pipeline on Korean vs English text (SPEC §1; issue goal: Korean within 2x).

Both runs use the same amount of shared pretraining text (an even sample across each file,
so every source is represented), the same executor settings and the full chain of stages:
read, quality filters (Kiwi morphemes for Korean), PII, exact + MinHash dedup, token count,
mix and report. MB/s = input MB / wall seconds of ``build_corpus``. The languages run
interleaved, ``--repeats`` times each; the ratio is of the medians (and of the bests).

A breakdown follows: wall seconds per stage, and per step of the ``filter`` stage the seconds
summed over its tasks (datatrove's own step timers; the Kiwi model's start-up and analyses are
inside the first word-counting rule, FineWeb Quality).

Then one more Korean build with Kiwi's multi-word dictionary loaded (``kiwi_multi_words``, off
by default: hcx.data.words says why): its time, and how many documents its corpus keeps that
the default's does not, and the other way round.

It also times Korean word segmentation alone on the same Korean sample: hcx's eojeol-cached
Kiwi (hcx.data.words) against datatrove's own ``KiwiTokenizer`` (one Kiwi call per document).

    .venv/bin/python benchmarks/corpus_throughput.py [--mb 4] [--tasks 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from machine import describe
from rich.console import Console

from hcx.data.config import DataConfig, ExecutorConfig, MixConfig, SourceConfig
from hcx.data.pipeline import build_corpus
from hcx.data.words import KiwiWordTokenizer
from hcx.paths import find_data_dir


def sample(src: Path, dst: Path, megabytes: float) -> int:
    """Every k-th record of ``src`` until ``megabytes`` of text; returns the text bytes written."""
    with gzip.open(src, "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    total = sum(len(r["text"].encode()) for r in records)
    step = max(1, int(total / (megabytes * 1e6)))
    chosen = records[::step]
    dst.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chosen), encoding="utf-8")
    return sum(len(r["text"].encode()) for r in chosen)


@dataclass
class Timing:
    seconds: float
    stages: dict[str, float]  # wall seconds per stage
    filter_steps: dict[str, float]  # seconds per step of the filter stage, summed over its tasks


def filter_step_seconds(out: Path) -> dict[str, float]:
    steps = json.loads((out / "_work" / "logs" / "filter" / "stats.json").read_text())
    return {
        step["name"].split(": ", 1)[-1]: step["time_stats"]["total"]
        for step in steps
        if isinstance(step["time_stats"], dict)
    }


def run(
    language: str, segment: str, path: Path, out: Path, tasks: int, tokenizer: str, multi_words: bool = False
) -> Timing:
    config = DataConfig(
        kiwi_multi_words=multi_words,
        output_dir=str(out),
        tokenizer=tokenizer,
        sources=[
            SourceConfig(name=f"bench_{language}", paths=[str(path)], segment=segment, language=language)
        ],
        mix=MixConfig(**{s: float(s == segment) for s in ("korean", "multilingual", "code")}),
        executor=ExecutorConfig(tasks=tasks, workers=tasks),
    )
    stages: dict[str, float] = {}
    start = time.perf_counter()
    build_corpus(config, fresh=True, console=Console(file=io.StringIO()), stage_seconds=stages)
    return Timing(time.perf_counter() - start, stages, filter_step_seconds(out))


def kept_texts(out: Path) -> set[str]:
    """The texts of the documents in a built corpus."""
    texts = set()
    for path in out.glob("*.jsonl.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts.update(json.loads(line)["text"] for line in f)
    return texts


def segmentation_mb_per_s(path: Path, megabytes: float) -> tuple[float, float]:
    """(hcx cached Kiwi, datatrove KiwiTokenizer) MB/s on the first ``megabytes`` of Korean text."""
    from datatrove.utils.word_tokenizers import KiwiTokenizer

    texts, size = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        texts.append(json.loads(line)["text"])
        size += len(texts[-1].encode())
        if size >= megabytes * 1e6:
            break
    rates = []
    for tokenizer in (KiwiWordTokenizer(), KiwiTokenizer(model_type="cong")):
        tokenizer.word_tokenize("워밍업")
        start = time.perf_counter()
        for text in texts:
            tokenizer.word_tokenize(text)
        rates.append(size / 1e6 / (time.perf_counter() - start))
    return rates[0], rates[1]


def median_of(timings: list[Timing], part: str, key: str) -> float:
    return statistics.median(getattr(t, part).get(key, 0.0) for t in timings)


def print_breakdown(timings: dict[str, list[Timing]]) -> None:
    ko, en = timings["ko"], timings["en"]
    for part, title in (("stages", "stage wall s"), ("filter_steps", "filter-stage step s (all tasks)")):
        print(f"{'median ' + title:<44} {'ko':>8} {'en':>8}")
        names = list(dict.fromkeys([*getattr(ko[0], part), *getattr(en[0], part)]))
        for name in names:
            print(f"  {name:<42} {median_of(ko, part, name):8.2f} {median_of(en, part, name):8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=4.0, help="MB of text per language")
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="builds per language, interleaved")
    args = parser.parse_args()
    print(describe(torch.device("cpu")))
    print(f"executor: local, {args.tasks} tasks, {args.tasks} workers; {args.mb} MB per language")
    data = find_data_dir()
    tokenizer = str(data / "tokenizers" / "polyglot-ko-30k" / "tokenizer.json")
    languages = {"ko": "korean", "en": "multilingual"}
    timings: dict[str, list[Timing]] = {language: [] for language in languages}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths, sizes = {}, {}
        for language in languages:
            paths[language] = tmp / f"{language}.jsonl"
            sizes[language] = sample(data / "pretrain" / f"{language}.jsonl.gz", paths[language], args.mb)
        for repeat in range(args.repeats):
            order = list(languages) if repeat % 2 == 0 else list(languages)[::-1]
            for language in order:
                timing = run(
                    language,
                    languages[language],
                    paths[language],
                    tmp / f"out_{language}",
                    args.tasks,
                    tokenizer,
                )
                timings[language].append(timing)
                mb = sizes[language] / 1e6
                print(f"  repeat {repeat + 1} {language}: {mb:.2f} MB in {timing.seconds:.1f} s", flush=True)
        default_kept = kept_texts(tmp / "out_ko")
        args_ko = ("ko", "korean", paths["ko"], tmp / "out_ko_multi", args.tasks, tokenizer)
        multi = run(*args_ko, multi_words=True)
        multi_kept = kept_texts(tmp / "out_ko_multi")
        ours, reference = segmentation_mb_per_s(paths["ko"], min(args.mb, 1.0))
    rates = {}
    for language, runs in timings.items():
        seconds = [t.seconds for t in runs]
        mb = sizes[language] / 1e6
        rates[language] = (mb / statistics.median(seconds), mb / min(seconds))
        print(
            f"{language}: {mb:.2f} MB, median {statistics.median(seconds):.1f} s = {rates[language][0]:.3f} MB/s, "
            f"best {min(seconds):.1f} s = {rates[language][1]:.3f} MB/s"
        )
    print(
        f"English / Korean throughput ratio: {rates['en'][0] / rates['ko'][0]:.2f}x of medians, "
        f"{rates['en'][1] / rates['ko'][1]:.2f}x of bests (goal: <= 2x)"
    )
    print_breakdown(timings)
    print(
        f"Korean with Kiwi's multi-word dictionary: {multi.seconds:.1f} s (default: median "
        f"{statistics.median(t.seconds for t in timings['ko']):.1f} s); documents kept by default "
        f"{len(default_kept):,}, of them dropped with it {len(default_kept - multi_kept)}, "
        f"kept only with it {len(multi_kept - default_kept)}"
    )
    print(
        f"Korean word segmentation: hcx cached Kiwi {ours:.3f} MB/s, datatrove KiwiTokenizer {reference:.3f} MB/s "
        f"({ours / reference:.1f}x)"
    )


if __name__ == "__main__":
    main()
