"""Safe image decoding and model preprocessing in PIL + numpy (no torchvision needed).

Decoding: EXIF orientation applied, any mode to RGB with transparency composited on white,
PIL's decompression-bomb limit enforced as an error. Preprocessing follows the base's processor
config exactly (resize with its resample filter, rescale, normalise), so it matches
the model's own processor while running cheaply in DataLoader worker processes.
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
    """A model's image preprocessing, from its processor config; returns float32 [3, H, W].

    Two resize modes cover the families the project loads: resize to exactly ``height`` x ``width`` (BLIP,
    SigLIP), or resize the shorter side to ``shortest_edge`` keeping the aspect ratio, then crop the centre
    ``height`` x ``width`` (CLIP, Chinese-CLIP, most open_clip checkpoints). ``crop_rounding`` is how the crop's
    offset is rounded when the margin is odd: ``floor`` as transformers' processors do, ``round`` (half to even)
    as torchvision's ``CenterCrop`` (open_clip) does."""

    height: int
    width: int
    resample: int
    rescale_factor: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # Decode a JPEG at least twice the input size at a reduced scale (DCT scaling) before the resize: about
    # half the decoding time, but not the processor's exact pixels (see EmbedConfig.jpeg_draft), so opt-in.
    jpeg_draft: bool = False
    shortest_edge: int | None = None  # None: resize to height x width; else resize the shorter side, then crop
    crop_rounding: str = "floor"

    @property
    def reduce_to(self) -> tuple[int, int] | None:
        """What ``open_image`` may reduce a JPEG to before resizing (None: decode at full size)."""
        if not self.jpeg_draft:
            return None
        side = self.shortest_edge or 0
        return (max(self.width, side), max(self.height, side))

    @classmethod
    def from_processor(cls, processor) -> ImagePreprocessor:
        """From a transformers image processor (or a processor holding one). Options it cannot reproduce
        exactly (padding, a longest-edge bound, a crop larger than the resized image) are refused by name."""
        ip = getattr(processor, "image_processor", processor)
        size = dict(ip.size)
        unsupported = [name for name in ("do_pad",) if getattr(ip, name, False)]
        unsupported += [f"size.{k}" for k in ("longest_edge", "max_height", "max_width") if size.get(k)]
        unsupported += [name for name in ("do_resize", "do_rescale", "do_normalize") if not getattr(ip, name, True)]
        if unsupported:
            raise ValueError(f"{type(ip).__name__}: unsupported preprocessing option(s) {', '.join(unsupported)}")
        if size.get("shortest_edge"):
            shortest = int(size["shortest_edge"])
            crop = dict(ip.crop_size) if getattr(ip, "do_center_crop", False) else {}
            height, width = int(crop.get("height", shortest)), int(crop.get("width", shortest))
            if not crop or max(height, width) > shortest:
                raise ValueError(
                    f"{type(ip).__name__}: a shortest-edge resize needs a centre crop no larger than it "
                    f"(size {size}, crop {crop or None})"
                )
        else:
            shortest, height, width = None, int(size["height"]), int(size["width"])
        return cls(
            height=height,
            width=width,
            resample=int(ip.resample),
            rescale_factor=float(ip.rescale_factor),
            mean=tuple(float(x) for x in ip.image_mean),
            std=tuple(float(x) for x in ip.image_std),
            shortest_edge=shortest,
        )

    def describe(self) -> dict:
        """The preprocessing as recorded in a model identity (BLIP's record keeps its original keys)."""
        record = {
            "size": {"height": self.height, "width": self.width},
            "resample": self.resample,
            "rescale_factor": self.rescale_factor,
            "image_mean": list(self.mean),
            "image_std": list(self.std),
        }
        if self.shortest_edge:
            record |= {"shortest_edge": self.shortest_edge, "crop_rounding": self.crop_rounding}
        return record

    def __call__(self, image: Image.Image) -> np.ndarray:
        """Resize (and crop), rescale and normalise one image: float32 [3, H, W]."""
        return self.normalize(self.resize(image))

    def resize(self, image: Image.Image) -> np.ndarray:
        """The resized (and cropped) image as uint8 [H, W, 3]: what the pipeline's decoding workers hand to the
        model (a quarter of the float bytes; normalising a whole batch in torch costs ~0.8 ms per 384 px image
        where numpy in a worker costs ~5 ms)."""
        resample = Image.Resampling(self.resample)
        if self.shortest_edge is None:
            return np.asarray(image.resize((self.width, self.height), resample=resample), dtype=np.uint8)
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.shortest_edge * long / short)
        size = (self.shortest_edge, new_long) if width <= height else (new_long, self.shortest_edge)
        resized = np.asarray(image.resize(size, resample=resample), dtype=np.uint8)
        top = _crop_offset(size[1] - self.height, self.crop_rounding)
        left = _crop_offset(size[0] - self.width, self.crop_rounding)
        return np.ascontiguousarray(resized[top : top + self.height, left : left + self.width])

    def scale_and_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """Normalisation as one multiply-add per channel: x * scale - shift (= (x * rescale - mean) / std)."""
        std = np.asarray(self.std, dtype=np.float64)
        scale = (self.rescale_factor / std).astype(np.float32)
        shift = (np.asarray(self.mean, dtype=np.float64) / std).astype(np.float32)
        return scale, shift

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [..., H, W, 3] -> float32 [..., 3, H, W], as the model's processor normalises."""
        scale, shift = self.scale_and_shift()
        array = np.asarray(pixels, dtype=np.float32) * scale - shift
        return np.ascontiguousarray(np.moveaxis(array, -1, -3))


def _crop_offset(margin: int, rounding: str) -> int:
    return int(round(margin / 2.0)) if rounding == "round" else margin // 2
