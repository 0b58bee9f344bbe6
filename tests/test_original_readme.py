"""The original toolkit's README examples, as its users wrote them (module `model_vectorization`),
run unchanged but for the paths, against a tiny fine-tuned checkpoint and a generated catalogue."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from transformers import BlipForImageTextRetrieval

from fashion_retrieval.data.synthetic import make_catalog
from tests.helpers import wrap_original

ORIGINAL_EXAMPLES = """
from model_vectorization import FashionEmbeddingModel

# 1. 初始化模型
model = FashionEmbeddingModel(model_path, processor_path)

# 2. 单个图片和文本向量化
image_embedding = model.encode_image("path/to/image.jpg")
print(f"图片嵌入向量维度: {image_embedding.shape}")  # (256,)
text_embedding = model.encode_text("red dress for women")
print(f"文本嵌入向量维度: {text_embedding.shape}")  # (256,)
similarity = model.compute_similarity(image_embedding, text_embedding)
print(f"相似度: {similarity:.4f}")

# 3. 批量处理
image_paths = ["image1.jpg", "image2.jpg", "image3.jpg"]
image_embeddings = model.encode_batch_images(image_paths, batch_size=16)
print(f"批量图片嵌入形状: {image_embeddings.shape}")  # (3, 256)
texts = ["red dress", "blue jeans", "black jacket"]
text_embeddings = model.encode_batch_texts(texts, batch_size=32)
print(f"批量文本嵌入形状: {text_embeddings.shape}")  # (3, 256)

# 4. 相似度搜索
query_text = "black leather jacket"
similar_images = model.find_similar_images(query_text, image_embeddings, image_paths, top_k=5)
for image_path, score in similar_images:
    print(f"{image_path}: {score:.4f}")
query_image = "path/to/query_image.jpg"
similar_texts = model.find_similar_texts(query_image, text_embeddings, texts, top_k=5)
for text, score in similar_texts:
    print(f"{text}: {score:.4f}")

# 5. 生成整个数据集的嵌入
from model_vectorization import create_dataset_embeddings
image_embeddings, text_embeddings, metadata = create_dataset_embeddings(csv_path, model_path, processor_path)

# 6. 加载预计算的嵌入
import numpy as np
import pickle
image_embeddings = np.load("embeddings_output/image_embeddings.npy")
text_embeddings = np.load("embeddings_output/text_embeddings.npy")
with open("embeddings_output/metadata.pkl", "rb") as f:
    metadata = pickle.load(f)
query_text = "red dress"
similar_images = model.find_similar_images(query_text, image_embeddings, metadata['image_paths'], top_k=3)
print("loaded", image_embeddings.shape, text_embeddings.shape, len(similar_images))
"""


@pytest.mark.slow  # 10-20 s: started early, so it does not end the run on one worker
def test_original_readme_examples_run_unchanged(tiny_base, tmp_path):
    checkpoint = tmp_path / "best_model.pth"
    torch.save(wrap_original(BlipForImageTextRetrieval.from_pretrained(tiny_base)).state_dict(), checkpoint)
    csv_path = make_catalog(tmp_path / "dataset", n=12, seed=9, image_size=32)
    images = sorted((tmp_path / "dataset" / "selected_images").iterdir())
    for name, source in zip(
        ["image1.jpg", "image2.jpg", "image3.jpg", "path/to/image.jpg", "path/to/query_image.jpg"], images, strict=False
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(source.read_bytes())
    # then the original command line, `python -m model_vectorization CSV MODEL PROCESSOR`, run as `-m` runs it
    # (runpy, as __main__) in the same interpreter: one Python start-up fewer, the same code
    command = [str(csv_path), str(checkpoint), str(tiny_base), "--output-dir", str(tmp_path / "cli_out")]
    script = (
        f"model_path = {str(checkpoint)!r}\nprocessor_path = {str(tiny_base)!r}\n"
        f"csv_path = {str(csv_path)!r}\n"
        + ORIGINAL_EXAMPLES
        + f"\nimport runpy, sys\nsys.argv = ['model_vectorization', *{command!r}]\n"
        + "runpy.run_module('model_vectorization', run_name='__main__', alter_sys=True)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "图片嵌入向量维度: (256,)" in out and "批量图片嵌入形状: (3, 256)" in out
    assert "loaded (12, 256) (12, 256) 3" in out
    assert (tmp_path / "embeddings_output" / "metadata.pkl").is_file()
    assert "12 items" in out.split("loaded (12, 256) (12, 256) 3", 1)[1]  # printed by the command line
    assert (tmp_path / "cli_out" / "image_embeddings.npy").is_file()
