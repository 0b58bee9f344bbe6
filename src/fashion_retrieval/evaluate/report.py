"""``fashion-retrieval report``: one self-contained HTML page about an embeddings folder (plots inlined),
with the PNGs also written beside it. Sections: counts and failures, matched vs random similarity,
a 2-D map (UMAP, t-SNE or PCA) by product type and by modality with the modality gap, Recall@K per
attribute, sample queries with their top images, near-duplicate images."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fashion_retrieval.embeddings import EmbeddingSet, load_embeddings
from fashion_retrieval.evaluate.evaluate import EvalConfig, evaluate_embeddings
from fashion_retrieval.progress import progress_bar
from fashion_retrieval.ranking import top_k_indices

MAP_POINTS = 3000
DUPLICATE_ROWS = 20000


@dataclass(frozen=True)
class ReportConfig:
    embeddings: str
    out: str = "report.html"
    samples: int = 4
    duplicate_threshold: float = 0.98
    seed: int = 0


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, folder: Path, name: str) -> tuple[str, str]:
    """Write the figure as PNG beside the report; return (file name, base64) for inlining."""
    plt = _plt()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    (folder / name).write_bytes(buffer.getvalue())
    return name, base64.b64encode(buffer.getvalue()).decode()


def _thumb(path: str, size: int = 120) -> str:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
    except OSError:
        return ""


def project_2d(points: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    """UMAP when installed, else t-SNE (scikit-learn) when installed, else PCA (numpy)."""
    try:
        import umap

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(points), "UMAP"
    except ImportError:
        pass
    try:
        from sklearn.manifold import TSNE

        perplexity = max(2.0, min(30.0, (len(points) - 1) / 3))
        return TSNE(n_components=2, random_state=seed, perplexity=perplexity, init="pca").fit_transform(points), "t-SNE"
    except ImportError:
        centred = points - points.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return centred @ vt[:2].T, "PCA"


def similarity_section(data: EmbeddingSet, folder: Path, rng) -> tuple[str, dict]:
    plt = _plt()
    image, text = data.image_embeddings, data.text_embeddings
    matched = np.einsum("ij,ij->i", image, text)
    shuffled = rng.permutation(len(text))
    random_pairs = np.einsum("ij,ij->i", image, text[shuffled])
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = np.linspace(min(matched.min(), random_pairs.min()), max(matched.max(), random_pairs.max()), 50)
    ax.hist(random_pairs, bins=bins, alpha=0.6, label=f"random pairs (mean {random_pairs.mean():.3f})")
    ax.hist(matched, bins=bins, alpha=0.6, label=f"matched pairs (mean {matched.mean():.3f})")
    ax.set(xlabel="cosine similarity (image, caption)", ylabel="pairs")
    ax.legend(fontsize=8)
    name, b64 = _save(fig, folder, "similarity.png")
    stats = {
        "matched_mean": float(matched.mean()),
        "random_mean": float(random_pairs.mean()),
        "matched_above_random_p95": float(np.mean(matched > np.percentile(random_pairs, 95))),
    }
    return _figure(
        "Similarity of matched vs random image-caption pairs",
        b64,
        name,
        f"{stats['matched_above_random_p95']:.1%} of matched pairs score above the 95th percentile of random pairs.",
    ), stats


def map_section(data: EmbeddingSet, folder: Path, rng, seed: int) -> tuple[str, dict]:
    plt = _plt()
    n = len(data)
    rows = np.sort(rng.choice(n, size=min(n, MAP_POINTS // 2), replace=False))
    image, text = data.image_embeddings[rows], data.text_embeddings[rows]
    coords, method = project_2d(np.concatenate([image, text]), seed)
    gap = float(np.linalg.norm(data.image_embeddings.mean(axis=0) - data.text_embeddings.mean(axis=0)))
    labels = (
        data.metadata["product_type"].astype(str).to_numpy()[rows]
        if "product_type" in data.metadata
        else np.array(["item"] * len(rows))
    )
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6))
    half = len(rows)
    for value in sorted(set(labels)):
        mask = np.concatenate([labels == value, labels == value])
        left.scatter(coords[mask, 0], coords[mask, 1], s=6, label=value)
    left.set_title(f"{method} by product type")
    left.legend(fontsize=6, markerscale=2, loc="best")
    right.scatter(coords[:half, 0], coords[:half, 1], s=6, label="images")
    right.scatter(coords[half:, 0], coords[half:, 1], s=6, label="captions")
    right.set_title(f"{method} by modality (gap {gap:.3f})")
    right.legend(fontsize=8, markerscale=2)
    for ax in (left, right):
        ax.set_xticks([])
        ax.set_yticks([])
    name, b64 = _save(fig, folder, "embedding_map.png")
    text_note = (
        f"Modality gap (distance between the mean image and mean caption embedding): <b>{gap:.3f}</b>. "
        f"{len(rows)} items projected with {method}."
    )
    return _figure("Embedding map", b64, name, text_note), {"modality_gap": gap, "map_method": method}


def recall_section(report: dict, folder: Path) -> str:
    plt = _plt()
    breakdown = report["breakdown_text_to_image"]
    if not breakdown:
        return "<h2>Recall@K per attribute</h2><p>No attribute with a few distinct values.</p>"
    k = max(int(key.split("@")[1]) for key in report["text_to_image"] if key.startswith("recall@"))
    fig, axes = plt.subplots(
        len(breakdown), 1, figsize=(8, 1.2 + 0.28 * sum(len(v) for v in breakdown.values())), squeeze=False
    )
    for ax, (attribute, values) in zip(axes[:, 0], breakdown.items(), strict=True):
        names = list(values)
        ax.barh(names, [values[v][f"recall@{k}"] for v in names])
        ax.set(xlim=(0, 1), title=f"text->image recall@{k} by {attribute}")
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    name, b64 = _save(fig, folder, "recall_by_attribute.png")
    return _figure("Recall@K per attribute", b64, name, "")


def samples_section(data: EmbeddingSet, rng, samples: int, top_k: int = 5) -> str:
    meta = data.metadata
    rows = rng.choice(len(data), size=min(samples, len(data)), replace=False)
    blocks = []
    for row in rows:
        scores = data.image_embeddings @ data.text_embeddings[row]
        top = top_k_indices(scores, top_k)
        cells = "".join(
            f'<figure class="{"hit" if t == row else ""}"><img src="{_thumb(meta.at[t, "path"])}" alt="">'
            f"<figcaption>{scores[t]:.3f}</figcaption></figure>"
            for t in top
        )
        blocks.append(
            f"<div class='sample'><p><b>{html.escape(meta.at[row, 'caption'])}</b> "
            f"(its own image outlined if found)</p><div class='thumbs'>{cells}</div></div>"
        )
    return "<h2>Sample queries and their top images</h2>" + "".join(blocks)


def duplicates_section(data: EmbeddingSet, threshold: float, shown: int = 12) -> tuple[str, int]:
    image = data.image_embeddings[:DUPLICATE_ROWS]
    pairs: list[tuple[float, int, int]] = []
    count = 0
    for start in range(0, len(image), 2048):
        block = image[start : start + 2048] @ image.T
        rows, cols = np.nonzero(block > threshold)
        keep = cols > rows + start
        rows, cols = rows[keep], cols[keep]
        count += len(rows)
        best = top_k_indices(block[rows, cols], shown)  # this block's most similar pairs, before any cut
        pairs += [(float(block[rows[i], cols[i]]), int(rows[i] + start), int(cols[i])) for i in best]
    pairs = sorted(pairs, key=lambda p: (-p[0], p[1], p[2]))[:shown]
    meta = data.metadata

    def pair_html(score: float, a: int, b: int) -> str:
        names = f"{html.escape(meta.at[a, 'id'])}<br>{html.escape(meta.at[b, 'id'])}"
        images = "".join(f"<img src='{_thumb(meta.at[i, 'path'], 80)}' alt=''>" for i in (a, b))
        return f"<div class='pair'>{images}<span>{score:.4f}<br>{names}</span></div>"

    cells = "".join(pair_html(s, a, b) for s, a, b in pairs)
    scope = f" (first {DUPLICATE_ROWS} items)" if len(data) > DUPLICATE_ROWS else ""
    return (
        f"<h2>Near-duplicate images</h2><p>{count} pairs with cosine above {threshold}{scope}.</p>"
        f"<div class='pairs'>{cells}</div>"
    ), count


def _figure(title: str, b64: str, name: str, note: str) -> str:
    return (
        f"<h2>{html.escape(title)}</h2><img class='plot' src='data:image/png;base64,{b64}' alt='{name}'>"
        f"<p class='note'>{note} <a href='{name}'>{name}</a></p>"
    )


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:right}
.plot{max-width:100%}.note{color:#555}.thumbs,.pairs{display:flex;flex-wrap:wrap;gap:.5rem}
figure{margin:0;text-align:center;font-size:.8rem}figure img{height:120px;border:3px solid transparent}
figure.hit img{border-color:#2b8a3e}.pair{display:flex;gap:.3rem;align-items:center;font-size:.7rem}"""


def counts_section(data: EmbeddingSet) -> str:
    """Items, embedded, failed and the model; the first 20 failures with their reasons."""
    summary = data.manifest.get("summary", {})
    counts = (
        f"<h2>Counts</h2><table><tr><th>items</th><th>embedded</th><th>failed</th><th>model</th></tr>"
        f"<tr><td>{summary.get('items', len(data))}</td><td>{len(data)}</td><td>{len(data.failures)}</td>"
        f"<td>{html.escape(str(data.identity.get('key')))}</td></tr></table>"
    )
    if data.failures:
        rows = "".join(
            f"<tr><td>{html.escape(f['id'])}</td><td style='text-align:left'>{html.escape(f['reason'])}</td></tr>"
            for f in data.failures[:20]
        )
        counts += f"<p>Failures (first 20 of {len(data.failures)}):</p><table>{rows}</table>"
    return counts


def quality_section(metrics: dict, folder: Path) -> str:
    """Both directions' metrics in one table, then the recall figures of ``recall_section``."""
    overall = "".join(
        f"<tr><th>{d}</th>" + "".join(f"<td>{v:.3f}</td>" for v in metrics[d].values()) + "</tr>"
        for d in ("text_to_image", "image_to_text")
    )
    header = "<tr><th></th>" + "".join(f"<th>{k}</th>" for k in metrics["text_to_image"]) + "</tr>"
    return f"<h2>Retrieval quality</h2><table>{header}{overall}</table>" + recall_section(metrics, folder)


def write_report(config: ReportConfig, *, progress: bool = True) -> dict:
    data = load_embeddings(config.embeddings)
    if data.text_embeddings is None:
        from fashion_retrieval.errors import FashionRetrievalError

        raise FashionRetrievalError(f"{config.embeddings} has no caption embeddings: the report needs both")
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    steps = progress_bar(6, "report", "step", enabled=progress)
    counts = counts_section(data)
    steps.update()
    similarity_html, similarity_stats = similarity_section(data, out.parent, rng)
    steps.update()
    map_html, map_stats = map_section(data, out.parent, rng, config.seed)
    steps.update()
    metrics = evaluate_embeddings(EvalConfig(config.embeddings))
    recall_html = quality_section(metrics, out.parent)
    steps.update()
    samples_html = samples_section(data, rng, config.samples)
    steps.update()
    duplicates_html, duplicate_count = duplicates_section(data, config.duplicate_threshold)
    steps.update()
    steps.close()
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Embeddings report</title><style>{STYLE}"
        f"</style></head><body><h1>Embeddings report: {html.escape(str(data.folder))}</h1>"
        f"{counts}{similarity_html}{map_html}{recall_html}{samples_html}{duplicates_html}</body></html>"
    )
    out.write_text(page, encoding="utf-8")
    return {
        "out": str(out),
        "items": len(data),
        "failed": len(data.failures),
        **similarity_stats,
        **map_stats,
        "near_duplicate_pairs": duplicate_count,
        "text_to_image": metrics["text_to_image"],
    }
