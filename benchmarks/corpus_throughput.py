"""Throughput of the whole corpus pipeline on Korean vs English text (SPEC §1; issue goal: Korean within 2x).

Both runs use the same amount of shared pretraining text (an even sample across each file,
so every source is represented), the same executor settings and the full chain of stages:
read, quality filters (Kiwi morphemes for Korean), PII, exact + MinHash dedup, token count,
mix and report. MB/s = input MB / wall seconds of ``build_corpus``.

It also times Korean word segmentation alone on the same Korean sample: hcx's eojeol-cached
Kiwi (hcx.data.words) against datatrove's own ``KiwiTokenizer`` (one Kiwi call per document).

    .venv/bin/python benchmarks/corpus_throughput.py [--mb 4] [--tasks 2]
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from pathlib import Path

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


def run(language: str, segment: str, path: Path, out: Path, tasks: int, tokenizer: str) -> float:
    config = DataConfig(
        output_dir=str(out),
        tokenizer=tokenizer,
        sources=[
            SourceConfig(name=f"bench_{language}", paths=[str(path)], segment=segment, language=language)
        ],
        mix=MixConfig(**{s: float(s == segment) for s in ("korean", "multilingual", "code")}),
        executor=ExecutorConfig(tasks=tasks, workers=tasks),
    )
    start = time.perf_counter()
    build_corpus(config, fresh=True)
    return time.perf_counter() - start


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=4.0, help="MB of text per language")
    parser.add_argument("--tasks", type=int, default=2)
    args = parser.parse_args()
    data = find_data_dir()
    tokenizer = str(data / "tokenizers" / "polyglot-ko-30k" / "tokenizer.json")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for language, segment in (("ko", "korean"), ("en", "multilingual")):
            path = tmp / f"{language}.jsonl"
            n_bytes = sample(data / "pretrain" / f"{language}.jsonl.gz", path, args.mb)
            seconds = run(language, segment, path, tmp / f"out_{language}", args.tasks, tokenizer)
            results[language] = (n_bytes, seconds)
            if language == "ko":
                ours, reference = segmentation_mb_per_s(path, min(args.mb, 1.0))
    for language, (n_bytes, seconds) in results.items():
        print(f"{language}: {n_bytes / 1e6:.2f} MB in {seconds:.1f} s = {n_bytes / 1e6 / seconds:.3f} MB/s")
    ko, en = (results[x][0] / results[x][1] for x in ("ko", "en"))
    print(f"English / Korean throughput ratio: {en / ko:.2f}x (goal: <= 2x)")
    print(
        f"Korean word segmentation: hcx cached Kiwi {ours:.3f} MB/s, datatrove KiwiTokenizer {reference:.3f} MB/s "
        f"({ours / reference:.1f}x)"
    )


if __name__ == "__main__":
    main()
