"""A synthetic weak-to-strong setting where the strong model's features make the concept salient.

A CPU miniature of the saliency argument of Burns et al. 2023 ("Weak-to-Strong Generalization", §5.2: weak-to-
strong generalization works best when the concept is salient in the strong model's representations):
``x ~ N(0, I_32)``, gold ``y = 1[u > 0]`` with ``u = w*·x / ‖w*‖``. Each example carries three precomputed
feature *views* (in the row as lists):

* ``weak_view``: a noisy nonlinear partial view, ``ReLU(x[:8] P) + ε`` (``P`` 8×16, ``ε ~ N(0, noise²)``);
  a logistic regression on it reaches ~0.62 gold accuracy;
* ``strong_view``: "pretrained" features ``[3u, x[:8], 8 nuisance dims]`` — the concept is salient, and the
  weak model's inputs are also available so its errors *can* be imitated;
* ``control_view``: a negative control, ``[x, 8 nuisance dims]`` (the concept is linear but not salient).

The ``text`` of a row is only an id; models read a view (``synthetic:<view>`` in the w2s pipeline).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from lit_rlhf.tasks.base import Kind, Split, Task

VIEWS = ("weak_view", "strong_view", "control_view")
_SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}


class SalientSynthetic(Task):
    """Gold concept on Gaussian inputs with a weak view and a salient strong view (see module docstring).

    Args:
        dim: input dimension.
        weak_dims: leading coordinates the weak view sees.
        weak_width: width of the weak view's random ReLU projection.
        weak_noise: std of the noise added to the weak view.
        salience: scale of ``u`` in the strong view.
        nuisance: number of pure-noise dimensions appended to the strong and control views.
        concept_seed: seed of ``w*`` and ``P`` (the "world"; fixed across data seeds).
    """

    name = "w2s_synthetic"
    kinds: tuple[Kind, ...] = ("weak",)

    def __init__(self, dim: int = 32, weak_dims: int = 8, weak_width: int = 16, weak_noise: float = 0.5,
                 salience: float = 3.0, nuisance: int = 8, concept_seed: int = 0) -> None:
        if not 0 < weak_dims <= dim:
            raise ValueError(f"need 0 < weak_dims <= dim, got weak_dims={weak_dims}, dim={dim}")
        self.dim, self.weak_dims, self.weak_noise = dim, weak_dims, weak_noise
        self.salience, self.nuisance = salience, nuisance
        g = torch.Generator().manual_seed(concept_seed)
        w = torch.randn(dim, generator=g)
        self.w_star = w / w.norm()
        self.projection = torch.randn(weak_dims, weak_width, generator=g) / weak_dims**0.5

    def sample(self, n: int, seed: int) -> dict[str, torch.Tensor]:
        """``n`` examples as tensors: ``x (n, dim)``, ``u (n,)``, ``label (n,)`` and the three views."""
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, self.dim, generator=g)
        u = x @ self.w_star
        weak = torch.relu(x[:, : self.weak_dims] @ self.projection)
        weak = weak + self.weak_noise * torch.randn(weak.shape, generator=g)
        nuisance = torch.randn(n, self.nuisance, generator=g)
        return {
            "x": x, "u": u, "label": (u > 0).long(), "weak_view": weak,
            "strong_view": torch.cat([self.salience * u[:, None], x[:, : self.weak_dims], nuisance], 1),
            "control_view": torch.cat([x, nuisance], 1),
        }

    def records(self, kind: Kind, split: Split, n: int, seed: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
        """``{"text": id, "label": gold, "weak_view", "strong_view", "control_view"}``; splits use disjoint seeds."""
        self.check_kind(kind)
        data = self.sample(n, seed=1000 * seed + _SPLIT_OFFSET.get(split, 3))
        for i in range(n):
            row = {"text": f"{split}/{seed}/{i}", "label": int(data["label"][i])}
            row.update({v: [round(float(t), 5) for t in data[v][i]] for v in VIEWS})
            yield f"task:{self.name}/{split}#{i}", row

    def reward(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        raise NotImplementedError("the synthetic weak-to-strong task grades labels, not completions")
