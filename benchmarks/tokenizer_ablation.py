"""The tokenizer question: does hcx's morphology-aware tokenizer make a better model?

The same model shape, training text and token budget with three tokenizers:

- (a) ``hcx``: hcx's own byte-level BPE, ``morpheme_aware: true`` (no Korean token crosses a
  Kiwi morpheme boundary), trained here on the training text at ``--vocab-size``;
- (b) ``bpe``: the same trainer, text and vocabulary size with ``morpheme_aware: false``;
- (c) ``polyglot``: the Polyglot-Ko tokenizer as it is (``tokenizers/polyglot-ko-30k``, about
  30,000 tokens: a larger vocabulary, so a larger embedding table and output head).

One process, one run. It builds a Korean-heavy training corpus (Korean, English, code) from the
shared pretraining files, spread evenly over each file and without the held-out documents
(``hcx.data.held_out.is_held_out``, 5 %), trains (a) and (b) on exactly that text, then pretrains
the ``tiny`` decoder once per tokenizer and seed (only the vocabulary rows differ; fill-in-the-
middle off for all, since Polyglot-Ko has no FIM tokens) for ``--steps`` steps of the same
``batch x seq_len`` tokens, and measures:

- bits per byte on held-out Korean and English documents (the same rule, never trained on by any
  tokenizer or model), each model with its own tokenizer: a per-byte loss does not depend on the
  tokenizer. At *equal tokens*: after ``--steps`` steps (the same number of training tokens for
  every run). At *equal compute*: where a run's cumulative training FLOPs
  (``ModelConfig.flops_per_token(seq_len)`` x tokens) equal the final FLOPs of the
  smallest-vocabulary run; larger-vocabulary runs are measured at the two steps around that point
  and interpolated linearly (or, with ``--separate-compute-runs``, trained again for that many
  steps with their own full learning-rate schedule, which does not penalise them for an
  un-annealed learning rate);
- KoBEST (the five ``hcx_kobest_*`` tasks, pooled) and CLIcK (``hcx_click``) accuracy of the final
  (equal-token) models, at most ``--limit`` items per task, with the standard error of the item
  sample sqrt(p(1-p)/(n-1)) (pooled over KoBEST's tasks as a stratified mean);
- Korean and English bytes per token of each tokenizer on the held-out text.

It prints a table per seed and the mean with the min-max over seeds, the FLOPs bookkeeping and the
time of each part, and writes every number to ``<work>/results.json``. A finished run (its
``result.json`` with the same settings) is reused, so an interrupted benchmark resumes.

    .venv/bin/python benchmarks/tokenizer_ablation.py   # default: ~20-25 min on 2 idle cores (2 seeds x 3)
    .venv/bin/python benchmarks/tokenizer_ablation.py --separate-compute-runs   # + ~4 min
    .venv/bin/python benchmarks/tokenizer_ablation.py --steps 20 --warmup 4 --limit 20 --seeds 0 1 \\
        --vocab-size 2048 --corpus-mb 1 --held-out-kb 20 --work runs/bench/tokenizer_ablation_smoke  # smoke

Times are wall seconds and, in brackets, CPU seconds of every thread: on a machine shared with
other jobs the wall time of the 2-thread training grows much faster than the load suggests.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import math
import os
import shutil
import statistics
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from machine import cpu_name
from rich.console import Console
from rich.table import Table

from hcx.data.held_out import HELD_OUT_FRACTION, held_out_texts, is_held_out
from hcx.eval.api import evaluate
from hcx.model.config import ModelConfig, padded_vocab_size
from hcx.model.transformer import Transformer
from hcx.paths import find_data_dir
from hcx.tokenizer import Tokenizer
from hcx.tokenizer import load as load_tokenizer
from hcx.tokenizer.config import TokenizerConfig
from hcx.tokenizer.corpus import read_documents
from hcx.tokenizer.train import INFO_FILE, train_tokenizer
from hcx.train.bpb import text_bits_per_byte
from hcx.train.config import PretrainConfig
from hcx.train.pretrain import Pretrainer

console = Console(width=170)

#: directory name -> label; (a) and (b) are trained here, (c) is read from the shared data.
VARIANTS = {
    "hcx": "(a) hcx morph.",
    "bpe": "(b) BPE no morph.",
    "polyglot": "(c) Polyglot-Ko",
}
POLYGLOT = "tokenizers/polyglot-ko-30k"
#: Share of the training corpus's bytes per language: Korean-heavy, some English and code.
MIX = {"ko": 0.7, "en": 0.2, "code": 0.1}
HELD_OUT_LANGUAGES = ("ko", "en")
KOBEST = ("boolq", "copa", "hellaswag", "sentineg", "wic")
CLICK = "hcx_click"


# --- arguments ---------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("runs/bench/tokenizer_ablation"),
        help="corpus, tokenizers, runs, JSON",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="model init and data order")
    parser.add_argument("--steps", type=int, default=400, help="optimizer steps of every run (equal tokens)")
    parser.add_argument("--batch-size", type=int, default=4, help="rows per step")
    parser.add_argument("--seq-len", type=int, default=512, help="row length; also the model's context")
    parser.add_argument("--preset", default="tiny", help="model shape (hcx.model.config.PRESETS)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=20, help="warmup steps")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16", help="training")
    parser.add_argument(
        "--bpb-dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="bits per byte: float32, or bfloat16 autocast (~2.5x faster for the 30k head, ~1e-4 bpb apart)",
    )
    parser.add_argument("--vocab-size", type=int, default=8192, help="of tokenizers (a) and (b)")
    parser.add_argument("--corpus-mb", type=float, default=4.0, help="training text, MB of UTF-8")
    parser.add_argument("--held-out-kb", type=int, default=100, help="held-out text per language, KB")
    parser.add_argument("--limit", type=int, default=100, help="items per KoBEST task and of CLIcK")
    parser.add_argument("--eval-every", type=int, default=0, help="also measure bpb every N steps (0: off)")
    parser.add_argument(
        "--separate-compute-runs",
        action="store_true",
        help="equal compute from extra runs with their own (shorter) schedule instead of mid-run steps",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch and Kiwi threads")
    parser.add_argument("--fresh", action="store_true", help="recompute runs whose result.json exists")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep each run's final checkpoint")
    return parser.parse_args()


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def machine_line(args: argparse.Namespace) -> str:
    return (
        f"machine: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__} on {torch.get_num_threads()} "
        f"threads; training in {args.dtype}, bits per byte in {args.bpb_dtype}"
    )


class Stopwatch:
    """Wall and CPU seconds (every thread of this process) spent in named parts."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {"wall": self.wall, "cpu": self.cpu}


# --- the training corpus -----------------------------------------------------------------------
def spread(texts: list[str], target_bytes: int) -> list[str]:
    """About ``target_bytes`` of ``texts``, every k-th document (files are grouped by source)."""
    total = sum(len(t.encode("utf-8")) for t in texts)
    share = min(1.0, target_bytes / max(total, 1))
    return [t for i, t in enumerate(texts) if math.floor((i + 1) * share) > math.floor(i * share)]


def build_corpus(data: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``<work>/corpus/{ko,en,code}.jsonl.gz``: training documents only; reused when current."""
    out = work / "corpus"
    key = {"mb": args.corpus_mb, "mix": MIX, "fraction": HELD_OUT_FRACTION, "version": 1}
    meta_path = out / "meta.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("key") == key:
        return json.loads(meta_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    stats: dict[str, dict[str, int]] = {}
    for lang, share in MIX.items():
        texts = [
            t
            for t in read_documents(data / "pretrain" / f"{lang}.jsonl.gz")
            if t.strip() and not is_held_out(t, HELD_OUT_FRACTION)
        ]
        chosen = spread(texts, int(args.corpus_mb * share * 1e6))
        write_jsonl(out / f"{lang}.jsonl.gz", chosen, lang)
        stats[lang] = {"documents": len(chosen), "bytes": sum(len(t.encode("utf-8")) for t in chosen)}
    meta = {"key": key, "languages": stats}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def write_jsonl(path: Path, texts: Iterable[str], language: str) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            record = {"text": text, "id": f"{language}-{i}", "language": language}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


# --- tokenizers --------------------------------------------------------------------------------
def prepare_tokenizers(data: Path, work: Path, corpus: dict, args: argparse.Namespace) -> dict[str, Path]:
    """(a) and (b) trained on the corpus files at ``--vocab-size`` (reused when current); (c) as is."""
    dirs = {}
    files = sorted(str(p) for p in (work / "corpus").glob("*.jsonl.gz"))
    for name, aware in (("hcx", True), ("bpe", False)):
        out = work / "tokenizers" / name
        key = {"corpus": corpus["key"], "vocab": args.vocab_size, "morpheme_aware": aware}
        stamp = out / "ablation_key.json"
        if not (stamp.is_file() and json.loads(stamp.read_text()) == key):
            console.log(f"training tokenizer {VARIANTS[name]} ({args.vocab_size:,} tokens)")
            train_tokenizer(
                files=files,
                vocab_size=args.vocab_size,
                output_dir=out,
                morpheme_aware=aware,
                held_out_fraction=HELD_OUT_FRACTION,  # the corpus has none; kept as the rule says
                file_weights=TokenizerConfig().file_weights,  # hcx's default: Korean words x3
                num_workers=args.threads,
                cache_dir=work / "cache",
                progress=False,
            )
            stamp.write_text(json.dumps(key) + "\n")
        dirs[name] = out
    return {**dirs, "polyglot": data / POLYGLOT}


def bytes_per_token(tokenizer: Tokenizer, texts: Iterable[str]) -> float:
    texts = list(texts)
    return sum(len(t.encode("utf-8")) for t in texts) / sum(len(tokenizer.encode(t)) for t in texts)


# --- FLOPs bookkeeping ---------------------------------------------------------------------------
def model_config(args: argparse.Namespace, tokenizer: Tokenizer) -> ModelConfig:
    """The shape pretraining builds for ``tokenizer`` (its vocabulary rounded up to 64 rows)."""
    vocab = padded_vocab_size(tokenizer.vocab_size)
    return ModelConfig.model_validate(
        {"preset": args.preset, "vocab_size": vocab, "max_seq_len": args.seq_len}
    )


@dataclass
class Plan:
    """Per tokenizer: FLOPs per training token, and the (fractional) step of equal compute."""

    flops_per_token: dict[str, int]
    tokens_per_step: int
    steps: int
    budget: float = 0.0  # the smallest-vocabulary run's final training FLOPs
    compute_step: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.budget = self.steps * self.tokens_per_step * min(self.flops_per_token.values())
        self.compute_step = {
            name: self.budget / (self.tokens_per_step * fpt) for name, fpt in self.flops_per_token.items()
        }

    def eval_steps(self, name: str, every: int) -> list[int]:
        """Steps at which a run's bits per byte are measured: equal compute (both sides) and the end."""
        at = self.compute_step[name]
        steps = {self.steps, max(1, math.floor(at)), min(self.steps, math.ceil(at))}
        if every > 0:
            steps |= set(range(every, self.steps, every))
        return sorted(steps)


def interpolate(points: dict[int, dict[str, float]], step: float, key: str) -> float:
    """``points[s][key]`` linearly interpolated at a fractional ``step`` between measured steps."""
    steps = sorted(points)
    below = max((s for s in steps if s <= step), default=steps[0])
    above = min((s for s in steps if s >= step), default=steps[-1])
    if above == below:
        return points[below][key]
    weight = (step - below) / (above - below)
    return (1 - weight) * points[below][key] + weight * points[above][key]


# --- one pretraining run ---------------------------------------------------------------------------
def pretrain_config(
    args: argparse.Namespace, out: Path, tokenizer: Path, seed: int, steps: int
) -> PretrainConfig:
    return PretrainConfig.model_validate(
        {
            "output_dir": str(out),
            "corpus": str(args.work / "corpus" / "*.jsonl.gz"),
            "tokenizer": str(tokenizer),
            "model": {"preset": args.preset, "vocab_size": None, "max_seq_len": args.seq_len},
            "steps": steps,
            "stages": [
                {"fraction": 1.0, "seq_len": args.seq_len, "batch_size": args.batch_size, "rope_base": 10_000}
            ],
            "fim": {"rate": 0.0},  # Polyglot-Ko has no FIM tokens: off for every run alike
            "optim": {"lr": args.lr, "warmup_steps": args.warmup, "min_lr_ratio": 0.1, "weight_decay": 0.1},
            "checkpoint": {"every": 10**9, "keep": 1},
            "bpb": {"languages": []},  # measured here, on the same text for every run
            "dtype": args.dtype,
            "seed": seed,
            "log_every": 25,
            "resume": False,
        }
    )


def held_out_bpb(
    model: Transformer, tokenizer: Tokenizer, held_out: dict[str, list[str]], dtype: str = "float32"
) -> dict[str, float]:
    """Bits per byte of each language's held-out texts, every window after ``<eot>`` as in training."""
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    with torch.no_grad(), autocast:
        return {
            lang: text_bits_per_byte(model, tokenizer.encode, texts, bos_id=tokenizer.eot_id)
            for lang, texts in held_out.items()
        }


def run_key(args: argparse.Namespace, tokenizer: Path, seed: int, steps: int, evals: list[int]) -> dict:
    return {
        "tokenizer": file_digest(tokenizer / "tokenizer.json"),
        "corpus": file_digest(args.work / "corpus" / "meta.json"),
        "seed": seed,
        "steps": steps,
        "evals": evals,
        "limit": args.limit,
        "held_out_kb": args.held_out_kb,
        "bpb_dtype": args.bpb_dtype,
        **{k: getattr(args, k) for k in ("batch_size", "seq_len", "preset", "lr", "warmup", "dtype")},
    }


def train_and_measure(
    args: argparse.Namespace,
    name: str,
    tokenizer_dir: Path,
    seed: int,
    steps: int,
    evals: list[int],
    ctx: dict[str, Any],
    score: bool = True,
) -> dict[str, Any]:
    """Pretrain one model, measuring bits per byte at ``evals`` and (``score``) KoBEST/CLIcK at the end."""
    out = args.work / "runs" / f"{name}-seed{seed}-steps{steps}"
    key = {**run_key(args, tokenizer_dir, seed, steps, evals), "score": score}
    result_path = out / "result.json"
    if not args.fresh and result_path.is_file():
        done = json.loads(result_path.read_text())
        if done.get("key") == key:
            console.log(f"{VARIANTS[name]} seed {seed}, {steps} steps: reusing {result_path}")
            return {**done, "reused": True}
    console.log(f"pretraining {VARIANTS[name]} seed {seed}: {steps} steps, bpb at steps {evals}")
    watch = Stopwatch()
    with watch.part("setup"):  # tokenizes the corpus into token shards, builds the model
        trainer = Pretrainer(pretrain_config(args, out, tokenizer_dir, seed, steps))
    tokenizer, cfg = trainer.task.tokenizer, trainer.task.model_cfg
    points: dict[int, dict[str, float]] = {}
    model = None
    for stop in evals:
        with watch.part("train"):
            trainer.train(max_steps=stop - trainer.step)
        with watch.part("bpb"):
            model = trainer.full_model(cfg).eval()
            points[stop] = held_out_bpb(model, tokenizer, ctx["held_out"], args.bpb_dtype)
        console.log(f"  step {stop}: " + ", ".join(f"{k} bpb {v:.4f}" for k, v in points[stop].items()))
    scores = None
    if score:
        with watch.part("benchmarks"):
            scores = benchmarks(model, tokenizer, ctx)
        console.log(f"  KoBEST {fmt_acc(scores['kobest'])}, CLIcK {fmt_acc(scores['click'])}")
    result = {
        "key": key,
        "tokenizer": name,
        "seed": seed,
        "steps": trainer.step,
        "vocab_size": tokenizer.vocab_size,
        "model_vocab_rows": cfg.vocab_size,
        "params": cfg.num_params(),
        "flops_per_token": cfg.flops_per_token(args.seq_len),
        "tokens_seen": trainer.tokens_seen,
        "corpus_tokens": trainer.task.shards.num_tokens,
        "final_train_loss": trainer.losses[-1],
        "bpb": {str(s): v for s, v in points.items()},
        "benchmarks": scores,
        "seconds": watch.as_dict(),
    }
    result_path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    if not args.keep_checkpoints:  # 30-100 MB each (weights and optimizer state); the numbers are kept
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return result


# --- KoBEST and CLIcK ------------------------------------------------------------------------------
def write_suite(work: Path, limit: int) -> Path:
    tasks = [{"task": f"hcx_kobest_{t}", "category": "korean", "limit": limit} for t in KOBEST]
    tasks.append({"task": CLICK, "category": "factual", "limit": limit})
    path = work / "suite_tokenizer_ablation.yaml"
    path.write_text(yaml.safe_dump({"description": "KoBEST and CLIcK, 0-shot", "tasks": tasks}))
    return path


def accuracy(metrics: dict[str, Any], n: int) -> tuple[float, float]:
    """Accuracy and its standard error: lm-eval's when numeric, else sqrt(p(1-p)/(n-1))."""
    p = float(metrics["acc,none"])
    se = metrics.get("acc_stderr,none")
    if not isinstance(se, int | float) or math.isnan(se):
        se = math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else float("nan")
    return p, float(se)


def pooled(parts: list[tuple[float, float, int]]) -> dict[str, float]:
    """Item-weighted accuracy over tasks (acc, se, n) and its stratified standard error."""
    total = sum(n for _, _, n in parts)
    acc = sum(p * n for p, _, n in parts) / total
    se = math.sqrt(sum((n * s) ** 2 for _, s, n in parts)) / total
    return {"acc": acc, "se": se, "n": total}


def benchmarks(model: Transformer, tokenizer: Tokenizer, ctx: dict[str, Any]) -> dict[str, Any]:
    report = evaluate(
        model, suite=str(ctx["suite"]), tokenizer=tokenizer, data_dir=ctx["data"], batch_size=32
    )
    tasks = {}
    for task, metrics in report.metrics.items():
        n = int(report.samples.get(task, 0))
        p, se = accuracy(metrics, n)
        tasks[task] = {"acc": p, "se": se, "n": n}
    kobest = [(v["acc"], v["se"], v["n"]) for t, v in tasks.items() if t.startswith("hcx_kobest_")]
    return {
        "tasks": tasks,
        "kobest": pooled(kobest) if kobest else None,
        "click": tasks.get(CLICK),
        "missing": report.missing,
    }


# --- summary ----------------------------------------------------------------------------------------
def seed_row(run: dict[str, Any], compute_run: dict[str, Any] | None, plan: Plan) -> dict[str, Any]:
    """The numbers of one (tokenizer, seed): bpb at equal compute and equal tokens, accuracies."""
    points = {int(s): v for s, v in run["bpb"].items()}
    row = {f"{lang}@tokens": points[plan.steps][lang] for lang in HELD_OUT_LANGUAGES}
    for lang in HELD_OUT_LANGUAGES:
        row[f"{lang}@compute_interpolated"] = interpolate(points, plan.compute_step[run["tokenizer"]], lang)
        row[f"{lang}@compute"] = row[f"{lang}@compute_interpolated"]
        if compute_run is not None:
            row[f"{lang}@compute"] = compute_run["bpb"][str(compute_run["steps"])][lang]
    row["kobest"] = run["benchmarks"]["kobest"]
    row["click"] = run["benchmarks"]["click"]
    return row


def fmt_acc(value: dict[str, float] | None) -> str:
    return "n/a" if not value else f"{100 * value['acc']:.1f} ± {100 * value['se']:.1f}"


def spread_text(values: list[float], digits: int = 4) -> str:
    """The mean over seeds, and the min-max on a second line."""
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f}\n{min(values):.{digits}f}–{max(values):.{digits}f}"


def acc_mean(values: list[dict[str, float] | None]) -> str:
    values = [v for v in values if v]
    if not values:
        return "n/a"
    accs = [100 * v["acc"] for v in values]
    se = statistics.fmean(100 * v["se"] for v in values)
    text = f"{statistics.fmean(accs):.1f} ± {se:.1f}"
    return text if len(accs) == 1 else f"{text}\n{min(accs):.1f}–{max(accs):.1f}"


BPB_COLUMNS = ("ko@compute", "en@compute", "ko@tokens", "en@tokens")
TITLE = "Tokenizer ablation: held-out bits per byte (lower is better), accuracy % ± se"


def print_table(rows: dict[str, dict[int, dict]], tok_info: dict[str, dict], title: str) -> None:
    """One row per tokenizer and seed, then (with several seeds) the mean and the min-max over seeds."""
    table = Table(title=title)
    for column in ("tokenizer", "seed", "vocab", "ko bytes/tok", "ko bpb @compute", "en bpb @compute"):
        table.add_column(column, justify="left" if column == "tokenizer" else "right")
    for column in ("ko bpb @tokens", "en bpb @tokens", "KoBEST acc ± se", "CLIcK acc ± se"):
        table.add_column(column, justify="right")
    for name, seeds in rows.items():
        info = tok_info[name]
        for seed, row in seeds.items():
            table.add_row(
                VARIANTS[name],
                str(seed),
                f"{info['vocab']:,}",
                f"{info['ko_bytes_per_token']:.2f}",
                *[f"{row[c]:.4f}" for c in BPB_COLUMNS],
                fmt_acc(row["kobest"]),
                fmt_acc(row["click"]),
                end_section=len(seeds) == 1,
            )
        if len(seeds) > 1:
            values = list(seeds.values())
            table.add_row(
                f"[bold]{VARIANTS[name]}[/bold]",
                "mean\nmin–max",
                "",
                "",
                *[spread_text([r[c] for r in values]) for c in BPB_COLUMNS],
                acc_mean([r["kobest"] for r in values]),
                acc_mean([r["click"] for r in values]),
                end_section=True,
            )
    console.print(table)


def print_notes(plan: Plan, tok_info: dict, args: argparse.Namespace, corpus: dict, runs: list[dict]) -> None:
    epochs = {r["tokenizer"]: r["tokens_seen"] / r["corpus_tokens"] for r in runs if r["steps"] == plan.steps}
    console.print(
        f"Training: {args.steps} steps x {plan.tokens_per_step:,} tokens ({args.batch_size} x {args.seq_len}) = "
        f"{args.steps * plan.tokens_per_step:,} tokens per run ('@tokens'); corpus "
        + ", ".join(f"{k} {v['bytes'] / 1e6:.2f} MB" for k, v in corpus["languages"].items())
        + f"; {args.preset} model, lr {args.lr}, cosine, {args.warmup} warmup steps, FIM off, {args.dtype}."
    )
    for name, fpt in plan.flops_per_token.items():
        at = plan.compute_step[name]
        info = tok_info[name]
        console.print(
            f"  {VARIANTS[name]:<26} vocab {info['vocab']:>6,} ({info['rows']:,} rows), {fpt / 1e6:.2f} MFLOP/token, "
            f"{info['params'] / 1e6:.2f}M params, equal compute ({plan.budget / 1e12:.3f} TFLOP) at step {at:.1f}; "
            f"bytes/token ko {info['ko_bytes_per_token']:.2f} en {info['en_bytes_per_token']:.2f}; "
            f"{epochs.get(name, float('nan')):.2f} epochs of the corpus"
            + (f"; trained in {info['training']['seconds']:.0f} s" if info["training"] else "")
        )
    how = (
        "its own run of that many steps with a full schedule (--separate-compute-runs)"
        if args.separate_compute_runs
        else "bpb interpolated linearly between the two measured steps around it, mid-schedule (learning "
        "rate not yet annealed, which favours the smallest-vocabulary run)"
    )
    console.print(f"'@compute': training FLOPs equal to the smallest-vocabulary run's final FLOPs; {how}.")
    console.print(
        f"Bits per byte: held-out documents (hash rule, fraction {HELD_OUT_FRACTION}), ~{args.held_out_kb} KB per "
        "language spread over pretrain/{ko,en}.jsonl.gz, each model with its own tokenizer, every window after "
        f"<eot> (the training document separator), windows of {args.seq_len - 1} tokens, {args.bpb_dtype}."
    )
    console.print(
        f"Accuracy: 0-shot, final (equal-token) models, first {args.limit} test items of each KoBEST task (pooled "
        "over the five, weighted by items) and of CLIcK; ± is the standard error of the item sample, "
        "sqrt(p(1-p)/(n-1)) (KoBEST: stratified over tasks); the mean row averages the seeds' se (the same "
        "items, so it does not shrink with seeds). Chance: KoBEST ~45 % (four 2-way tasks, one 4-way), CLIcK ~20-25 %."
    )


def print_timings(watch: Stopwatch, runs: list[dict[str, Any]]) -> None:
    table = Table(title="Where the time went: wall seconds (CPU seconds, all threads)")
    for column in ("part", "setup", "train", "bpb", "KoBEST+CLIcK", "total"):
        table.add_column(column, justify="left" if column == "part" else "right")
    for part, wall in watch.wall.items():
        table.add_row(part, "", "", "", "", f"{wall:.0f} ({watch.cpu[part]:.0f})")
    for run in runs:
        wall, cpu = run["seconds"]["wall"], run["seconds"]["cpu"]
        label = f"{VARIANTS[run['tokenizer']]} seed {run['seed']}, {run['steps']} steps"
        if run.get("reused"):
            label += " (reused)"
        cells = [
            f"{wall[k]:.0f} ({cpu[k]:.0f})" if k in wall else "-"
            for k in ("setup", "train", "bpb", "benchmarks")
        ]
        table.add_row(label, *cells, f"{sum(wall.values()):.0f} ({sum(cpu.values()):.0f})")
    console.print(table)


# --- main ---------------------------------------------------------------------------------------------
def tokenizer_info(
    dirs: dict[str, Path], held_out: dict[str, list[str]], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    info = {}
    for name, path in dirs.items():
        tokenizer = load_tokenizer(path)
        cfg = model_config(args, tokenizer)
        info[name] = {
            "path": str(path),
            "vocab": tokenizer.vocab_size,
            "rows": cfg.vocab_size,
            "params": cfg.num_params(),
            "flops_per_token": cfg.flops_per_token(args.seq_len),
            "ko_bytes_per_token": bytes_per_token(tokenizer, held_out["ko"]),
            "en_bytes_per_token": bytes_per_token(tokenizer, held_out["en"]),
            "training": json.loads((path / INFO_FILE).read_text()) if (path / INFO_FILE).is_file() else None,
        }
    return info


def main() -> None:
    began = time.perf_counter()
    args = parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))
    args.work.mkdir(parents=True, exist_ok=True)
    data = find_data_dir(required=True)
    console.print(machine_line(args))
    watch = Stopwatch()
    with watch.part("training corpus"):
        corpus = build_corpus(data, args.work, args)
    with watch.part("tokenizers (a), (b)"):
        dirs = prepare_tokenizers(data, args.work, corpus, args)
    with watch.part("held-out text, bytes/token"):
        held_out = {
            lang: list(held_out_texts(str(data / f"pretrain/{lang}.jsonl.gz"), args.held_out_kb * 1000))
            for lang in HELD_OUT_LANGUAGES
        }
        tok_info = tokenizer_info(dirs, held_out, args)
    plan = Plan(
        {name: info["flops_per_token"] for name, info in tok_info.items()},
        args.batch_size * args.seq_len,
        args.steps,
    )
    ctx = {"held_out": held_out, "suite": write_suite(args.work, args.limit), "data": data}

    runs: list[dict[str, Any]] = []
    rows: dict[str, dict[int, dict]] = {name: {} for name in VARIANTS}
    for seed in args.seeds:
        for name in VARIANTS:
            run = train_and_measure(
                args, name, dirs[name], seed, args.steps, plan.eval_steps(name, args.eval_every), ctx
            )
            runs.append(run)
            compute_run = None
            short = round(plan.compute_step[name])
            if args.separate_compute_runs and 1 <= short < args.steps:
                compute_run = train_and_measure(
                    args, name, dirs[name], seed, short, [short], ctx, score=False
                )
                runs.append(compute_run)
            rows[name][seed] = seed_row(run, compute_run, plan)
        console.rule(f"after seed {seed}")
        print_table({n: {seed: v[seed]} for n, v in rows.items()}, tok_info, f"{TITLE}, seed {seed}")

    console.rule("Tokenizer ablation: all seeds")
    print_table(rows, tok_info, f"{TITLE}, seeds {', '.join(map(str, args.seeds))}")
    print_notes(plan, tok_info, args, corpus, runs)
    print_timings(watch, runs)
    results = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine_line(args),
        "corpus": corpus,
        "tokenizers": tok_info,
        "plan": asdict(plan),
        "rows": rows,
        "runs": runs,
        "timings": watch.as_dict(),
    }
    path = args.work / "results.json"
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    console.print(f"all numbers: {path}; the whole benchmark took {time.perf_counter() - began:.0f} s wall")


if __name__ == "__main__":
    main()
