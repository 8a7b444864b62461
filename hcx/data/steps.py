"""The datatrove pipeline steps hcx adds: metering, PII, token counts, mix index, mixing, shard I/O."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

from hcx.data.config import SEGMENTS
from hcx.data.mix import MixPlan, copies, doc_uniform
from hcx.data.pii import scrub

SHARD = "${rank}.jsonl.gz"


class Meter(PipelineStep):
    """Counts documents and UTF-8 bytes passing a point of the pipeline, in total and per segment."""

    type = "📊 - METER"

    def __init__(self, point: str):
        self.name = f"at {point}"  # before super().__init__, which names the stats after it
        super().__init__()
        self.point = point

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            n_bytes = len(doc.text.encode("utf-8"))
            segment = doc.metadata.get("segment", "?")
            self.stat_update("docs", f"docs.{segment}", f"docs.source.{doc.metadata.get('source')}")
            self.stat_update("bytes", f"bytes.{segment}", value=n_bytes)
            if "n_tokens" in doc.metadata:
                self.stat_update("tokens", f"tokens.{segment}", value=doc.metadata["n_tokens"])
            yield doc


class PIIScrubber(PipelineStep):
    """Masks PII in place (hcx.data.pii) and counts replacements per type."""

    type = "✂️ - FORMAT"
    name = "🔒 PII scrub"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            with self.track_time():
                doc.text, found = scrub(doc.text)
            if found:
                self.stat_update("docs_with_pii")
                for kind, n in found.items():
                    self.stat_update(f"pii.{kind}", value=n)
            yield doc


class TokenCounter(PipelineStep):
    """Stores ``n_tokens`` per document: HF ``tokenizer.json`` tokens, or UTF-8 bytes without one."""

    type = "🔢 - TOKENS"
    name = "🔢 Token count"

    def __init__(self, tokenizer_file: str | None, batch_size: int = 256):
        super().__init__()
        self.tokenizer_file = tokenizer_file
        self.batch_size = batch_size

    def _batches(self, data: DocumentsPipeline) -> Iterator[list[Document]]:
        batch: list[Document] = []
        for doc in data:
            batch.append(doc)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        tokenizer = None
        if self.tokenizer_file:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(self.tokenizer_file)
        for batch in self._batches(data):
            with self.track_time("batch"):
                if tokenizer is None:
                    counts = [len(doc.text.encode("utf-8")) for doc in batch]
                else:
                    encodings = tokenizer.encode_batch([doc.text for doc in batch], add_special_tokens=False)
                    counts = [len(e.ids) for e in encodings]
            for doc, n in zip(batch, counts, strict=True):
                doc.metadata["n_tokens"] = n
                yield doc


class MixIndexWriter(PipelineStep):
    """Writes (segment, tokens, weight, u) per document for the mix plan; passes documents on."""

    type = "🔢 - TOKENS"
    name = "🗂 Mix index"

    def __init__(self, folder: str, seed: int):
        super().__init__()
        self.folder = folder
        self.seed = seed

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        rows: dict[str, list[tuple[float, float, float]]] = {s: [] for s in SEGMENTS}
        for doc in data:
            meta = doc.metadata
            rows[meta["segment"]].append((meta["n_tokens"], meta["weight"], doc_uniform(doc.id, self.seed)))
            yield doc
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        arrays = {s: np.array(r, dtype=np.float64).reshape(-1, 3) for s, r in rows.items()}
        np.savez(Path(self.folder) / f"{rank:05d}.npz", **arrays)


def load_mix_index(folder: str) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SEGMENTS}
    for path in sorted(Path(folder).glob("*.npz")):
        with np.load(path) as npz:
            for s in SEGMENTS:
                parts[s].append(npz[s])
    index = {}
    for s, chunks in parts.items():
        table = np.concatenate(chunks) if chunks else np.zeros((0, 3))
        index[s] = (table[:, 0], table[:, 1], table[:, 2])
    return index


class Mixer(PipelineStep):
    """Repeats or drops each document per the mix plan; shuffles within a buffer before writing."""

    type = "🎛 - MIX"
    name = "🎛 Mix"

    def __init__(self, plan_file: str, shuffle_buffer: int):
        super().__init__()
        self.plan_file = plan_file
        self.shuffle_buffer = shuffle_buffer

    def _repeated(self, data: DocumentsPipeline, plan: MixPlan) -> Iterator[Document]:
        for doc in data:
            meta = doc.metadata
            n = copies(plan.rates[meta["segment"]] * meta["weight"], doc_uniform(doc.id, plan.seed))
            self.stat_update("in")
            if n == 0:
                self.stat_update("dropped")
            for k in range(n):
                self.stat_update("out")
                yield doc if k == 0 else Document(text=doc.text, id=f"{doc.id}#{k}", metadata=dict(meta))

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        plan = MixPlan.load(Path(self.plan_file))
        rng = random.Random(plan.seed * 1_000_003 + rank)
        buffer: list[Document] = []
        for doc in self._repeated(data, plan):
            if len(buffer) < self.shuffle_buffer:
                buffer.append(doc)
                continue
            i = rng.randrange(len(buffer))
            buffer[i], doc = doc, buffer[i]
            yield doc
        rng.shuffle(buffer)
        yield from buffer


class ShardReader(JsonlReader):
    """Reads the shard this task wrote in an earlier stage (``<rank>.jsonl.gz``), if any.

    Dedup filters address documents by their position in the task's stream, so each task
    must read back exactly its own shard, even when other tasks wrote none.
    """

    def __init__(self, folder: str):
        super().__init__(folder, doc_progress=False, file_progress=False, add_file_path=False)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        shard = f"{rank:05d}.jsonl.gz"
        if self.data_folder.isfile(shard):
            yield from self.read_files_shard([shard])


def shard_writer(folder: str) -> JsonlWriter:
    return JsonlWriter(folder, output_filename=SHARD, compression="gzip")


OUTPUT_FIELDS = ("segment", "language", "source", "origin")


def _corpus_record(self, document: Document) -> dict:
    record = {"text": document.text, "id": document.id}
    record.update({k: document.metadata[k] for k in OUTPUT_FIELDS})
    record["n_tokens"] = document.metadata.get("n_tokens")
    return record


def corpus_writer(folder: str) -> JsonlWriter:
    """The final shards: one flat JSON object per line (text, id, segment, language, source, ...)."""
    return JsonlWriter(folder, output_filename=SHARD, compression="gzip", adapter=_corpus_record)
