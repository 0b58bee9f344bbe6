"""``fashion-retrieval compare``: candidate models side by side on the user's own catalogue (a bake-off).

Each model embeds the same sample of the catalogue (``embed``'s own pipeline: resumable, bad images listed),
then the sample is evaluated as ``eval`` does (text->image Recall@1/10 and MRR, attribute precision@10, optionally
Marqo's protocol), composed queries as ``eval --task compose`` does (where the catalogue has their attributes),
and the embedding speed of the run is reported with the vector size and the index memory it implies. One JSON
file and one self-contained HTML page come out. Every model's folder and result are kept under ``OUT/models/``:
a killed comparison run again continues where it stopped, and an embeddings folder already complete is reused.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fashion_retrieval.config import EmbedConfig, ModelConfig
from fashion_retrieval.data.records import ColumnMap, read_catalog
from fashion_retrieval.embeddings import load_embeddings
from fashion_retrieval.errors import FashionRetrievalError
from fashion_retrieval.evaluate.evaluate import EvalConfig, evaluate_embeddings
from fashion_retrieval.files import atomic_write_bytes

log = logging.getLogger(__name__)

HNSW_M = 16  # the graph degree Milvus builds here (store/milvus.py): ~2*M neighbour ids of 4 bytes at layer 0
METRICS = (
    ("recall@1", "R@1"),
    ("recall@10", "R@10"),
    ("mrr", "MRR"),
    ("attribute_precision@10", "attr. P@10"),
    ("composed_recall@10", "composed R@10"),
)
SPEEDS = (("images_per_second", "images/s"), ("captions_per_second", "captions/s"))


@dataclass(frozen=True)
class CompareConfig:
    catalog: str
    models: tuple[ModelConfig, ...]
    out: str = "compare_output"
    sample: int | None = 1000  # items embedded by every model (None: the whole catalogue)
    seed: int = 0
    relevance: str = "pair"
    protocol: str = "full"
    precision_attributes: tuple[str, ...] = ()  # default: the relevance attributes, or none
    compose: bool = True
    compose_references: int = 200
    images_dir: str | None = None
    id_col: str = "image_id"
    image_col: str = "path"
    text_col: str = "caption"
    workers: int = 2
    html: str | None = None  # default OUT/compare.html

    def __post_init__(self) -> None:
        if len(self.models) < 1:
            raise ValueError("compare needs at least one --base (two to compare)")
        if self.sample is not None and self.sample < 2:
            raise ValueError("--sample must be at least 2 items")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ModelResult:
    label: str
    family: str
    base: str
    checkpoint: str | None
    identity_key: str
    dim: int
    metrics: dict[str, float | None] = field(default_factory=dict)
    speed: dict[str, float | None] = field(default_factory=dict)
    memory_mb_per_million: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _slug(index: int, model: ModelConfig) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model.base.rstrip("/")).name or "model")[:40]
    return f"{index + 1}-{name}"


def write_sample(config: CompareConfig, folder: Path) -> Path:
    """The catalogue rows every model embeds (the same ones), as a CSV with absolute image paths."""
    columns = ColumnMap(config.id_col, config.image_col, config.text_col or None)
    catalog = read_catalog(config.catalog, images_dir=config.images_dir, columns=columns)
    frame = catalog.frame
    if config.sample and config.sample < len(frame):
        rows = np.sort(np.random.default_rng(config.seed).choice(len(frame), size=config.sample, replace=False))
        frame = frame.iloc[rows]
    path = folder / "sample.csv"
    body = frame.rename(columns={"id": "image_id"}).to_csv(index=False).encode()
    if not path.is_file() or path.read_bytes() != body:  # rewritten only when it changes: folders stay reusable
        atomic_write_bytes(path, body)
    return path


def _embed(config: CompareConfig, model: ModelConfig, sample: Path, out: Path, progress: bool) -> dict:
    from fashion_retrieval.pipeline.embed import embed_catalog

    embed = EmbedConfig(catalog=str(sample), model=model, out=str(out), workers=config.workers, images_dir=None)
    return embed_catalog(embed, progress=progress)


def _precision_attributes(config: CompareConfig) -> tuple[str, ...]:
    if config.precision_attributes:
        return config.precision_attributes
    name, _, fields = config.relevance.partition(":")
    return tuple(f for f in fields.split(",") if f) if name == "attributes" else ()


def _quality(config: CompareConfig, folder: Path) -> tuple[dict[str, float | None], list[str]]:
    attributes = _precision_attributes(config)
    report = evaluate_embeddings(
        EvalConfig(str(folder), relevance=config.relevance, protocol=config.protocol, precision_attributes=attributes)
    )
    t2i = report["text_to_image"]
    metrics: dict[str, float | None] = {k: t2i.get(k) for k in ("recall@1", "recall@10", "mrr")}
    key = "attribute_precision@10[" + ",".join(attributes) + "]"
    metrics["attribute_precision@10"] = report.get(key)
    notes = [] if attributes else ["attribute precision: pass --precision-attributes (or attributes relevance)"]
    metrics["composed_recall@10"] = None
    if config.compose:
        composed, note = _composed_recall(config, folder)
        metrics["composed_recall@10"] = composed
        notes += [note] if note else []
    return metrics, notes


def _composed_recall(config: CompareConfig, folder: Path) -> tuple[float | None, str | None]:
    """Recall@10 of "like this, but <attribute>" queries by the default composition, where the catalogue has
    the attributes the modifiers name (the synthetic catalogue's: colour, garment ...)."""
    from fashion_retrieval.evaluate.compose import ComposeEvalConfig, evaluate_compose

    try:
        report = evaluate_compose(
            ComposeEvalConfig(str(folder), device="auto", references=config.compose_references, sweeps=False)
        )
    except (FashionRetrievalError, KeyError) as exc:
        return None, f"composed queries skipped: {str(exc).splitlines()[0][:160]}"
    method = report["best_new_method"] or report["best_baseline"]
    return float(report["methods"][method]["recall@10"]), None


def memory_per_million(dim: int, has_text: bool = True) -> dict[str, float]:
    """MB per million items: float32 vectors (image, and caption where embedded), and with an HNSW graph
    (M=16) over each vector field, as the Milvus collection holds them. An estimate from the sizes, not a
    measurement of a running server."""
    fields = 2 if has_text else 1
    vectors = fields * dim * 4
    graph = fields * 2 * HNSW_M * 4
    return {"vectors": round(vectors * 1e6 / 2**20, 1), "hnsw_index": round((vectors + graph) * 1e6 / 2**20, 1)}


def _result_key(config: CompareConfig, sample: Path, identity_key: str) -> str:
    settings = {
        "identity": identity_key,
        "sample": hashlib.sha256(sample.read_bytes()).hexdigest(),
        "relevance": config.relevance,
        "protocol": config.protocol,
        "attributes": _precision_attributes(config),
        "compose": config.compose,
        "compose_references": config.compose_references,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def compare_model(config: CompareConfig, index: int, sample: Path, progress: bool) -> ModelResult:
    model = config.models[index]
    folder = Path(config.out) / "models" / _slug(index, model)
    folder.mkdir(parents=True, exist_ok=True)
    summary = _embed(config, model, sample, folder / "embeddings", progress)
    data = load_embeddings(folder / "embeddings", mmap=True)
    identity = data.identity
    cached = folder / "result.json"
    key = _result_key(config, sample, identity["key"])
    if cached.is_file():
        stored = json.loads(cached.read_text())
        if stored.get("key") == key:
            log.info("%s: result of an earlier run reused (%s)", model.base, cached)
            return ModelResult(**stored["result"])
    metrics, notes = _quality(config, folder / "embeddings")
    if summary.get("status") == "already complete":
        notes.append("speeds from the run that made the embeddings folder")
    result = ModelResult(
        label=_slug(index, model),
        family=identity.get("family") or "blip",
        base=model.base,
        checkpoint=model.checkpoint,
        identity_key=identity["key"],
        dim=int(identity["embed_dim"]),
        metrics=metrics,
        speed={k: summary.get(k) for k, _ in SPEEDS},
        memory_mb_per_million=memory_per_million(int(identity["embed_dim"]), data.text_embeddings is not None),
        notes=notes,
    )
    atomic_write_bytes(cached, json.dumps({"key": key, "result": asdict(result)}, indent=2).encode())
    return result


def compare_models(config: CompareConfig, *, progress: bool = True) -> dict:
    """Run the bake-off ``config`` describes; returns the comparison also written to OUT/compare.json and the
    HTML page (OUT/compare.html unless ``config.html``)."""
    started = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    sample = write_sample(config, out)
    results = []
    for index, model in enumerate(config.models):
        extra = f" + {model.checkpoint}" if model.checkpoint else ""
        log.info("[%d/%d] %s%s", index + 1, len(config.models), model.base, extra)
        results.append(compare_model(config, index, sample, progress))
    from fashion_retrieval.bench.machine import machine

    comparison = {
        "catalog": config.catalog,
        "sample": str(sample),
        "items": sum(1 for _ in sample.open()) - 1,
        "relevance": config.relevance,
        "protocol": config.protocol,
        "machine": machine(),
        "models": [asdict(r) for r in results],
        "seconds": round(time.perf_counter() - started, 2),
        "config": config.to_dict(),
    }
    atomic_write_bytes(out / "compare.json", json.dumps(comparison, indent=2, default=str).encode())
    page = Path(config.html) if config.html else out / "compare.html"
    atomic_write_bytes(page, render_page(comparison).encode())
    comparison["html"] = str(page)
    return comparison


def _cell(value: float | None, best: bool, digits: int = 3) -> str:
    if value is None:
        return "<td class=na>n/a</td>"
    text = f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return f"<td class='{'best' if best else ''}'>{text}</td>"


def _table(models: list[dict]) -> str:
    head = "".join(f"<th>{label}</th>" for _, label in METRICS + SPEEDS)
    rows = []
    for model in models:
        cells = []
        for group, names in (("metrics", METRICS), ("speed", SPEEDS)):
            for key, _ in names:
                values = [m[group].get(key) for m in models if m[group].get(key) is not None]
                value = model[group].get(key)
                cells.append(_cell(value, value is not None and len(values) > 1 and value == max(values)))
        memory = model["memory_mb_per_million"]
        name = html.escape(f"{model['label']} ({model['family']})")
        source = html.escape(model["base"] + (f" + {model['checkpoint']}" if model["checkpoint"] else ""))
        rows.append(
            f"<tr><th title='{source}'>{name}</th>{''.join(cells)}<td>{model['dim']}</td>"
            f"<td>{memory['vectors']:,.0f} / {memory['hnsw_index']:,.0f}</td></tr>"
        )
    return (
        f"<table><tr><th>model</th>{head}<th>dims</th><th>MB per million items: vectors / HNSW index</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _bars(models: list[dict]) -> str:
    """Quality metrics grouped per model, as one inline PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2))
    width = 0.8 / max(1, len(models))
    for i, model in enumerate(models):
        values = [model["metrics"].get(k) or 0.0 for k, _ in METRICS]
        ax.bar(np.arange(len(METRICS)) + i * width, values, width, label=model["label"])
    ax.set_xticks(np.arange(len(METRICS)) + width * (len(models) - 1) / 2, [label for _, label in METRICS])
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return f"<img alt='quality per model' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


def render_page(comparison: dict) -> str:
    models = comparison["models"]
    notes = "".join(
        f"<li><b>{html.escape(m['label'])}</b>: {html.escape(n)}</li>" for m in models for n in m["notes"]
    )
    machine = comparison["machine"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Model comparison</title><style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:70em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}} th{{background:#f4f4f4}} td.best{{font-weight:bold}}
td.na{{color:#999}}</style></head><body>
<h1>Model comparison on {html.escape(str(comparison['catalog']))}</h1>
<p>{comparison['items']} items, relevance {html.escape(comparison['relevance'])}, protocol
{html.escape(comparison['protocol'])}; text-&gt;image metrics; speeds measured by <code>embed</code> on
{html.escape(str(machine.get('cpu')))} ({html.escape(', '.join(machine.get('cpu_flags', [])))}). Best in bold.</p>
{_table(models)}
{_bars(models)}
<ul>{notes}</ul></body></html>"""


__all__ = ["CompareConfig", "ModelResult", "compare_models", "memory_per_million", "render_page"]
