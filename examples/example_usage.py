"""The original toolkit's example_usage.py, runnable: point it at a demo workdir (after `make demo`)
or at any base + checkpoint + embeddings folder.

    python examples/example_usage.py --workdir demo_workdir
    python examples/example_usage.py --base blip-image-captioning-base/ --checkpoint best_model.pth \\
        --embeddings embeddings_output/
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np

from fashion_retrieval import FashionEmbeddingModel, load_embeddings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="demo_workdir", help="a `fashion-retrieval demo` workdir")
    parser.add_argument("--base", help="BLIP base folder (processor_path)")
    parser.add_argument("--checkpoint", help="fine-tuned weights (model_path), e.g. best_model.pth")
    parser.add_argument("--embeddings", help="an embeddings folder written by `fashion-retrieval embed`")
    args = parser.parse_args()
    work = Path(args.workdir)
    processor_path = args.base or str(work / "base")
    model_path = args.checkpoint or str(work / "training" / "model_weights" / "best_model.pth")
    embeddings_dir = Path(args.embeddings or work / "embeddings")

    # 1. initialise, as in the original README
    model = FashionEmbeddingModel(model_path, processor_path)

    # 2. one image and one caption
    with open(embeddings_dir / "metadata.pkl", "rb") as handle:  # the original toolkit's metadata dict
        metadata = pickle.load(handle)
    image_path = metadata["image_paths"][0]
    image_embedding = model.encode_image(image_path)
    print(f"image embedding shape: {image_embedding.shape}")  # (256,)
    text_embedding = model.encode_text("red dress for women")
    print(f"text embedding shape: {text_embedding.shape}")  # (256,)
    similarity = model.compute_similarity(image_embedding, text_embedding)
    print(f"similarity: {similarity:.4f}")

    # 3. batches
    image_paths = metadata["image_paths"][:3]
    image_embeddings = model.encode_batch_images(image_paths, batch_size=16)
    print(f"batch image embeddings: {image_embeddings.shape}")  # (3, 256)
    texts = ["red dress", "blue jeans", "black jacket"]
    text_embeddings = model.encode_batch_texts(texts, batch_size=32)
    print(f"batch text embeddings: {text_embeddings.shape}")  # (3, 256)

    # 4. search over the saved embeddings of the whole catalogue
    all_images = np.load(embeddings_dir / "image_embeddings.npy")
    all_texts = np.load(embeddings_dir / "text_embeddings.npy")
    print("\ntext -> image: 'The lady wears a black sleeveless dress.'")
    for path, score in model.find_similar_images("The lady wears a black sleeveless dress.", all_images,
                                                 metadata["image_paths"], top_k=5):
        print(f"  {Path(path).name}: {score:.4f}")
    print(f"\nimage -> text: {Path(image_path).name}")
    for text, score in model.find_similar_texts(image_path, all_texts, metadata["texts"], top_k=5):
        print(f"  {text}: {score:.4f}")

    # 5. loading precomputed embeddings back (parquet metadata: no unpickling needed)
    data = load_embeddings(embeddings_dir)
    print(f"\nloaded {len(data)} items; columns: {', '.join(data.metadata.columns)}")


if __name__ == "__main__":
    main()
