"""Token tools: annotation tokens never split or merged, ids kept, idempotent, exact round trips."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer

from baking.common.errors import InputError
from trainer.tokens.tokenizer import (
    append_tokens,
    encode_dna,
    ids_to_target,
    init_tokenizer,
    load_tokenizer,
    read_tokens_file,
    target_to_ids,
    train_dna_tokenizer,
)

# bracketed spellings like the baker's; opaque strings to the token tools
ANNOTATION = [
    "<CDS>",
    "<tRNA>",
    "<+>",
    "<->",
    "<0>",
    "<1>",
    "<7>",
    "<9>",
    "<phase0>",
    "<|>",
    "[cut]",
]
TARGET = [
    "<CDS>",
    "<+>",
    "<0>",
    "<1>",
    "<7>",
    "<9>",
    "<phase0>",
    "<|>",
    "<tRNA>",
    "<->",
    "<9>",
    "<9>",
]


@pytest.fixture(scope="module")
def small_tokenizer_dir(tmp_path_factory):
    rng = random.Random(0)
    seq = "".join(rng.choices("ACGT", k=30_000))
    out = tmp_path_factory.mktemp("tk")
    train_dna_tokenizer([seq, "nnACGTacgtRYACGT"], 200, out)
    return out


def write_tokens(path, tokens, newline="\n"):
    path.write_text(newline.join(tokens) + newline)
    return path


def test_trained_tokenizer_has_dnabert2_layout(small_tokenizer_dir):
    tok = load_tokenizer(small_tokenizer_dir)
    assert [tok.id_to_token(i) for i in range(9)] == [
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[PAD]",
        "[MASK]",
        "A",
        "C",
        "G",
        "T",
    ]
    assert tok.get_vocab_size() == 200
    assert all(set(t) <= set("ACGT") for t, i in tok.get_vocab().items() if i >= 5)
    enc = tok.encode("ACGTTGCAAC")
    assert enc.ids[0] == 1 and enc.ids[-1] == 2
    assert "".join(enc.tokens[1:-1]) == "ACGTTGCAAC"
    assert (small_tokenizer_dir / "tokenizer_config.json").is_file()


def test_dna_is_upper_cased(small_tokenizer_dir):
    tok = load_tokenizer(small_tokenizer_dir)
    assert 0 in tok.encode("acgt", add_special_tokens=False).ids  # the raw tokenizer: [UNK]
    assert encode_dna(tok, "acgtac") == encode_dna(tok, "ACGTAC") and 0 not in encode_dna(
        tok, "acgtac"
    )


def test_read_tokens_file(tmp_path):
    path = write_tokens(tmp_path / "t.txt", ["<A1>", "", "<B>", "<A1>", "[CLS]"], newline="\r\n")
    assert read_tokens_file(path) == ["<A1>", "<B>"]
    bad = [
        (["<ok>", "<has space>"], "t.txt:2: token '<has space>' contains whitespace"),
        (["<ok>", " <lead>"], "t.txt:2: token ' <lead>' contains whitespace"),
        (["ACGT"], "t.txt:1: token 'ACGT' is plain DNA"),
        (["<x>", "\t"], "t.txt:2"),
        ([""], "no tokens"),
    ]
    for tokens, message in bad:
        write_tokens(tmp_path / "t.txt", tokens)
        with pytest.raises(InputError, match=message.replace("+", r"\+")):
            read_tokens_file(tmp_path / "t.txt")
    with pytest.raises(InputError, match="not found"):
        read_tokens_file(tmp_path / "missing.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="UTF-8"):
        read_tokens_file(tmp_path / "bin.txt")


def check_tools(base_dir, tmp_path):
    """init_tk + append_tk on a base tokenizer: ids kept, exact ids, round trips, idempotence."""
    base = load_tokenizer(base_dir)
    base_vocab = base.get_vocab(with_added_tokens=True)
    first = write_tokens(tmp_path / "new_tokens.txt", ANNOTATION[:6])
    path = init_tokenizer(first, tmp_path / "tok", base=base_dir)
    tok = load_tokenizer(path)
    n = len(base_vocab)
    assert [tok.token_to_id(t) for t in ANNOTATION[:6]] == list(range(n, n + 6))
    # every base id is untouched
    assert all(tok.token_to_id(t) == i for t, i in base_vocab.items())
    # append: only new tokens, old ids kept, idempotent and byte-stable
    more = write_tokens(tmp_path / "more.txt", ANNOTATION[3:] + ANNOTATION[:2])
    added = append_tokens(more, path)
    assert added == ANNOTATION[6:]
    snapshot = path.read_bytes()
    assert append_tokens(more, path) == [] and path.read_bytes() == snapshot
    tok = load_tokenizer(path)
    assert [tok.token_to_id(t) for t in ANNOTATION] == list(range(n, n + len(ANNOTATION)))
    assert not list(path.parent.glob(".*tmp"))
    # exact ids and round trip, and the same ids when the target goes through the text path
    ids = target_to_ids(tok, TARGET)
    assert ids_to_target(tok, ids) == TARGET
    assert tok.encode(" ".join(TARGET), add_special_tokens=False).ids == ids
    assert all(i >= n for i in ids)
    # annotation tokens are never merged with DNA around them, nor split
    enc = tok.encode("ACGTAC<CDS>GGT<7><9>T", add_special_tokens=False)
    assert "<CDS>" in enc.tokens and "<7>" in enc.tokens and "<9>" in enc.tokens
    assert all(t in ANNOTATION or set(t) <= set("ACGT") for t in enc.tokens)
    with pytest.raises(KeyError, match="<mRNA>"):
        target_to_ids(tok, ["<CDS>", "<mRNA>"])
    with pytest.raises(KeyError, match="outside"):
        ids_to_target(tok, [10**6])
    return tok


def test_tools_on_small_tokenizer(small_tokenizer_dir, tmp_path):
    check_tools(small_tokenizer_dir, tmp_path)


@pytest.mark.shared
def test_tools_on_real_dnabert2_tokenizer(dnabert2_tokenizer_dir, tmp_path):
    tok = check_tools(dnabert2_tokenizer_dir, tmp_path)
    assert tok.token_to_id("<CDS>") == 4096
    dna = "ATGAAACGCATTAGCACCACCATTACCACCACCATCACCATTACCACAGGTAACGGTGCGGGCTGA"
    plain = Tokenizer.from_file(str(dnabert2_tokenizer_dir / "tokenizer.json"))
    assert encode_dna(tok, dna) == plain.encode(dna).ids  # DNA tokenises as before


def test_errors(tmp_path, small_tokenizer_dir, monkeypatch):
    with pytest.raises(InputError, match="tokenizer.json not found"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(InputError, match="not a tokenizers JSON"):
        load_tokenizer(tmp_path)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    tokens = write_tokens(tmp_path / "t.txt", ["<x>"])
    with pytest.raises(InputError, match="pass --base"):
        init_tokenizer(tokens, tmp_path / "out", base="nobody-xyz/none")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="vocab_size"):
        train_dna_tokenizer(["ACGT"], 5)


@pytest.mark.parametrize(
    "char, name",
    [
        ("\u200b", "U+200B zero width space"),
        ("\ufeff", "U+FEFF zero width no-break space"),
        ("\u00ad", "U+00AD soft hyphen"),
        ("\u0007", "U+0007 unnamed"),
    ],
)
def test_invisible_characters_are_a_corrupt_tokens_file(tmp_path, small_tokenizer_dir, char, name):
    """A token with a zero-width space (or any format/control character) would become a vocabulary
    entry no target matches: init_tk, append_tk and the baker's token merge all refuse it."""
    from baking.formats.tokens_file import merge_tokens, read_tokens

    token = f"<C{char}DS>"
    bad = write_tokens(tmp_path / "t.txt", ["<CDS>", token])
    message = f"{bad}:2: token {token!r} contains an invisible character ({name}): corrupt file"
    for read in (read_tokens_file, read_tokens):
        with pytest.raises(InputError) as exc:
            read(bad)
        assert str(exc.value) == message
    tok_dir = tmp_path / "tok"
    with pytest.raises(InputError, match="invisible character"):
        init_tokenizer(bad, tok_dir, base=small_tokenizer_dir)
    assert not tok_dir.exists()
    good = init_tokenizer(
        write_tokens(tmp_path / "ok.txt", ["<CDS>"]), tok_dir, small_tokenizer_dir
    )
    before = good.read_bytes()
    with pytest.raises(InputError, match="invisible character"):
        append_tokens(bad, good)
    assert good.read_bytes() == before
    with pytest.raises(InputError, match="invisible character"):
        merge_tokens(bad, ["<tRNA>"])
    assert bad.read_text() == f"<CDS>\n{token}\n"
