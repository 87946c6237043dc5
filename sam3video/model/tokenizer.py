"""CLIP byte-pair-encoding tokenizer used by the SAM 3 text encoder (official name: ``SimpleTokenizer``).

Text is cleaned like CLIP does (``ftfy.fix_text``, double HTML unescape, whitespace collapsed, lower
case), split with CLIP's regular expression (which needs the ``regex`` package for ``\\p{L}``/``\\p{N}``),
each piece is mapped byte-wise to printable unicode and merged with the BPE ranks of
``bpe_simple_vocab_16e6.txt.gz`` (shipped in ``sam3video/assets``).

Ids: ``<start_of_text>`` = 49406, ``<end_of_text>`` = 49407, padding = 0.
"""

from __future__ import annotations

import functools
import gzip
import html
import os
from importlib import resources

import ftfy
import regex as re
import torch

DEFAULT_CONTEXT_LENGTH = 77
BPE_VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"


def default_bpe_path():
    """The BPE vocabulary shipped inside the package (a ``Traversable``; may live in a zip)."""
    return resources.files("sam3video") / "assets" / BPE_VOCAB_NAME


@functools.lru_cache()
def bytes_to_unicode() -> dict[int, str]:
    """Reversible map from the 256 byte values to printable unicode characters (no whitespace/control)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def get_pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    """Set of adjacent symbol pairs of a word (a tuple of symbols)."""
    return set(zip(word[:-1], word[1:]))


def basic_clean(text: str) -> str:
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return text.strip()


def whitespace_clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _clean_lower(text: str) -> str:
    return whitespace_clean(basic_clean(text)).lower()


def _clean_whitespace(text: str) -> str:
    return whitespace_clean(basic_clean(text))


def get_clean_fn(clean: str):
    """Text normaliser by name: ``"lower"`` (SAM 3's choice) or ``"whitespace"``."""
    fns = {"lower": _clean_lower, "whitespace": _clean_whitespace}
    if clean not in fns:
        raise ValueError(f"unsupported clean function {clean!r}; expected one of {sorted(fns)}")
    return fns[clean]


def _read_merges(bpe_path) -> list[str]:
    if isinstance(bpe_path, (str, os.PathLike)):
        with open(bpe_path, "rb") as fh:
            data = fh.read()
    else:  # importlib.resources Traversable
        data = bpe_path.read_bytes()
    return gzip.decompress(data).decode("utf-8").split("\n")


class SimpleTokenizer:
    """CLIP BPE tokenizer; ``__call__`` returns padded id tensors of shape (N, context_length).

    ``bpe_path=None`` loads the vocabulary shipped with the package.
    """

    def __init__(
        self,
        bpe_path: str | os.PathLike | None = None,
        additional_special_tokens: list[str] | None = None,
        context_length: int | None = DEFAULT_CONTEXT_LENGTH,
        clean: str = "lower",
    ):
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        merges = _read_merges(default_bpe_path() if bpe_path is None else bpe_path)
        merges = [tuple(merge.split()) for merge in merges[1 : 49152 - 256 - 2 + 1]]
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab]
        vocab.extend("".join(merge) for merge in merges)
        special_tokens = ["<start_of_text>", "<end_of_text>"]
        if additional_special_tokens:
            special_tokens += additional_special_tokens
        vocab.extend(special_tokens)
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.decoder = {v: k for k, v in self.encoder.items()}
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache = {t: t for t in special_tokens}
        special = "|".join(special_tokens)
        self.pat = re.compile(
            special + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            re.IGNORECASE,
        )
        self.vocab_size = len(self.encoder)
        self.all_special_ids = [self.encoder[t] for t in special_tokens]
        self.sot_token_id = self.all_special_ids[0]
        self.eot_token_id = self.all_special_ids[1]
        self.context_length = context_length
        self.clean_fn = get_clean_fn(clean)

    def bpe(self, token: str) -> str:
        """Apply the BPE merges to one pre-token; returns its symbols joined by spaces."""
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = get_pairs(word)
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(first)
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        result = " ".join(word)
        self.cache[token] = result
        return result

    def encode(self, text: str) -> list[int]:
        """BPE ids of ``text`` without start/end tokens and without truncation."""
        bpe_tokens = []
        for token in self.pat.findall(self.clean_fn(text)):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            bpe_tokens.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        return bpe_tokens

    def decode(self, tokens) -> str:
        """Inverse of ``encode`` (word ends become spaces)."""
        text = "".join(self.decoder[int(t)] for t in tokens)
        return (
            bytearray([self.byte_decoder[c] for c in text])
            .decode("utf-8", errors="replace")
            .replace("</w>", " ")
        )

    def count_tokens(self, text: str) -> int:
        """Number of ids ``text`` needs including start and end; above the context length it is truncated."""
        return len(self.encode(text)) + 2

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.LongTensor:
        """Tokenize one string or a list of strings -> LongTensor (N, context_length).

        Each row is ``[start, ids..., end, 0, ...]``; a too-long row is cut to ``context_length`` and its
        last id replaced by the end token.
        """
        if isinstance(texts, str):
            texts = [texts]
        context_length = context_length or self.context_length
        assert context_length, "Please set a valid context length"
        result = torch.zeros(len(texts), context_length, dtype=torch.long)
        for i, text in enumerate(texts):
            tokens = [self.sot_token_id] + self.encode(text) + [self.eot_token_id]
            if len(tokens) > context_length:
                tokens = tokens[:context_length]
                tokens[-1] = self.eot_token_id
            result[i, : len(tokens)] = torch.tensor(tokens)
        return result
