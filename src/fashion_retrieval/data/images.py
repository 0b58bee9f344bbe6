"""Safe image decoding and BLIP preprocessing in PIL + numpy (no torchvision needed).

Decoding: EXIF orientation applied, any mode to RGB with transparency composited on white,
PIL's decompression-bomb limit enforced as an error. Preprocessing follows the base's processor
config exactly (resize with its resample filter, rescale, normalise), so it matches
``BlipProcessor`` while running cheaply in DataLoader worker processes.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fashion_retrieval.errors import ImageError

ImageInput = str | Path | bytes | Image.Image
# Query images from the network: a JPEG larger than the model needs is decoded reduced (DCT scaling: cheap at any
# size, up to PIL's decompression-bomb limit); other formats decode at full size, so they are capped at 4096x4096
# (~0.1 s to decode), which no query needs to exceed. Catalogue images (trusted files) keep PIL's limit.
API_MAX_PIXELS = 4096 * 4096


def to_rgb(image: Image.Image, *, owned: bool = False) -> Image.Image:
    """Apply EXIF orientation and convert to RGB; transparent pixels become white, not black.

    A caller's image is never changed; ``owned`` (decoded here) fixes the orientation in place instead of
    on a copy (a 750x1101 copy per catalogue image otherwise)."""
    if owned:
        ImageOps.exif_transpose(image, in_place=True)
    else:
        image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def open_image(
    source: ImageInput, *, max_pixels: int | None = None, reduce_to: tuple[int, int] | None = None
) -> Image.Image:
    """Decode ``source`` fully into an RGB image, or raise ImageError naming it and the reason.

    ``reduce_to`` (width, height): a JPEG at least twice that size is decoded at a reduced scale (DCT scaling,
    never below that size), which costs a fraction of a full decode. ``max_pixels`` refuses, before decoding,
    an image that would still be decoded at more pixels than that."""
    if isinstance(source, Image.Image):
        return to_rgb(source)
    name = "uploaded image" if isinstance(source, bytes) else str(source)
    try:
        with warnings.catch_warnings():
            # Over PIL's pixel limit is a warning up to 2x and an error beyond; treat both as errors.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            handle = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
            with handle, Image.open(handle) as image:
                if reduce_to and image.format == "JPEG":
                    image.draft("RGB", reduce_to)  # header only: picks the DCT scale, decodes nothing yet
                width, height = image.size
                if max_pixels and width * height > max_pixels:
                    raise ImageError(
                        f"{name}: too many pixels ({width}x{height}; the limit is {max_pixels / 1e6:.1f} Mpx): "
                        "send a smaller image"
                    )
                image.load()
                return to_rgb(image, owned=True)
    except FileNotFoundError as exc:
        raise ImageError(f"{name}: file not found") from exc
    except IsADirectoryError as exc:
        raise ImageError(f"{name}: is a folder, not an image") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: too many pixels (decompression bomb guard): {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not an image PIL can read") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: broken or truncated image ({exc})") from exc


def placeholder_image(size: int = 224) -> Image.Image:
    """The original toolkit's stand-in for an unreadable image: a black square."""
    return Image.new("RGB", (size, size), (0, 0, 0))


@dataclass(frozen=True)
class ImagePreprocessor:
    """BLIP image preprocessing from a processor config; returns float32 [3, H, W]."""

    height: int
    width: int
    resample: int
    rescale_factor: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # Decode a JPEG at least twice the input size at a reduced scale (DCT scaling) before the resize: about
    # half the decoding time, but not the processor's exact pixels (see EmbedConfig.jpeg_draft), so opt-in.
    jpeg_draft: bool = False

    @property
    def reduce_to(self) -> tuple[int, int] | None:
        """What ``open_image`` may reduce a JPEG to before resizing (None: decode at full size)."""
        return (self.width, self.height) if self.jpeg_draft else None

    @classmethod
    def from_processor(cls, processor) -> ImagePreprocessor:
        ip = getattr(processor, "image_processor", processor)
        return cls(
            height=int(ip.size["height"]),
            width=int(ip.size["width"]),
            resample=int(ip.resample),
            rescale_factor=float(ip.rescale_factor),
            mean=tuple(float(x) for x in ip.image_mean),
            std=tuple(float(x) for x in ip.image_std),
        )

    def __call__(self, image: Image.Image) -> np.ndarray:
        """Resize, rescale and normalise one image: float32 [3, H, W]."""
        return self.normalize(self.resize(image))

    def resize(self, image: Image.Image) -> np.ndarray:
        """The resized image as uint8 [H, W, 3]: what the pipeline's decoding workers hand to the model (a
        quarter of the float bytes; normalising a whole batch in torch costs ~0.8 ms per 384 px image where
        numpy in a worker costs ~5 ms)."""
        resized = image.resize((self.width, self.height), resample=Image.Resampling(self.resample))
        return np.asarray(resized, dtype=np.uint8)

    def scale_and_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """Normalisation as one multiply-add per channel: x * scale - shift (= (x * rescale - mean) / std)."""
        std = np.asarray(self.std, dtype=np.float64)
        scale = (self.rescale_factor / std).astype(np.float32)
        shift = (np.asarray(self.mean, dtype=np.float64) / std).astype(np.float32)
        return scale, shift

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [..., H, W, 3] -> float32 [..., 3, H, W], as BLIP's processor normalises."""
        scale, shift = self.scale_and_shift()
        array = np.asarray(pixels, dtype=np.float32) * scale - shift
        return np.ascontiguousarray(np.moveaxis(array, -1, -3))
