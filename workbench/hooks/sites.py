"""Where an intervention acts (its site) and the site's typical scale on valid text.

A site names the pair of hooks an intervention reads from and writes to in one block:

| site      | reads ``h_in``              | adds Δh at                   | widths          |
|-----------|-----------------------------|------------------------------|-----------------|
| ``block`` | ``blocks.{l}.mlp.out.hook_in`` | ``blocks.{l}.hook_resid_post`` | d_mlp → d_model |
| ``mlp_out`` | ``blocks.{l}.mlp.out.hook_in`` | ``blocks.{l}.mlp.out.hook_out`` | d_mlp → d_model |
| ``resid`` | ``blocks.{l}.hook_resid_post`` | ``blocks.{l}.hook_resid_post`` | d_model → d_model |

``block`` (the default) is the paper's reference site: the update of the down-projection is
added to the block's output, after any post-MLP norm. :func:`site_scales` measures the typical
RMS of a site's input and output on the neutral sentences, so interventions can be expressed in
units of it (m = 1 with a unit-RMS vector pushes the state by its typical norm).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch

from workbench.data.concepts import neutral_sentences
from workbench.data.encoding import encode_texts
from workbench.errors import ConfigError
from workbench.hooks.forward import run_batch_with_cache
from workbench.hooks.names import check_layer, mlp_hidden, mlp_output, resid_post, stop_layer_for
from workbench.models.loading import model_device, model_provenance

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

Site = Literal["block", "mlp_out", "resid"]
SITES: tuple[Site, ...] = get_args(Site)
DEFAULT_SITE: Site = "block"


def site_hooks(site: Site, layer: int) -> tuple[str, str]:
    """(input hook, output hook) of a site at a block."""
    if site == "block":
        return mlp_hidden(layer), resid_post(layer)
    if site == "mlp_out":
        return mlp_hidden(layer), mlp_output(layer)
    if site == "resid":
        return (resid_post(layer),) * 2
    raise ConfigError(f"unknown site {site!r}; choose one of {SITES}")


def site_widths(model: TransformerBridge, site: Site) -> tuple[int, int]:
    """(d_in, d_out) of a site on ``model``."""
    if site in ("block", "mlp_out"):
        if model.cfg.d_mlp is None:
            raise ConfigError(f"the {site} site needs an MLP, and this model's config has no d_mlp")
        return model.cfg.d_mlp, model.cfg.d_model
    if site == "resid":
        return model.cfg.d_model, model.cfg.d_model
    raise ConfigError(f"unknown site {site!r}; choose one of {SITES}")


@dataclass(frozen=True)
class SiteScales:
    """Typical per-coordinate RMS of a site's input and output on valid text.

    ``input`` / ``output`` are ``mean ‖h‖ / sqrt(d)`` over the real, non-BOS tokens of
    ``n_texts`` neutral sentences; ``output_norm`` is the typical norm ``mean ‖h_out‖``.
    """

    site: Site
    layer: int
    input: float
    output: float
    output_norm: float
    n_texts: int
    n_tokens: int

    def __post_init__(self) -> None:
        site_hooks(self.site, self.layer)
        for name in ("input", "output", "output_norm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"SiteScales.{name} must be positive and finite, got {value}")

    def check(self, site: Site, layer: int) -> None:
        """Raise if these scales were measured at another site or layer."""
        if (site, layer) != (self.site, self.layer):
            raise ConfigError(
                f"scales were measured at site {self.site!r} layer {self.layer}, "
                f"not at site {site!r} layer {layer}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.no_grad()
def site_scales(
    model: TransformerBridge, site: Site, layer: int, n_texts: int = 64, batch_size: int = 16
) -> SiteScales:
    """Measure :class:`SiteScales` at ``site`` of block ``layer`` on the neutral sentences.

    Results are cached per model object, site, layer and ``n_texts``.
    """
    check_layer(model, layer)
    key = (site, layer, n_texts)
    cached = _CACHE.setdefault(model, {})
    if key in cached:
        return cached[key]
    in_hook, out_hook = site_hooks(site, layer)
    hooks = list(dict.fromkeys([in_hook, out_hook]))
    texts = neutral_sentences()[:n_texts]
    device = model_device(model)
    sums = {hook: 0.0 for hook in hooks}
    count = 0
    for start in range(0, len(texts), batch_size):
        batch = encode_texts(
            model.tokenizer,
            texts[start : start + batch_size],
            prepend_bos=model_provenance(model).prepend_bos,
        ).to(device)
        cache = run_batch_with_cache(model, batch, hooks, stop_layer_for(hooks, model.cfg.n_layers))
        mask = batch.prompt_mask  # real tokens without BOS (its norm is atypical)
        for hook in hooks:
            sums[hook] += float(cache[hook][mask].float().norm(dim=-1).sum())
        count += int(mask.sum())
    d_in, d_out = site_widths(model, site)
    input_norm, output_norm = sums[in_hook] / count, sums[out_hook] / count
    scales = SiteScales(
        site=site,
        layer=layer,
        input=input_norm / math.sqrt(d_in),
        output=output_norm / math.sqrt(d_out),
        output_norm=output_norm,
        n_texts=len(texts),
        n_tokens=count,
    )
    cached[key] = scales
    return scales
