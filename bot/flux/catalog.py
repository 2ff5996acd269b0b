"""The model table: which models each provider offers, what they can do, and which sizes they take.

The vendors change their model lists and size rules often (FLUX_API.md, section 1), so this is data, and
every request is validated against it before any network call. A change of list is a one-line edit here.

Sizes are aspect ratios (``16:9``) by default, which every model accepts; pixel sizes (``1024x1024``) are
allowed only where a model's :class:`PixelRule` says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bot.i18n import Text, lazy
from bot.settings import Provider

from .errors import InvalidParameters

__all__ = [
    "MAX_COUNT",
    "MAX_PROMPT_LENGTH",
    "ModelCatalog",
    "ModelSpec",
    "PixelRule",
    "catalog_for",
]

MAX_PROMPT_LENGTH = 2000
MAX_COUNT = 4

#: Ratios every current model accepts (the vendor's web app sends one of these for every model).
STANDARD_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "21:9", "9:21")
#: The Kontext ratio enum documented by the OpenAI-style relays (seed 003): no 3:2 or 2:3.
KONTEXT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21")

#: Sizes are read with ``fullmatch`` and ASCII digits only: no trailing newline, no other scripts' digits.
_RATIO = re.compile(r"([1-9][0-9]?):([1-9][0-9]?)")
_PIXELS = re.compile(r"([0-9]{2,5})x([0-9]{2,5})")


@dataclass(frozen=True, slots=True)
class PixelRule:
    """Pixel sizes a model accepts: either exact ``presets``, or sides in a range and a multiple."""

    presets: tuple[str, ...] = ()
    min_side: int = 256
    max_side: int = 1440
    multiple: int = 32
    max_pixels: int | None = None

    def describe(self) -> Text | str:
        """The pixel sizes taken, for a member: the presets as they are, else the rule, in their language."""
        if self.presets:
            return ", ".join(self.presets)
        values = {"low": self.min_side, "high": self.max_side, "multiple": self.multiple}
        if self.max_pixels:
            return lazy(
                "WxH with sides {low}..{high}, multiples of {multiple}, at most {megapixels} MP",
                megapixels=self.max_pixels // 1_000_000,
                **values,
            )
        return lazy("WxH with sides {low}..{high}, multiples of {multiple}", **values)

    def accepts(self, width: int, height: int) -> bool:
        if self.presets:
            return f"{width}x{height}" in self.presets
        sides_ok = all(self.min_side <= side <= self.max_side and side % self.multiple == 0 for side in (width, height))
        return sides_ok and (self.max_pixels is None or width * height <= self.max_pixels)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model of one provider."""

    name: str
    can_edit: bool = False
    ratios: tuple[str, ...] = STANDARD_RATIOS
    pixels: PixelRule | None = None
    max_count: int = MAX_COUNT

    @property
    def sizes(self) -> tuple[str, ...]:
        """Sizes to offer as choices: the ratios, then pixel presets when the model has them."""
        return self.ratios + (self.pixels.presets if self.pixels else ())


@dataclass(frozen=True, slots=True)
class ModelCatalog:
    """The models of one provider and the validation of requests against them."""

    provider: Provider
    models: tuple[ModelSpec, ...]
    default_model: str
    default_edit_model: str
    _by_name: dict[str, ModelSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {spec.name: spec for spec in self.models})
        assert self.default_model in self._by_name, self.default_model
        assert self._by_name[self.default_edit_model].can_edit, self.default_edit_model

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    @property
    def edit_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.models if spec.can_edit)

    def get(self, name: str) -> ModelSpec:
        """The model called ``name``, or :class:`InvalidParameters` naming the models there are."""
        try:
            return self._by_name[name]
        except KeyError:
            raise InvalidParameters(
                lazy("Unknown model {model}. Available: {models}.", model=repr(name), models=", ".join(self.names))
            ) from None

    def check_generate(self, *, prompt: str, model: str, size: str, count: int) -> ModelSpec:
        spec = self.get(model)
        check_prompt(prompt)
        check_size(spec, size)
        if not 1 <= count <= spec.max_count:
            if spec.max_count == 1:
                raise InvalidParameters(
                    lazy("{model} makes one image per request (you asked for {count}).", model=model, count=count)
                )
            raise InvalidParameters(
                lazy(
                    "Images per request for {model}: 1 to {most} (you asked for {count}).",
                    model=model,
                    most=spec.max_count,
                    count=count,
                )
            )
        return spec

    def check_edit(self, *, prompt: str, model: str, size: str | None) -> ModelSpec:
        spec = self.get(model)
        if not spec.can_edit:
            raise InvalidParameters(
                lazy(
                    "{model} cannot edit images. Models that can: {models}.",
                    model=model,
                    models=", ".join(self.edit_names),
                )
            )
        check_prompt(prompt)
        if size is not None:
            check_size(spec, size)
        return spec


def check_prompt(prompt: str) -> None:
    if not prompt.strip():
        raise InvalidParameters(lazy("The prompt is empty. Describe the image you want."))
    if len(prompt) > MAX_PROMPT_LENGTH:
        raise InvalidParameters(
            lazy(
                "The prompt is too long. Characters: {length}; the limit is {limit}.",
                length=len(prompt),
                limit=MAX_PROMPT_LENGTH,
            )
        )


def check_size(spec: ModelSpec, size: str) -> None:
    if size in spec.ratios:
        return
    pixels = _PIXELS.fullmatch(size)
    if pixels and spec.pixels and spec.pixels.accepts(int(pixels[1]), int(pixels[2])):
        return
    values = {"size": repr(size), "model": spec.name, "ratios": ", ".join(spec.ratios)}
    if spec.pixels:
        raise InvalidParameters(
            lazy(
                "Size {size} is not available for {model}. Allowed: {ratios}; or {pixels}.",
                pixels=spec.pixels.describe(),
                **values,
            )
        )
    raise InvalidParameters(lazy("Size {size} is not available for {model}. Allowed: {ratios}.", **values))


def ratio_to_pixels(size: str, *, multiple: int = 32, target_pixels: int = 1024 * 1024) -> tuple[int, int]:
    """Width and height near ``target_pixels`` for a ratio (or the pixels of a ``WxH`` size)."""
    pixels = _PIXELS.fullmatch(size)
    if pixels:
        return int(pixels[1]), int(pixels[2])
    ratio = _RATIO.fullmatch(size)
    if not ratio:
        raise InvalidParameters(
            lazy("Size {size} is neither a ratio like 16:9 nor a size like 1024x1024.", size=repr(size))
        )
    rw, rh = int(ratio[1]), int(ratio[2])
    height = (target_pixels * rh / rw) ** 0.5
    width = height * rw / rh
    return _round_to(width, multiple), _round_to(height, multiple)


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


_FLUX1_PIXELS = PixelRule(min_side=256, max_side=1440, multiple=32)
_FLUX2_PIXELS = PixelRule(min_side=64, max_side=2048, multiple=16, max_pixels=4_000_000)

_ACEDATA_PRESETS = PixelRule(presets=("1024x1024", "1024x1792", "1792x1024"))

# AceDataCloud, as of the vendor's October 2026 guide (the newest source; see FLUX_API.md).
_ACEDATA = ModelCatalog(
    provider=Provider.ACEDATA,
    models=(
        ModelSpec("flux-dev", can_edit=True, pixels=_ACEDATA_PRESETS),
        ModelSpec("flux-pro", can_edit=True, pixels=_ACEDATA_PRESETS),
        ModelSpec("flux-kontext-pro", can_edit=True),
        ModelSpec("flux-kontext-max", can_edit=True),
        ModelSpec("flux-2-flex", can_edit=True),
        ModelSpec("flux-2-pro", can_edit=True),
        ModelSpec("flux-2-max", can_edit=True),
        ModelSpec("flux-2-klein"),
    ),
    default_model="flux-dev",
    default_edit_model="flux-kontext-pro",
)

# OpenAI-style relays (seeds 003 and 004): Kontext models edit through `input_image`; ratios only.
_OPENAI = ModelCatalog(
    provider=Provider.OPENAI,
    models=(
        ModelSpec("flux-kontext-pro", can_edit=True, ratios=KONTEXT_RATIOS),
        ModelSpec("flux-kontext-max", can_edit=True, ratios=KONTEXT_RATIOS),
        ModelSpec("flux-pro-1.1-ultra", ratios=KONTEXT_RATIOS),
    ),
    default_model="flux-kontext-pro",
    default_edit_model="flux-kontext-pro",
)

# Black Forest Labs: one image per task, so one image per job.
_BFL = ModelCatalog(
    provider=Provider.BFL,
    models=(
        ModelSpec("flux-2-pro", can_edit=True, pixels=_FLUX2_PIXELS, max_count=1),
        ModelSpec("flux-2-max", can_edit=True, pixels=_FLUX2_PIXELS, max_count=1),
        ModelSpec("flux-2-flex", can_edit=True, pixels=_FLUX2_PIXELS, max_count=1),
        ModelSpec("flux-2-klein-4b", pixels=_FLUX2_PIXELS, max_count=1),
        ModelSpec("flux-kontext-pro", can_edit=True, max_count=1),
        ModelSpec("flux-kontext-max", can_edit=True, max_count=1),
        ModelSpec("flux-pro-1.1", pixels=_FLUX1_PIXELS, max_count=1),
        ModelSpec("flux-pro-1.1-ultra", max_count=1),
        ModelSpec("flux-dev", pixels=_FLUX1_PIXELS, max_count=1),
    ),
    default_model="flux-2-pro",
    default_edit_model="flux-kontext-pro",
)

_CATALOGS = {catalog.provider: catalog for catalog in (_ACEDATA, _OPENAI, _BFL)}


def catalog_for(provider: Provider) -> ModelCatalog:
    """The model table of ``provider``."""
    return _CATALOGS[provider]
