"""A byte-level BPE tokenizer trained offline on a small corpus.

Our tiny models never see a hub tokenizer: each model family trains its own small
vocabulary on the texts it will actually read (benchmark prompts, rule queries), which
keeps the embedding tables, and so the saved folders, small. Byte-level BPE is used
because it can encode any string (no unknown characters) and decodes back exactly, so
prompts survive a round trip unchanged.

The function is generic: callers pass the special tokens of their family (UMT5's
``<pad>``/``</s>``/``<unk>``, Qwen's ``<|im_start|>``...) and get a standard
``PreTrainedTokenizerFast`` that ``save_pretrained`` / ``AutoTokenizer.from_pretrained``
round-trip.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from core.errors import InputError


def build_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    special_tokens: list[str],
    *,
    pad_token: str,
    eos_token: str,
    unk_token: str | None = None,
    bos_token: str | None = None,
    model_max_length: int = 512,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for transformers.

    ``special_tokens`` get the first ids in the given order and are never split; the
    named roles (pad/eos/unk/bos) must be among them (they are added if missing, after
    the listed ones). The 256 byte symbols are always in the vocabulary, so
    ``vocab_size`` must leave room for them plus the specials; merges fill the rest as
    far as the corpus supports. Training is deterministic for a given corpus order.
    """
    specials = list(dict.fromkeys(special_tokens))
    for role in (pad_token, eos_token, unk_token, bos_token):
        if role is not None and role not in specials:
            specials.append(role)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(specials):
        raise InputError(
            "build_bpe_tokenizer:vocab_size",
            f"{vocab_size} is too small for 256 byte symbols and {len(specials)} special tokens",
            f">= {len(alphabet) + len(specials)}",
        )
    corpus = [t for t in texts if t]
    if not corpus:
        raise InputError("build_bpe_tokenizer:texts", "the training corpus is empty", "at least one non-empty text")

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False))
    # add_prefix_space=False keeps decode(encode(x)) == x exactly; use_regex splits words
    # the GPT-2 way so merges never cross word boundaries.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=sorted(alphabet),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer, length=len(corpus))

    kwargs: dict[str, str] = {"pad_token": pad_token, "eos_token": eos_token}
    if unk_token is not None:
        kwargs["unk_token"] = unk_token
    if bos_token is not None:
        kwargs["bos_token"] = bos_token
    extra = [s for s in specials if s not in kwargs.values()]
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        additional_special_tokens=extra,
        **kwargs,
    )
    return wrapped
