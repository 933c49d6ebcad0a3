"""A thin wrapper over a HF `tokenizers` tokenizer.json (as genesis-data writes it) for generation."""

from __future__ import annotations

import os
from pathlib import Path

from tokenizers import Tokenizer

SPECIAL_TOKENS = {"bos": "<|bos|>", "eos": "<|eos|>", "pad": "<|pad|>", "sep": "<|sep|>"}


class GenesisTokenizer:
    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        ids = {role: tokenizer.token_to_id(token) for role, token in SPECIAL_TOKENS.items()}
        self.bos_id, self.eos_id, self.pad_id, self.sep_id = ids["bos"], ids["eos"], ids["pad"], ids["sep"]

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "GenesisTokenizer":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: tokenizer file not found")
        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as error:  # tokenizers raises a bare Exception for any parse failure
            raise ValueError(f"{path}: not a tokenizers tokenizer.json ({str(error).splitlines()[0]})") from None

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "GenesisTokenizer":
        from .checkpoint import TOKENIZER_FILE

        return cls.from_file(Path(directory) / TOKENIZER_FILE)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """Token ids of `text`; a prompt starts with <|bos|> like the training sequences (when the vocabulary has it)."""
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return [self.bos_id, *ids] if add_bos and self.bos_id is not None else ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def stream(self, context: list[int] = ()) -> "StreamDecoder":
        """A StreamDecoder for tokens that follow `context` (e.g. the prompt, already shown)."""
        return StreamDecoder(self, context)


class StreamDecoder:
    """Turns a growing token sequence into text pieces as they become final.

    Decoding token by token would lose word-boundary spaces (decoders strip a leading one) and split multi-byte
    characters, so each push decodes the new tokens together with a few emitted ones as context, emits the
    difference, and holds back text that ends in an incomplete character.
    """

    def __init__(self, tokenizer: GenesisTokenizer, context: list[int] = ()):
        self.tokenizer = tokenizer
        self.ids: list[int] = list(context)
        self.offset = len(self.ids)  # ids[:offset] are fully emitted (or were shown by the caller)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        # Decode with a few emitted tokens of context so boundary spaces come out right.
        prefix = max(0, self.offset - 4)
        before = self.tokenizer.decode(self.ids[prefix:self.offset])
        text = self.tokenizer.decode(self.ids[prefix:])
        if text.endswith("\ufffd") or not text.startswith(before):
            return ""
        self.offset = len(self.ids)
        return text[len(before):]
