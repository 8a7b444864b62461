from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hcx.align.preferences import comparisons, read_preferences, tokenize_group
from hcx.align.reward_model import RewardModel, RewardStats
from hcx.model import ModelConfig, Transformer
from hcx.records import BadRecordError, ReadReport, Rejected
from hcx.tokenizer import HcxTokenizer
from hcx.tokenizer.specials import END_OF_TURN


def test_shared_pairs_read_as_two_response_groups(tok: HcxTokenizer, data_dir: Path) -> None:
    for name in ("ko.jsonl", "en.jsonl.gz"):
        report = ReadReport()
        groups = read_preferences(data_dir / "preference" / name, tok, max_len=1024, limit=50, report=report)
        assert len(groups) == 50
        assert all(g.pairs == [(0, 1)] and len(g.sequences) == 2 for g in groups)
        assert all(seq[-1] == tok.token_id(END_OF_TURN) for g in groups for seq in g.sequences)


def test_ranked_lists_give_every_comparison(tok: HcxTokenizer) -> None:
    row = {"prompt": "질문", "responses": ["가", "나", "다"], "scores": [2, 5, 1]}
    group = tokenize_group(tok, row, max_len=64)
    assert sorted(group.pairs) == [(0, 2), (1, 0), (1, 2)]
    assert comparisons([group, group]) == 6


@pytest.mark.parametrize(
    ("row", "kind"),
    [
        ({"prompt": "p", "chosen": "same", "rejected": "same"}, "chosen equals rejected"),
        ({"prompt": "p", "chosen": "a"}, "missing field"),
        ({"prompt": "p", "chosen": " ", "rejected": "b"}, "empty response"),
        ({"prompt": [{"role": "assistant", "content": "x"}], "chosen": "a", "rejected": "b"}, "bad prompt"),
        ({"prompt": "p", "responses": ["a", "b"], "scores": [1, 1]}, "no comparison"),
        ({"prompt": "p", "responses": ["a", "b"], "scores": [1]}, "bad ranking"),
        ({"prompt": "p", "chosen": "아주 " * 100, "rejected": "b"}, "longer than the context"),
    ],
)
def test_bad_rows_are_rejected(tok: HcxTokenizer, row: dict, kind: str) -> None:
    with pytest.raises(Rejected) as info:
        tokenize_group(tok, row, max_len=48)
    assert info.value.kind == kind


def test_bad_rows_counted_or_fatal_with_line(tok: HcxTokenizer, tmp_path: Path) -> None:
    path = tmp_path / "prefs.jsonl"
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a", "rejected": "a"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    report = ReadReport()
    assert len(read_preferences(path, tok, 64, report=report)) == 1
    assert report.skipped == {"chosen equals rejected": 1}
    with pytest.raises(BadRecordError, match=rf"{path}:2: chosen equals rejected"):
        read_preferences(path, tok, 64, policy="fail")


def test_head_is_the_only_new_parameter_and_random(tok: HcxTokenizer) -> None:
    cfg = ModelConfig(preset="tiny", vocab_size=tok.vocab_size, n_layers=2, max_seq_len=128)
    sft = Transformer(cfg)
    sft.init_weights(seed=0)
    sft_state = {k: v.clone() for k, v in sft.state_dict().items()}
    rm = RewardModel(sft, seed=1)
    names = {k.removeprefix("backbone.") for k in rm.state_dict()}
    assert names - set(sft_state) == {"head.weight"}
    assert set(sft_state) - names == {"output.weight"}
    for key, value in rm.backbone.state_dict().items():
        assert torch.equal(value, sft_state[key])
    other = RewardModel(Transformer(cfg), seed=2).head.weight
    assert rm.head.weight.abs().sum() > 0 and not torch.equal(rm.head.weight, other)
    tokens = torch.tensor([tok.encode("안녕하세요 반갑습니다") + [tok.pad_id] * 3])
    lengths = torch.tensor([tokens.shape[1] - 3])
    padded_more = torch.cat([tokens, torch.full((1, 4), tok.pad_id)], dim=1)
    assert torch.allclose(rm(tokens, lengths), rm(padded_more, lengths))


def test_reward_stats_normalise_clip_and_round_trip(tmp_path: Path) -> None:
    stats = RewardStats.measure(torch.tensor([1.0, 3.0]), clip=2.0)
    assert (stats.mean, stats.std) == (2.0, 1.0)
    assert stats.normalize(torch.tensor([2.0, 3.0, 10.0, -10.0])).tolist() == [0.0, 1.0, 2.0, -2.0]
    stats.save(tmp_path)
    assert RewardStats.load(tmp_path) == stats
    with pytest.raises(FileNotFoundError, match="no normalisation statistics"):
        RewardStats.load(tmp_path / "missing")
