"""Vocabulary extension at equal compute (EEVE-Korean's question, arXiv 2402.14714).

An "open model" that knows English and code but not Korean: a small decoder pretrained here
with Mistral v0.3's tokenizer on the shared English and code text only (cached under
``--work``). It then continues pretraining on Korean (with some English replay) three ways,
each for the same number of training FLOPs:

- (a) the base tokenizer, unchanged (Korean falls back to many short pieces and bytes);
- (b) the tokenizer extended with Korean tokens (``hcx tokenizer extend``), each new token's
  embeddings initialised as the mean of its sub-tokens' rows (``new_token_init: mean``);
- (c) the same extension with random new rows (the control).

(b) and (c) first train only the new rows for ``--embedding-share`` of their steps, then
everything (``pretrain.phases``), as EEVE does. Printed: Korean, English and code held-out
bits per byte of the base, of each model right after initialisation and after training; Korean
tokens per held-out document under each tokenizer; training tokens/s and bytes/s. Goals:
(b) lower Korean bits per byte than (a) and (c); English within 2 % of (a); Korean tokens per
document at least 2x fewer than the base tokenizer.

    .venv/bin/python benchmarks/vocab_extension.py [--work runs/bench/vocab_extension]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

import torch

from hcx.model.config import padded_vocab_size
from hcx.model.load import load_model
from hcx.paths import find_data_dir
from hcx.tokenizer import load as load_tokenizer
from hcx.tokenizer.extend import extend_tokenizer
from hcx.train.bpb import text_bits_per_byte
from hcx.train.config import PretrainConfig
from hcx.train.pretrain import Pretrainer

LANGUAGES = ("ko", "en", "code")


def read_texts(path: Path, skip: int, limit: int, min_chars: int = 200) -> list[str]:
    texts: list[str] = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i < skip:
                continue
            text = json.loads(line)["text"]
            if len(text) >= min_chars:
                texts.append(text)
            if len(texts) == limit:
                break
    return texts


def write_corpus(path: Path, texts: list[str], language: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(
                json.dumps({"text": text, "id": f"{language}-{i}", "language": language}, ensure_ascii=False)
            )
            f.write("\n")


def prepare_data(data: Path, work: Path, args: argparse.Namespace) -> dict[str, list[str]]:
    """Training corpora (English+code for the base; Korean + English replay for continuing) and
    held-out documents of each language that no training step or the extension sees."""
    pretrain = data / "pretrain"
    held_out = {
        "ko": read_texts(pretrain / "ko.jsonl.gz", 0, args.held_out),
        "en": read_texts(pretrain / "en.jsonl.gz", 0, args.held_out),
        "code": read_texts(pretrain / "code.jsonl.gz", 0, args.held_out // 4),
    }
    skip = {"ko": 20_000, "en": 5_000, "code": 200}
    english = read_texts(pretrain / "en.jsonl.gz", skip["en"], 20_000)
    code = read_texts(pretrain / "code.jsonl.gz", skip["code"], 1_000, min_chars=1)
    korean = read_texts(pretrain / "ko.jsonl.gz", skip["ko"], args.korean_docs)
    write_corpus(work / "corpus/base/en.jsonl.gz", english, "en")
    write_corpus(work / "corpus/base/code.jsonl.gz", code, "code")
    write_corpus(work / "corpus/continue/ko.jsonl.gz", korean, "ko")
    write_corpus(work / "corpus/continue/en.jsonl.gz", english[: len(korean) // args.replay_every], "en")
    held_out["korean_training"] = korean
    return held_out


def config(work: Path, name: str, **fields) -> PretrainConfig:
    base = {
        "output_dir": str(work / name),
        "fim": {"rate": 0.0},
        "optim": {"lr": 2e-3, "warmup_steps": 20, "min_lr_ratio": 0.1, "weight_decay": 0.1},
        "checkpoint": {"every": 100_000},
        "dtype": "bfloat16",
        "log_every": 50,
        "resume": False,
    }
    return PretrainConfig.model_validate({**base, **fields})


def train_base(work: Path, mistral: Path, args: argparse.Namespace) -> Path:
    hf = work / "base/hf"
    if (hf / "config.json").is_file():
        print(f"base model: reusing {hf}")
        return hf
    cfg = config(
        work,
        "base",
        corpus=str(work / "corpus/base/*.jsonl.gz"),
        tokenizer=str(mistral),
        model={"preset": "tiny", "vocab_size": None, "family": "mistral", "max_seq_len": 1024},
        steps=args.base_steps,
        stages=[
            {"fraction": 1.0, "seq_len": args.seq_len, "batch_size": args.batch_size, "rope_base": 10_000}
        ],
        export_hf=str(hf),
    )
    started = time.perf_counter()
    result = Pretrainer(cfg).train()
    print(
        f"base model: {args.base_steps} steps on English+code in {time.perf_counter() - started:.0f} s, "
        f"loss {result.losses[0]:.2f} -> {result.losses[-1]:.2f}"
    )
    return hf


def held_out_bpb(model, tokenizer, held_out: dict[str, list[str]]) -> dict[str, float]:
    return {
        lang: text_bits_per_byte(model, tokenizer.encode, held_out[lang], bos_id=tokenizer.eot_id)
        for lang in LANGUAGES
    }


def continued(work: Path, name: str, base_hf: Path, tokenizer: Path, steps: int, args, **fields) -> dict:
    cfg = config(
        work,
        name,
        corpus=str(work / "corpus/continue/*.jsonl.gz"),
        tokenizer=str(tokenizer),
        init_from=str(base_hf),
        steps=steps,
        stages=[
            {"fraction": 1.0, "seq_len": args.seq_len, "batch_size": args.batch_size, "rope_base": 10_000}
        ],
        export_hf=str(work / name / "hf"),
        **fields,
    )
    trainer = Pretrainer(cfg)
    initial = trainer.full_model(trainer.task.model_cfg).eval()
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return {
        "config": cfg,
        "initial": initial,
        "seconds": seconds,
        "tokens": steps * args.batch_size * args.seq_len,
        "flops_per_token": trainer.task.model_cfg.flops_per_token(args.seq_len),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("runs/bench/vocab_extension"))
    parser.add_argument("--base-steps", type=int, default=400)
    parser.add_argument("--steps", type=int, default=300, help="steps of (a); (b) and (c) get equal FLOPs")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=4096)
    parser.add_argument("--korean-docs", type=int, default=20_000)
    parser.add_argument("--replay-every", type=int, default=5, help="one English document per N Korean")
    parser.add_argument("--embedding-share", type=float, default=0.1)
    parser.add_argument("--held-out", type=int, default=200)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = find_data_dir(required=True)
    mistral = data / "tokenizers/mistral-v0.3-32k"
    work = args.work
    print(f"machine: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, bfloat16 autocast")

    held_out = prepare_data(data, work, args)
    korean_training = held_out.pop("korean_training")
    base_hf = train_base(work, mistral, args)

    extended = work / "tokenizer-extended"
    if not (extended / "tokenizer.json").is_file():
        extension = extend_tokenizer(mistral, korean_training, extended, new_tokens=args.new_tokens)
        print(f"extension: +{extension.added} tokens in {extension.seconds:.0f} s")

    base_model, base_tok = load_model(base_hf).pair()
    ext_tok = load_tokenizer(extended)
    before = held_out_bpb(base_model, base_tok, held_out)
    ko_tokens = {
        name: sum(len(tok.encode(t)) for t in held_out["ko"]) / len(held_out["ko"])
        for name, tok in (("base", base_tok), ("extended", ext_tok))
    }

    phases = [
        {"fraction": args.embedding_share, "train": ["new_embeddings"]},
        {"fraction": 1 - args.embedding_share, "train": ["*"]},
    ]
    runs = {"a": continued(work, "a-no-extension", base_hf, mistral, args.steps, args)}
    budget = args.steps * runs["a"]["flops_per_token"]
    grown = base_model.cfg.model_copy(update={"vocab_size": padded_vocab_size(ext_tok.vocab_size)})
    steps = round(budget / grown.flops_per_token(args.seq_len))
    for key, name, init in (("b", "b-extension-mean", "mean"), ("c", "c-extension-random", "random")):
        runs[key] = continued(work, name, base_hf, extended, steps, args, new_token_init=init, phases=phases)

    print()
    print(
        f"Korean tokens per held-out document: base tokenizer {ko_tokens['base']:.1f}, "
        f"extended {ko_tokens['extended']:.1f} ({ko_tokens['base'] / ko_tokens['extended']:.2f}x fewer)"
    )
    header = f"{'run':<22}{'steps':>6}{'GFLOP':>9}{'tok/s':>8}{'KB/s':>7}" + "".join(
        f"{lang + ' bpb (init -> end)':>26}" for lang in LANGUAGES
    )
    print(header)
    print(
        f"{'base (English+code)':<22}{'':>6}{'':>9}{'':>8}{'':>7}"
        + "".join(f"{before[lang]:>26.3f}" for lang in LANGUAGES)
    )
    results = {}
    for key, run in runs.items():
        tok = base_tok if key == "a" else ext_tok
        after_model = load_model(run["config"].export_hf).model
        initial = held_out_bpb(run["initial"], tok, held_out)
        after = held_out_bpb(after_model, tok, held_out)
        results[key] = after
        steps = run["config"].steps
        flops = steps * args.batch_size * args.seq_len * run["flops_per_token"] / 1e9
        tokens_per_s = run["tokens"] / run["seconds"]
        bytes_per_token = sum(len(t.encode()) for t in held_out["ko"]) / sum(
            len(tok.encode(t)) for t in held_out["ko"]
        )
        print(
            f"{run['config'].output_dir.rsplit('/', 1)[-1]:<22}{steps:>6}{flops:>9.0f}{tokens_per_s:>8.0f}"
            f"{tokens_per_s * bytes_per_token / 1e3:>7.1f}"
            + "".join(f"{initial[lang]:>14.3f} -> {after[lang]:>6.3f}" for lang in LANGUAGES)
        )
    print()
    a, b, c = results["a"], results["b"], results["c"]
    print(
        f"Korean bpb: (b) {b['ko']:.3f} vs (a) {a['ko']:.3f} and (c) {c['ko']:.3f}: "
        f"{'lower than both' if b['ko'] < min(a['ko'], c['ko']) else 'NOT lower than both'}"
    )
    print(
        f"English bpb: (b) {b['en']:.3f} vs (a) {a['en']:.3f}: {100 * (b['en'] / a['en'] - 1):+.1f} % (goal <= +2 %)"
    )
    print(f"Korean tokens/doc: {ko_tokens['base'] / ko_tokens['extended']:.2f}x fewer (goal >= 2x)")


if __name__ == "__main__":
    main()
