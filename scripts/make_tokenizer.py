"""Train the bundled CPU tokenizer, ``assets/tokenizer/cpu_small_words.spm`` (a unigram sentencepiece
model in the format of BEiT-3's ``beit3.spm``; the paper models use the official one).

    .venv/bin/python scripts/make_tokenizer.py [--out assets/tokenizer/cpu_small_words.spm]

The corpus is everyday referring expressions (``core.text.referring_expression_corpus``) plus
every word of the synthetic benchmark (its colours, sizes, shapes, spatial and motion phrases),
some sentences also capitalised, so that a command's words are whole pieces: the first bundled
tokenizer (sentencepiece's unigram trainer, which kept only 155 pieces of that corpus) cut "circle"
into six letters and "red" into three pieces, and mapped capital letters to <unk>.

How: sentencepiece's BPE trainer picks the pieces (frequent words whole), then the model is
rewritten as a *unigram* model whose scores are the log frequencies of the pieces in the BPE
segmentation of the corpus. Unigram because transformers (5.x) reads every sentencepiece model
as unigram (XLM-R's is one): a BPE model's scores read that way segment "the" as "t" + "he". A 2-layer text encoder
trained from scratch had to learn to spell before it could ground a word (docs/training_experiments.md).
The script fails when a benchmark word is not a single piece.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mpg_sam2_ros.core.text import TextTokenizer, referring_expression_corpus  # noqa: E402
from mpg_sam2_ros.training import synthetic as syn  # noqa: E402


# every spatial and motion phrase of the benchmark, in a fixed order
PHRASES = [p for ps in (*syn.MOTION_PHRASES.values(), *syn.SPATIAL_PHRASES.values()) for p in ps]


def benchmark_expressions(n: int, seed: int) -> list[str]:
    """Expressions in the benchmark's four templates, drawn from its vocabulary."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        color, shape = rng.choice(list(syn.COLORS)), rng.choice(syn.SHAPES)
        size = rng.choice(list(syn.SIZES)) + " " if rng.random() < 0.3 else ""
        tail = " " + rng.choice(PHRASES) if rng.random() < 0.7 else ""
        out.append(f"the {size}{color} {shape}{tail}")
    return out


def corpus(seed: int = 0) -> list[str]:
    sentences = referring_expression_corpus(4000, seed=seed) + benchmark_expressions(4000, seed=seed + 1)
    capitals = [s[:1].upper() + s[1:] for s in sentences[::4]] + [s.title() for s in sentences[1::40]]
    return sentences + capitals + [s.upper() for s in sentences[2::40]]


def benchmark_words() -> set[str]:
    return set(itertools.chain(["the"], syn.COLORS, syn.SHAPES, syn.SIZES, *(p.split() for p in PHRASES)))


def train_unigram_from_bpe(sentences: list[str], out: Path, vocab_size: int) -> Path:
    """BPE pieces, unigram model: see the module docstring."""
    import collections
    import io
    import math

    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=buf, vocab_size=vocab_size,
                                   hard_vocab_limit=False, model_type="bpe", character_coverage=1.0, minloglevel=2)
    bpe = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    counts = collections.Counter(p for s in sentences for p in bpe.encode(s, out_type=str))
    total = sum(counts.values())
    model = pb.ModelProto()
    model.ParseFromString(buf.getvalue())
    model.trainer_spec.model_type = pb.TrainerSpec.UNIGRAM
    floor = math.log(0.5 / total)  # pieces the segmentation never used (single characters): least likely
    for piece in model.pieces:
        if piece.type == pb.ModelProto.SentencePiece.NORMAL:
            piece.score = math.log(counts[piece.piece] / total) if counts[piece.piece] else floor
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(model.SerializeToString())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "assets/tokenizer/cpu_small_words.spm"))
    ap.add_argument("--vocab-size", type=int, default=500,
                    help="sentencepiece pieces; with XLM-R's special tokens at most the model's beit3.vocab_size (512)")
    args = ap.parse_args()
    path = train_unigram_from_bpe(corpus(), Path(args.out), args.vocab_size)
    tok = TextTokenizer(path, max_len=64, vocab_size=512)
    split = {w: tok._tok.tokenize(w) for w in sorted(benchmark_words())}
    bad = {w: p for w, p in split.items() if len(p) != 1}
    print(f"{path}: {len(tok)} pieces; benchmark words split: {bad or 'none'}")
    print("e.g.", tok._tok.tokenize("The small green triangle moving to the left"))
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
