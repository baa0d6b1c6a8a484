"""XLM-R sentencepiece tokenizer of BEiT-3 (via ``transformers.XLMRobertaTokenizer``)."""

from __future__ import annotations

import os
import shutil
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import torch


class TextError(ValueError):
    """A command cannot be encoded (empty, too long, not text)."""


@dataclass
class TokenizedText:
    """ids [1, L] (``<s> ... </s>``) and padding [1, L] (all False for one command)."""

    text: str
    ids: torch.Tensor
    padding: torch.Tensor

    @property
    def length(self) -> int:
        return self.ids.shape[1]


def normalize_command(text: object) -> str:
    """Unicode NFC, whitespace collapsed; raises ``TextError`` on non-text or empty input."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TextError(f"command is not valid UTF-8: {exc}") from exc
    if not isinstance(text, str):
        raise TextError(f"command must be a string, got {type(text).__name__}")
    text = " ".join(unicodedata.normalize("NFC", text).split())
    if not text:
        raise TextError("command is empty")
    return text


class TextTokenizer:
    """Tokenises referring expressions for BEiT-3.

    Arguments:
      path: the sentencepiece model (``beit3.spm``) or a Hugging Face tokenizer folder
        (e.g. the one saved next to released weights). Loaded offline.
      max_len: longest accepted sequence including ``<s>`` and ``</s>``.
      vocab_size: the encoder's vocabulary; ids at or beyond it are rejected at load time.
    """

    def __init__(self, path: str | os.PathLike, *, max_len: int, vocab_size: int | None = None) -> None:
        from transformers import XLMRobertaTokenizer

        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"tokenizer not found: {p} (the XLM-R sentencepiece model beit3.spm, or a tokenizer folder)")
        try:
            if p.is_dir():
                self._tok = XLMRobertaTokenizer.from_pretrained(str(p), local_files_only=True)
            else:
                # transformers reads a sentencepiece model only under its canonical file name
                with tempfile.TemporaryDirectory() as tmp:
                    shutil.copyfile(p, Path(tmp) / "sentencepiece.bpe.model")
                    self._tok = XLMRobertaTokenizer.from_pretrained(tmp, local_files_only=True)
        except Exception as exc:  # corrupt or foreign file
            raise ValueError(f"cannot load tokenizer from {p}: {exc}") from exc
        if len(self._tok) <= 5:
            raise ValueError(f"tokenizer {p} has no vocabulary (is it a sentencepiece model?)")
        if vocab_size is not None and len(self._tok) > vocab_size:
            raise ValueError(f"tokenizer {p} has {len(self._tok)} tokens but the model's vocabulary is {vocab_size}")
        self.max_len = max_len
        self.path = p

    def __len__(self) -> int:
        return len(self._tok)

    @property
    def pad_id(self) -> int:
        return self._tok.pad_token_id

    @property
    def special_ids(self) -> tuple[int, ...]:
        """<s>, </s>, <pad>, <unk>, ...: ids that are no word of a command."""
        return tuple(sorted(set(self._tok.all_special_ids)))

    def encode(self, text: object) -> TokenizedText:
        """Tokenise one command; ``TextError`` when it is empty or longer than ``max_len``."""
        text = normalize_command(text)
        ids = self._tok(text).input_ids
        if len(ids) > self.max_len:
            raise TextError(
                f"command is {len(ids)} tokens long, the limit is {self.max_len} (including <s> and </s>): {text[:60]!r}"
            )
        ids_t = torch.tensor([ids], dtype=torch.long)
        return TokenizedText(text=text, ids=ids_t, padding=torch.zeros_like(ids_t, dtype=torch.bool))

    def encode_batch(self, texts: list[object]) -> tuple[torch.Tensor, torch.Tensor]:
        """Several commands padded to one length: ids [B, L], padding [B, L]."""
        return self.pad([self.encode(t) for t in texts])

    def pad(self, items: list[TokenizedText]) -> tuple[torch.Tensor, torch.Tensor]:
        """Already tokenised commands padded to one length: ids [B, L], padding [B, L]."""
        length = max(i.length for i in items)
        ids = torch.full((len(items), length), self.pad_id, dtype=torch.long)
        padding = torch.ones((len(items), length), dtype=torch.bool)
        for row, item in enumerate(items):
            ids[row, : item.length] = item.ids[0]
            padding[row, : item.length] = False
        return ids, padding


def train_sentencepiece(sentences: list[str], path: str | os.PathLike, *, vocab_size: int) -> Path:
    """Train a small unigram sentencepiece model (the format of ``beit3.spm``) on ``sentences``.
    Used for the bundled CPU tokenizer and by tests; the paper models use the official one."""
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=buf,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        model_type="unigram",
        character_coverage=1.0,
        minloglevel=2,
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buf.getvalue())
    return out


def referring_expression_corpus(n: int = 4000, seed: int = 0) -> list[str]:
    """Synthetic referring expressions ("the red mug on the left") to train a small tokenizer."""
    import random

    rng = random.Random(seed)
    colors = "red blue green yellow black white orange purple pink brown grey gray silver".split()
    sizes = "small big large tiny tall short little".split()
    things = (
        "mug cup bottle dog cat person man woman child boy girl car bike bicycle ball table chair box "
        "book phone laptop robot bird horse cow sheep bear zebra giraffe elephant truck bus train boat "
        "plane kite umbrella bag backpack hat shoe apple banana orange spoon knife fork bowl plate door"
    ).split()
    places = (
        "on the left|on the right|in the middle|in the front|in the back|at the top|at the bottom|"
        "next to the table|behind the chair|near the door|on the floor|in the hand of the man"
    ).split("|")
    actions = (
        "running towards the camera|walking away|sitting down|jumping|turning around|being held|"
        "moving to the left|moving to the right|standing still|lying on the ground|eating|flying"
    ).split("|")
    out = []
    for _ in range(n):
        words = ["the"]
        if rng.random() < 0.6:
            words.append(rng.choice(sizes if rng.random() < 0.3 else colors))
        words.append(rng.choice(things))
        if rng.random() < 0.6:
            words.append(rng.choice(places))
        if rng.random() < 0.5:
            words.append(("which is " if rng.random() < 0.3 else "") + rng.choice(actions))
        out.append(" ".join(words))
    return out
