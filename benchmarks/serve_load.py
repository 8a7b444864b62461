"""Load test of ``hcx serve`` (issue 9): the HTTP server against the same engine called in-process.

The same chat prompts (Korean SFT user turns from the shared data) and the same
``max_tokens`` go two ways, at 1, 8 and 64 concurrent clients (each client sends its next
request when the previous one is done):

1. in-process: ``AsyncEngine`` on the model, in this process, one asyncio task per client;
2. server: ``hcx serve`` in a subprocess on loopback, one keep-alive connection per
   simulated user (a minimal HTTP/1.1 client, see :class:`Connection`), streaming (SSE, what
   the web chat uses) or not (``--no-stream``).

Both use the same engine settings, dtype and torch threads; outputs ignore end-of-turn
(``ignore_eos``) so every request generates exactly ``max_tokens`` tokens on both sides,
checked from the usage the server reports. Both stream with the same ``--stream-interval``
(the server's default unless given): the first token at once, then a chunk per that many
tokens. Requests/s and p50/p95 latency (request sent → last token received) are printed side
by side with the server overhead (in-process requests/s ÷ server requests/s − 1); the goal is
≤ 10 % at 64 clients. So are time to first token (request sent → first text received) and
inter-token latency (the gap between consecutive pieces of text a client receives, one per
chunk), p50 and p99, as serving benchmarks report them. Beside wall time,
each side's engine steps (equal when the server keeps its batch as full as the in-process
loop) and CPU seconds (server process, in-process run, load generator) are printed: on a
shared machine the CPU figures are the steadier comparison. The two sides run
``--repeats`` times, interleaved, and the fastest of each is kept.

    .venv/bin/python benchmarks/serve_load.py                        # runs/tiny/{ppo,sft}/hf or a fresh export
    .venv/bin/python benchmarks/serve_load.py --checkpoint DIR --threads 4 --max-tokens 128
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import torch
from machine import describe
from rich.console import Console
from rich.table import Table

from hcx.infer.async_engine import AsyncEngine
from hcx.infer.config import EngineConfig
from hcx.infer.engine import Engine
from hcx.infer.prompts import read_user_turns
from hcx.infer.sampling import SamplingParams
from hcx.model import ModelConfig, Transformer
from hcx.model.hf import export_hf
from hcx.model.load import load_model
from hcx.paths import find_data_dir
from hcx.serve.api import ApiConfig
from hcx.tokenizer import train_tokenizer

console = Console(width=130)
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    seconds: float
    latencies: list[float]
    first_token: list[float]
    inter_token: list[float]
    steps: int = 0
    cpu: float = 0.0
    client_cpu: float = 0.0

    @property
    def requests_per_s(self) -> float:
        return len(self.latencies) / self.seconds

    def quantile(self, q: float, of: str = "latencies") -> float:
        values = getattr(self, of)
        if len(values) < 2:
            return values[0] if values else float("nan")
        return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def find_checkpoint(tmp: Path, data_dir: Path) -> Path:
    for candidate in (REPO / "runs/tiny/ppo/hf", REPO / "runs/tiny/sft/hf"):
        if (candidate / "config.json").is_file():
            return candidate
    console.print("no runs/tiny/{ppo,sft}/hf: exporting a random tiny model with a small tokenizer ...")
    files = [data_dir / "pretrain" / f"{lang}.jsonl.gz" for lang in ("ko", "en")]
    tokenizer_dir = train_tokenizer(
        files=files, vocab_size=4096, output_dir=tmp / "tok", max_bytes_per_file=300_000
    )
    from hcx.tokenizer import load

    model = Transformer(
        ModelConfig(preset="tiny", vocab_size=load(tokenizer_dir).vocab_size, max_seq_len=1024)
    )
    model.init_weights(seed=0)
    return export_hf(model, tmp / "hf", tokenizer_dir)


async def closed_loop(clients: int, requests: int, send: Callable[[int], Awaitable[list[float]]]) -> Result:
    """``clients`` workers share ``requests`` requests, each sending its next when the last is done.

    ``send`` returns when each piece of text arrived (``time.perf_counter()``).
    """
    result = Result(0.0, [], [], [])
    next_request = iter(range(requests))

    async def worker() -> None:
        for index in next_request:
            started = time.perf_counter()
            arrivals = await send(index)
            result.latencies.append(time.perf_counter() - started)
            result.first_token.append(arrivals[0] - started)
            result.inter_token += [b - a for a, b in itertools.pairwise(arrivals)]

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    result.seconds = time.perf_counter() - started
    return result


def run_in_process(
    engine: Engine,
    prompts: list[list[int]],
    max_tokens: int,
    clients: int,
    requests: int,
    stream_interval: int,
) -> Result:
    params = SamplingParams(max_new_tokens=max_tokens, temperature=0.0, stop_token_ids=[])

    async def main() -> Result:
        streams = AsyncEngine(engine, stream_interval)

        async def send(index: int) -> list[float]:
            tokens, arrivals = 0, []
            async for delta in streams.stream(prompts[index % len(prompts)], params):
                tokens += len(delta.token_ids)
                if delta.text:
                    arrivals.append(time.perf_counter())
            assert tokens == max_tokens
            return arrivals

        try:
            return await closed_loop(clients, requests, send)
        finally:
            await streams.close()

    steps, cpu = engine.num_steps, time.process_time()
    result = asyncio.run(main())
    result.steps, result.cpu = engine.num_steps - steps, time.process_time() - cpu
    return result


class Connection:
    """A keep-alive HTTP/1.1 connection that POSTs JSON and reads whole responses, chunked or not.

    The load generator must cost less than what it measures: on a small box ``httpx`` spends
    more CPU parsing 64 streams line by line than the server spends producing them, and a
    client that lags leaves the server's batch slots empty. This is what ``wrk`` would do.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        return cls(*await asyncio.open_connection(host, port))

    async def post(self, path: str, body: bytes, arrivals: list[float]) -> bytes:
        """The response body; ``arrivals`` gets when each chunk with text (or the whole body) arrived."""
        head = f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        self.writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status = await self.reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"server answered {status!r}")
        headers = {}
        while (line := await self.reader.readline()) != b"\r\n":
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            whole = await self.reader.readexactly(int(headers["content-length"]))
            arrivals.append(time.perf_counter())
            return whole
        chunks = []
        while size := int((await self.reader.readline()).strip(), 16):
            chunk = await self.reader.readexactly(size)
            if b'"content":"' in chunk and b'"content":""' not in chunk:
                arrivals.append(time.perf_counter())
            chunks.append(chunk)
            await self.reader.readexactly(2)
        await self.reader.readline()
        return b"".join(chunks)

    def close(self) -> None:
        self.writer.close()


def usage_of(body: bytes, stream: bool) -> dict:
    if not stream:
        return json.loads(body)["usage"]
    events = [e for e in body.split(b"\n\n") if b'"usage"' in e]
    return json.loads(events[-1].removeprefix(b"data: "))["usage"]


def run_server(
    server: psutil.Process,
    url: str,
    messages: list[list[dict]],
    max_tokens: int,
    clients: int,
    requests: int,
    stream: bool,
) -> Result:
    """Requests to the server; its CPU time is read from the process, the clients' from this one."""
    address = httpx.URL(url)
    bodies = [
        json.dumps(
            {
                "messages": m,
                "max_tokens": max_tokens,
                "temperature": 0,
                "ignore_eos": True,
                "stream": stream,
                "stream_options": {"include_usage": True} if stream else None,
            }
        ).encode()
        for m in messages
    ]

    async def main() -> Result:
        idle: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(clients):
            idle.put_nowait(await Connection.open(address.host, address.port))

        async def send(index: int) -> list[float]:
            connection, arrivals = await idle.get(), []
            body = await connection.post("/v1/chat/completions", bodies[index % len(bodies)], arrivals)
            idle.put_nowait(connection)
            assert usage_of(body, stream)["completion_tokens"] == max_tokens
            return arrivals

        try:
            return await closed_loop(clients, requests, send)
        finally:
            while not idle.empty():
                idle.get_nowait().close()

    steps, cpu, client_cpu = _steps(url), _cpu(server), time.process_time()
    result = asyncio.run(main())
    result.steps, result.cpu = _steps(url) - steps, _cpu(server) - cpu
    result.client_cpu = time.process_time() - client_cpu
    return result


def _steps(url: str) -> int:
    return httpx.get(f"{url}/health").json()["steps"]


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def start_server(checkpoint: Path, args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "hcx.cli", "serve", str(checkpoint), "--port", str(port)]
    command += ["--max-batch", str(args.max_batch), "--device", args.device, "--dtype", args.dtype]
    command += ["--stream-interval", str(args.stream_interval)]
    command += ["--set", f"threads={args.threads}", "--set", "log_level=warning"]
    process = subprocess.Popen(command, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return process, url
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("hcx serve did not start") from None
            time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="HF export dir (default: runs/tiny/...)"
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument(
        "--requests-per-client", type=int, default=4, help="requests = max(16, this × clients)"
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads on both sides")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--stream-interval",
        type=int,
        default=ApiConfig.model_fields["stream_interval"].default,
        help="tokens per streamed chunk on both sides (default: the server's)",
    )
    parser.add_argument("--no-stream", dest="stream", action="store_false", help="non-streaming requests")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data_dir = find_data_dir(required=True)
    assert data_dir is not None

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or find_checkpoint(Path(tmp), data_dir)
        device = torch.device(args.device)
        model, tok = load_model(checkpoint, device, getattr(torch, args.dtype)).pair()
        turns = read_user_turns(data_dir / "sft" / "ko.jsonl.gz", limit=64, every=97)
        messages = [[{"role": "user", "content": turn}] for turn in turns]
        prompts = [tok.encode_chat({"messages": m}, add_generation_prompt=True).ids for m in messages]
        prompts, messages = zip(
            *[(p, m) for p, m in zip(prompts, messages, strict=True) if len(p) + args.max_tokens <= 1024],
            strict=True,
        )
        lengths = sorted(map(len, prompts))
        console.print(describe(device))
        console.print(
            f"model {checkpoint} ({model.cfg.num_params() / 1e6:.1f}M params, {args.device} {args.dtype}, "
            f"{args.threads} thread(s)); {len(prompts)} Korean chat prompts of {lengths[0]}-{lengths[-1]} "
            f"tokens (median {lengths[len(lengths) // 2]}), {args.max_tokens} tokens each, "
            f"{'streaming' if args.stream else 'non-streaming'}, stream interval {args.stream_interval}"
        )
        engine_cfg = EngineConfig(max_running=args.max_batch)
        process, url = start_server(checkpoint, args)
        server = psutil.Process(process.pid)
        try:
            run_server(server, url, list(messages), 4, 4, 8, args.stream)
            run_in_process(Engine(model, tok, engine_cfg), list(prompts), 4, 4, 8, args.stream_interval)
            rows = []
            for clients in args.clients:
                requests = max(16, args.requests_per_client * clients)
                local, remote = [], []
                for _ in range(args.repeats):
                    engine = Engine(model, tok, engine_cfg)
                    local.append(
                        run_in_process(
                            engine, list(prompts), args.max_tokens, clients, requests, args.stream_interval
                        )
                    )
                    remote.append(
                        run_server(
                            server, url, list(messages), args.max_tokens, clients, requests, args.stream
                        )
                    )
                best_local = min(local, key=lambda r: r.seconds)
                best_remote = min(remote, key=lambda r: r.seconds)
                rows.append((clients, requests, best_local, best_remote))
                console.print(
                    f"  {clients:>2} clients: in-process {best_local.requests_per_s:.2f} req/s, "
                    f"server {best_remote.requests_per_s:.2f} req/s"
                )
        finally:
            process.terminate()
            process.wait(timeout=60)

    table = Table(
        title=f"hcx serve vs in-process engine, {args.max_tokens} tokens per request, best of {args.repeats}"
    )
    columns = ["clients", "requests"]
    columns += ["in-proc req/s", "p50 s", "p95 s", "steps", "CPU s"]
    columns += ["server req/s", "p50 s", "p95 s", "steps", "CPU s", "client CPU s", "overhead"]
    for column in columns:
        table.add_column(column, justify="right")
    for clients, requests, local, remote in rows:
        table.add_row(
            str(clients),
            str(requests),
            *_timing(local),
            *_timing(remote),
            f"{remote.client_cpu:.2f}",
            f"{local.requests_per_s / remote.requests_per_s - 1:+.1%}",
        )
    console.print(table)
    latency = Table(
        title="time to first token and inter-token latency (ms; one gap per chunk of text received)"
    )
    for column in ["clients", "in-proc TTFT p50", "p99", "ITL p50", "p99"]:
        latency.add_column(column, justify="right")
    for column in ["server TTFT p50", "p99", "ITL p50", "p99"]:
        latency.add_column(column, justify="right")
    for clients, _, local, remote in rows:
        latency.add_row(str(clients), *_token_latency(local), *_token_latency(remote))
    console.print(latency)
    clients, requests, local, remote = rows[-1]
    tokens = requests * args.max_tokens
    overhead = local.requests_per_s / remote.requests_per_s - 1
    console.print(
        f"server overhead at {clients} clients: {overhead:+.1%} requests/s "
        f"(in-process {local.requests_per_s:.2f} vs server {remote.requests_per_s:.2f}), "
        f"p50 latency x{remote.quantile(0.5) / local.quantile(0.5):.2f}; goal <= 10 %. "
        f"Server CPU {remote.cpu:.2f} s vs in-process {local.cpu:.2f} s "
        f"({remote.cpu / local.cpu - 1:+.0%}); engine steps {remote.steps} vs {local.steps} "
        f"(tokens per step {tokens / max(remote.steps, 1):.1f} vs {tokens / max(local.steps, 1):.1f})"
    )


def _token_latency(result: Result) -> list[str]:
    return [
        f"{1000 * result.quantile(q, of):.1f}" for of in ("first_token", "inter_token") for q in (0.5, 0.99)
    ]


def _timing(result: Result) -> list[str]:
    return [
        f"{result.requests_per_s:.2f}",
        f"{result.quantile(0.5):.3f}",
        f"{result.quantile(0.95):.3f}",
        str(result.steps),
        f"{result.cpu:.2f}",
    ]


if __name__ == "__main__":
    main()
