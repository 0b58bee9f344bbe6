"""Tiny BLIP retrieval models built from a config: for tests, the offline demo and benchmarks.

No hub access: the tokenizer vocabulary is written from the words it is given, and the weights
are random (or trained by the demo). Saved in Hugging Face format, so the real loading code reads it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from transformers import BertTokenizer, BlipConfig, BlipForImageTextRetrieval, BlipProcessor
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def words_of(texts: Iterable[str]) -> list[str]:
    """Lower-cased word and punctuation tokens, as BERT's basic tokenizer splits them."""
    seen: dict[str, None] = {}
    for text in texts:
        for token in re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower()):
            seen.setdefault(token, None)
    return list(seen)


def build_processor(folder: Path, words: Iterable[str], image_size: int) -> BlipProcessor:
    """A BLIP processor with a word-level vocabulary, saved into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab = list(dict.fromkeys(SPECIAL_TOKENS + list(words)))  # unique, order kept
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # transformers 5 ignores vocab_file=...; vocab=path is the form that reads the file.
    tokenizer = BertTokenizer(vocab=str(vocab_file), do_lower_case=True, model_max_length=64)
    # BLIP's tokenizer adds [DEC] as bos and [ENC] as an extra special token.
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    image_processor = BlipImageProcessorPil(size={"height": image_size, "width": image_size})
    return BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def tiny_blip_config(
    vocab_size: int,
    *,
    image_size: int = 32,
    patch_size: int = 16,
    vision_hidden: int = 32,
    vision_layers: int = 2,
    text_hidden: int = 32,
    text_layers: int = 2,
    intermediate: int = 64,
    embed_dim: int = 256,
    initializer_range: float = 0.3,
    token_ids: dict[str, int] | None = None,
) -> BlipConfig:
    """A BLIP config of a few hundred KB of weights; embeddings keep the real 256 dims."""
    text = {
        "vocab_size": vocab_size,
        "hidden_size": text_hidden,
        "encoder_hidden_size": vision_hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": text_layers,
        "num_attention_heads": 2,
        "max_position_embeddings": 64,
        # A large init spread keeps random text embeddings apart (0.02 makes them ~identical).
        "initializer_range": initializer_range,
        **(token_ids or {}),
    }
    vision = {
        "hidden_size": vision_hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": vision_layers,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": patch_size,
        "initializer_range": initializer_range,
    }
    config = BlipConfig(
        text_config=text, vision_config=vision, projection_dim=embed_dim, image_text_hidden_size=embed_dim
    )
    config.initializer_range = initializer_range
    return config


def build_tiny_blip(
    folder: str | Path,
    texts: Iterable[str] = (),
    *,
    seed: int = 0,
    image_size: int = 32,
    **config_overrides: int | float,
) -> Path:
    """Build, randomly initialise and save a tiny ``BlipForImageTextRetrieval`` with its processor."""
    import torch

    folder = Path(folder)
    base_words = "a the man lady woman wears shirt dress with and".split()
    processor = build_processor(folder, base_words + words_of(texts), image_size)
    tokenizer = processor.tokenizer
    token_ids = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "sep_token_id": tokenizer.sep_token_id,
    }
    config = tiny_blip_config(len(tokenizer), image_size=image_size, token_ids=token_ids, **config_overrides)
    torch.manual_seed(seed)
    model = BlipForImageTextRetrieval(config).eval()
    from fashion_retrieval.model.loading import quiet_transformers

    with quiet_transformers():  # no "Writing model shards" bar for a model of a few hundred KB
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    return folder
