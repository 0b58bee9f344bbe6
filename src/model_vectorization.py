"""Drop-in for the original toolkit's ``data_embedding/model_vectorization.py``.

Scripts written for it keep working unchanged::

    from model_vectorization import FashionEmbeddingModel, create_dataset_embeddings

and ``python -m model_vectorization CSV MODEL_PATH PROCESSOR_PATH [--output-dir DIR]`` embeds a dataset as
``python model_vectorization.py`` did (the original had the paths written in the file).
"""

from __future__ import annotations

import argparse

from fashion_retrieval import FashionEmbeddingModel, create_dataset_embeddings

__all__ = ["FashionEmbeddingModel", "create_dataset_embeddings"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Embed a dataset (labels_front.csv) as the original toolkit did.")
    parser.add_argument("csv_path")
    parser.add_argument("model_path", help="best_model.pth (or another checkpoint format)")
    parser.add_argument("processor_path", help="the BLIP base folder")
    parser.add_argument("--output-dir", default="embeddings_output")
    args = parser.parse_args(argv)
    image_embeddings, text_embeddings, metadata = create_dataset_embeddings(
        args.csv_path, args.model_path, args.processor_path, args.output_dir
    )
    print(
        f"image embeddings {image_embeddings.shape}, text embeddings {text_embeddings.shape}, "
        f"{len(metadata['image_ids'])} items -> {args.output_dir}"
    )


if __name__ == "__main__":
    main()
