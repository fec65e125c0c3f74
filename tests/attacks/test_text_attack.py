"""BERT-Attack style text attack: candidate generators (incl. a tiny random BERT MLM) and its effect."""

from __future__ import annotations

import pytest
import torch

from mmsec.attacks.text import (
    BertAttack,
    Candidates,
    CharacterEdits,
    LexicalNeighbours,
    MaskedLMCandidates,
    fused_embedder,
    kl_from,
    text_tower_embedder,
)
from mmsec.data.shapes_text import shapes_lexical_groups
from mmsec.evaluation import shapes_itm_pairs

WORDS = "a small cyan square in the bottom right".split()
GROUPS = shapes_lexical_groups()  # the shapes world's interchangeable words, handed to the attack by the caller


def test_lexical_neighbours_stay_in_the_word_group():
    lex = LexicalNeighbours(GROUPS)
    colours = lex(WORDS, 2, 10)
    assert colours and "cyan" not in colours and all(c in lex.group_of and "red" in lex.group_of[c] for c in colours)
    assert set(lex(WORDS, 3, 10)) <= {"circle", "triangle", "diamond", "cross", "ring"}
    assert lex(WORDS, 6, 10) == ["top"]
    assert lex(WORDS, 4, 10) == []  # "in" has no group


def test_character_edits_are_deterministic_typos():
    edits = CharacterEdits(seed=0)(WORDS, 3, 5)
    assert len(edits) == 5 and "square" not in edits and edits == CharacterEdits(seed=0)(WORDS, 3, 5)
    assert all(abs(len(e) - len("square")) <= 1 for e in edits)
    assert CharacterEdits()(WORDS, 0, 5) == []  # too short


def test_candidates_combine_without_duplicates():
    both = Candidates.default(GROUPS)(WORDS, 2, 10)
    assert len(both) == 10 and len(set(both)) == 10
    assert both[:7] == LexicalNeighbours(GROUPS)(WORDS, 2, 10)  # neighbours first, then typos
    assert Candidates.default()(WORDS, 2, 10) == CharacterEdits()(WORDS, 2, 10)  # no word groups: typos alone


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    """A tiny random-weight BERT masked LM over the shapes vocabulary, saved as safetensors."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    from mmsec.zoo.train import shapes_vocabulary

    path = tmp_path_factory.mktemp("tiny-bert")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = specials + sorted({w for w in shapes_vocabulary() if w.isalpha()} - set(specials))
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(str(path))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=32)
    BertForMaskedLM(cfg).save_pretrained(str(path), safe_serialization=True)
    return path


def test_masked_lm_candidates_from_a_local_directory(tiny_bert_dir):
    mlm = MaskedLMCandidates(tiny_bert_dir, min_score=-1e9)
    subs = mlm(WORDS, 3, 5)
    assert 0 < len(subs) <= 5 and "square" not in subs
    assert all(s.isalpha() and not s.startswith("##") and s not in {"a", "the", "in"} for s in subs)
    assert mlm(WORDS, 3, 5) == subs  # deterministic
    assert MaskedLMCandidates(tiny_bert_dir, min_score=1e9)(WORDS, 3, 5) == []  # the score threshold applies


def test_masked_lm_refuses_pickle_only_and_missing_directories(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        MaskedLMCandidates(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match="safetensors"):
        MaskedLMCandidates(tmp_path)


def test_bert_attack_with_an_mlm_generator_runs_end_to_end(tiny_bert_dir, zoo_resnet):
    attack = BertAttack(candidates=MaskedLMCandidates(tiny_bert_dir, min_score=-1e9))
    result = attack(text_tower_embedder(zoo_resnet), [" ".join(WORDS)])
    assert result.words_changed[0] <= 1 and result.queries > 0


@pytest.fixture(scope="module")
def albef():
    from mmsec.zoo import load_model

    return load_model("shapes-albef")


def test_bert_attack_moves_the_embedding_far_more_than_random_substitutions(albef):
    """The chosen word and substitute beat a random word and random substitute of the same budget."""
    pairs = shapes_itm_pairs("test", n=32)
    caps, pixels = pairs.captions[:32], pairs.pixels[:32]
    embed = fused_embedder(albef, pixels)
    result = BertAttack(max_words=1, neighbours=GROUPS)(embed, caps)
    assert all(n == 1 for n in result.words_changed)  # every caption has an attackable word
    assert all(c != a for c, a in zip(caps, result.adv_texts, strict=True))
    with torch.no_grad():
        original = embed(caps, list(range(32)))
        score = kl_from(original)
        attacked = torch.stack([score(embed([t], [i]), i)[0] for i, t in enumerate(result.adv_texts)])
        gen, rng = Candidates.default(GROUPS), torch.Generator().manual_seed(0)
        randoms = []
        for i, c in enumerate(caps):
            words = c.split()
            pos = [p for p in range(len(words)) if gen(words, p, 10)]
            p = pos[int(torch.randint(len(pos), (1,), generator=rng))]
            subs = gen(words, p, 10)
            words[p] = subs[int(torch.randint(len(subs), (1,), generator=rng))]
            randoms.append(score(embed([" ".join(words)], [i]), i)[0])
    randoms = torch.stack(randoms)
    # measured: 1.58 vs 0.93 on average; the attack's choice is at least as good on every caption
    assert attacked.mean() >= randoms.mean() + 0.4, (attacked.mean(), randoms.mean())
    assert (attacked >= randoms - 1e-5).float().mean() >= 0.9


def test_budget_and_bad_input():
    with pytest.raises(TypeError, match="max_words"):
        BertAttack(max_words=1.5)
    with pytest.raises(ValueError, match="needs neighbours"):
        BertAttack(candidates="lexical")
    with pytest.raises(ValueError, match="candidates must be one of"):
        BertAttack(candidates="synonyms")
    with pytest.raises(ValueError, match=r"neighbours\[0\]"):
        BertAttack(neighbours=[["top left", "top right"]])
    with pytest.raises(ValueError, match="non-empty"):
        BertAttack()(lambda t, r: torch.zeros(len(t), 4), [])
    unchanged = BertAttack(max_words=0)(lambda t, r: torch.randn(len(t), 4), ["a red circle"])
    assert unchanged.adv_texts == ["a red circle"] and unchanged.words_changed == [0]
