"""Tiny random models of every family but BLIP (``model/tiny.py``), built from a config in milliseconds and
saved in the family's real on-disk format with real processor and tokenizer files, so the real loading code
reads them: CLIP, SigLIP, Chinese-CLIP (transformers folders) and open_clip checkpoints. For tests, the model
bake-off's tests and benchmarks (which pass real sizes as overrides). No hub access: tokenizer vocabularies
are made from the texts given."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fashion_retrieval.model.tiny import SPECIAL_TOKENS, words_of

BASE_WORDS = "a the man lady woman wears shirt dress with and".split()
# A large init spread keeps random text embeddings apart (0.02 makes them nearly identical).
INIT_RANGE = 0.3


def _clip_vocab(texts: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's byte-level BPE: every byte's character, alone or ending a word, the two special tokens, and merges
    that make each word of ``texts`` one token (or a few, where words share a prefix), so captions are about as
    many tokens long as with CLIP's real vocabulary."""
    from tokenizers.pre_tokenizers import ByteLevel

    chars = sorted(ByteLevel.alphabet())  # the GPT-2 byte-to-unicode table CLIP's tokenizer uses
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    merges: list[tuple[str, str]] = []
    for word in words_of(texts):
        if not word.isascii() or not word.isalnum() or len(word) < 2:
            continue
        pieces = [*word[:-1], word[-1] + "</w>"]
        merged = pieces[0]
        for piece in pieces[1:]:
            merges.append((merged, piece))
            merged += piece
            tokens.append(merged)
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    return vocab, list(dict.fromkeys(merges))


def _tower(hidden: int, layers: int, intermediate: int, heads: int | None = None, **extra: Any) -> dict:
    return {
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads or max(1, hidden // 16),
        "initializer_range": INIT_RANGE,
        **extra,
    }


def _text_sizes(hidden: int, layers: int, intermediate: int, text: dict | None) -> dict:
    """The text tower's sizes: the vision tower's unless ``text`` overrides some (real CLIP's is narrower)."""
    return {"hidden": hidden, "layers": layers, "intermediate": intermediate, **(text or {})}


def build_tiny_clip(
    folder: str | Path,
    texts: Iterable[str] = (),
    *,
    seed: int = 0,
    image_size: int = 32,
    patch_size: int = 16,
    hidden: int = 32,
    layers: int = 2,
    intermediate: int = 64,
    embed_dim: int = 64,
    heads: int | None = None,
    text: dict | None = None,
    **overrides: Any,
) -> Path:
    """A ``CLIPModel`` with ``CLIPProcessor`` (shortest-edge resize + centre crop, CLIP's BPE tokenizer).
    ``text`` sets the text tower's own hidden/layers/intermediate/heads (default: the vision tower's)."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder = Path(folder)
    vocab, merges = _clip_vocab(texts)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    t = _text_sizes(hidden, layers, intermediate, {"heads": heads, **(text or {})})
    text_tower = _tower(**t, vocab_size=len(tokenizer), max_position_embeddings=77, **special)
    vision = _tower(hidden, layers, intermediate, heads, image_size=image_size, patch_size=patch_size)
    config = CLIPConfig(text_config=text_tower, vision_config=vision, projection_dim=embed_dim, **overrides)
    config.initializer_range = INIT_RANGE
    torch.manual_seed(seed)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    _save(CLIPModel(config), CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer), folder)
    return folder


def _sentencepiece(folder: Path, texts: list[str]) -> Path:
    """A small SentencePiece model of the texts, with SigLIP's special pieces (pad 0, eos 1, unk 2)."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=max(32, min(400, 4 * len(words_of(texts)))),
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spiece.model"
    path.write_bytes(model.getvalue())
    return path


def build_tiny_siglip(
    folder: str | Path,
    texts: Iterable[str] = (),
    *,
    seed: int = 0,
    image_size: int = 32,
    patch_size: int = 16,
    hidden: int = 32,
    layers: int = 2,
    intermediate: int = 64,
    heads: int | None = None,
    text: dict | None = None,
    **overrides: Any,
) -> Path:
    """A ``SiglipModel`` with ``SiglipProcessor`` (square resize, SentencePiece tokenizer padded to 64)."""
    import torch
    from transformers import SiglipConfig, SiglipModel, SiglipProcessor, SiglipTokenizer
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    folder = Path(folder)
    captions = [*texts, " ".join(BASE_WORDS)]
    tokenizer = SiglipTokenizer(vocab_file=str(_sentencepiece(folder, captions)), model_max_length=64)
    t = _text_sizes(hidden, layers, intermediate, {"heads": heads, **(text or {})})
    text_tower = _tower(**t, vocab_size=len(tokenizer), max_position_embeddings=64)
    text_tower |= {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    text_tower["projection_size"] = hidden  # the text head ends in the image tower's space
    vision = _tower(hidden, layers, intermediate, heads, image_size=image_size, patch_size=patch_size)
    config = SiglipConfig(text_config=text_tower, vision_config=vision, **overrides)
    config.initializer_range = INIT_RANGE
    torch.manual_seed(seed)
    image_processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    _save(SiglipModel(config), SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer), folder)
    return folder


def build_tiny_chinese_clip(
    folder: str | Path,
    texts: Iterable[str] = (),
    *,
    seed: int = 0,
    image_size: int = 32,
    patch_size: int = 16,
    hidden: int = 32,
    layers: int = 2,
    intermediate: int = 64,
    embed_dim: int = 64,
    **overrides: Any,
) -> Path:
    """A ``ChineseCLIPModel`` with ``ChineseCLIPProcessor`` (a BERT tokenizer whose vocabulary holds the texts'
    words and Chinese characters)."""
    import torch
    from transformers import BertTokenizer, ChineseCLIPConfig, ChineseCLIPModel, ChineseCLIPProcessor
    from transformers.models.chinese_clip.image_processing_pil_chinese_clip import ChineseCLIPImageProcessorPil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chinese = sorted({c for t in texts for c in t if ord(c) > 0x2E80})  # BERT splits CJK text per character
    vocab = list(dict.fromkeys(SPECIAL_TOKENS + BASE_WORDS + words_of(texts) + chinese))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # transformers 5 ignores vocab_file=...; vocab=path is the form that reads the file (DESIGN.md).
    bert = BertTokenizer(vocab=str(folder / "vocab.txt"), do_lower_case=True, model_max_length=64)
    text = _tower(hidden, layers, intermediate, vocab_size=len(bert), max_position_embeddings=64)
    vision = _tower(hidden, layers, intermediate, image_size=image_size, patch_size=patch_size)
    config = ChineseCLIPConfig(text_config=text, vision_config=vision, projection_dim=embed_dim, **overrides)
    config.initializer_range = INIT_RANGE
    torch.manual_seed(seed)
    image_processor = ChineseCLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = ChineseCLIPProcessor(image_processor=image_processor, tokenizer=bert)
    _save(ChineseCLIPModel(config), processor, folder)
    return folder


def _save(model: Any, processor: Any, folder: Path) -> None:
    from fashion_retrieval.model.loading import quiet_transformers

    with quiet_transformers():
        model.eval().save_pretrained(folder)
        processor.save_pretrained(folder)


def build_tiny_open_clip(
    folder: str | Path,
    texts: Iterable[str] = (),
    *,
    seed: int = 0,
    image_size: int = 32,
    patch_size: int = 16,
    hidden: int = 32,
    layers: int = 2,
    embed_dim: int = 64,
    resize_mode: str = "shortest",
    **overrides: Any,
) -> Path:
    """An open_clip checkpoint as published on model hubs: ``open_clip_config.json`` (model_cfg and
    preprocess_cfg) and ``open_clip_model.safetensors``; open_clip's own BPE tokenizer (needs open_clip)."""
    import torch
    from safetensors.torch import save_file

    from fashion_retrieval.model.families.open_clip import import_open_clip

    open_clip = import_open_clip()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    heads = max(1, hidden // 16)
    model_cfg = {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "image_size": image_size,
            "layers": layers,
            "width": hidden,
            "patch_size": patch_size,
            "head_width": hidden // heads,
        },
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": hidden, "heads": heads, "layers": layers},
        **overrides,
    }
    preprocess_cfg = {
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "interpolation": "bicubic",
        "resize_mode": resize_mode,
    }
    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg)
    with torch.no_grad():  # open_clip initialises with small spreads: widen them so that vectors differ
        for name, param in model.named_parameters():
            if param.ndim >= 2 and "embedding" not in name:
                param.normal_(0.0, INIT_RANGE / param.shape[-1] ** 0.5 * 4)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    return folder


BUILDERS: dict[str, Callable[..., Path]] = {
    "clip": build_tiny_clip,
    "siglip": build_tiny_siglip,
    "chinese_clip": build_tiny_chinese_clip,
    "open_clip": build_tiny_open_clip,
}


def build_tiny(family: str, folder: str | Path, texts: Iterable[str] = (), **options: Any) -> Path:
    """A tiny random model of ``family`` (blip, clip, siglip, chinese_clip, open_clip) saved into ``folder``."""
    if family == "blip":
        from fashion_retrieval.model.tiny import build_tiny_blip

        return build_tiny_blip(folder, texts, **options)
    return BUILDERS[family](folder, list(texts), **options)


__all__ = [
    "BUILDERS",
    "build_tiny",
    "build_tiny_chinese_clip",
    "build_tiny_clip",
    "build_tiny_open_clip",
    "build_tiny_siglip",
]
