"""stages/shared/cards.py on its own: cards parse back to what was put in, name the keys they
are given (never recomputed), point `datasets` at the rows by their sha, and the scored copy
names the distilled model, not its base."""

from __future__ import annotations

import pytest

from pipeline.config import load_config
from stages.shared.cards import (
    KEPT_CONFIG_PREFIX,
    dataset_card,
    distilled_name,
    model_card,
    parse,
    render,
    with_metrics,
)

KEYS = {"generate": "g" * 64, "filter": "f" * 64, "train": "t" * 64}


def test_render_and_parse_round_trip():
    meta = {"license": "mit", "tags": ["a", "b"], "nested": {"x": 1}}
    text = render(meta, "# Title\n\nbody\n")
    assert text.startswith("---\n") and parse(text) == (meta, "# Title\n\nbody\n")
    assert parse("no metadata here") == ({}, "no metadata here")


def test_dataset_card_names_the_given_keys_and_the_rows_sha():
    cfg = load_config(None)
    report = {"input": 5, "kept": 3, "reasons": {"wrong_answer": 2}, "pass_rate": {}}
    meta, body = parse(
        dataset_card(
            cfg,
            report,
            [10, 20, 30],
            {},
            KEYS,
            {"train": 9, "validation": 2, "eval": 3},
            {},
            "ab" * 32,
        )
    )
    assert meta["distill"] == {"generate_key": KEYS["generate"], "filter_key": KEYS["filter"]}
    assert meta["configs"] == [
        {
            "config_name": KEPT_CONFIG_PREFIX + "ab" * 6,
            "data_files": [{"split": "train", "path": "kept.jsonl"}],
        }
    ]
    assert (
        "9 train questions, 2 held out of\n  train for validation" in body
        and "median\n  20" in body
    )


def test_scored_card_names_the_distilled_model():
    cfg = load_config(None, ["train.student=/models/tiny"])
    card = model_card(cfg, {"steps": 4, "final_loss": 1.5}, KEYS, examples=3)
    metrics = {
        "task": "arith",
        "questions": 10,
        "per_model": {
            "student": {"accuracy": 0.8, "ci_low": 0.5, "ci_high": 0.9, "n": 10},
            "base": {"accuracy": 0.2, "ci_low": 0.1, "ci_high": 0.5, "n": 10},
        },
        "mcnemar": {"student_vs_base": {"p_value": 0.03}},
    }
    meta, body = parse(with_metrics(card, "student", metrics))
    assert meta["base_model"] == "tiny"
    (entry,) = meta["model-index"]
    assert entry["name"] == f"tiny-distilled-{'t' * 12}" != meta["base_model"]
    assert entry["results"][0]["metrics"][0]["value"] == 0.8
    assert "student vs base: p = 0.03" in body and "Not evaluated yet" not in body


@pytest.mark.parametrize(
    "meta, name",
    [
        (
            {
                "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                "distill": {"train_key": "k" * 64},
            },
            "SmolLM2-135M-Instruct-distilled-kkkkkkkkkkkk",
        ),
        ({"base_model": "tiny"}, "student"),  # no key: the label, never the base's name
    ],
)
def test_distilled_name(meta, name):
    assert distilled_name(meta, "student") == name
