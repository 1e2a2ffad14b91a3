r"""Stage-one results kept on disk, so that one trunk is trained once per training set.

A calibration study fits the same window expert on the same training days many times:
alone and inside the mixture, once per configuration of the gate, once per left-out
expert. Stage one (:func:`~bayes_moe.inference.pretrain.pretrain_expert`) depends only
on the expert's specification, the data it reads, the response, the seed and the
optimisation settings, and it is deterministic given them, so its result can be
reused exactly: a cache hit gives the same trunk weights and guide medians, bit for
bit, as training again on the same machine and torch version.

The key is a SHA-256 digest of everything the result depends on: the expert's config
(:func:`~bayes_moe.models.experts.expert_spec`), the settings, the torch version and
the bytes of the standardized history, origins, volatility summaries and response.
Each entry is one safetensors file (trunk ``state_dict`` under ``trunk/``, guide
medians under ``init/``, the loss trace) with JSON metadata, written atomically; a
file that cannot be read is treated as a miss and overwritten. No pickle anywhere.
Processes may share a directory: two that train the same entry at once write the
same bytes, and the rename is atomic.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from bayes_moe.data.windows import ExpertInputs
from bayes_moe.inference.pretrain import PretrainResult
from bayes_moe.io import atomic_path
from bayes_moe.models.experts import expert_spec
from bayes_moe.models.experts.window import WindowExpert

#: Bumped when the stored layout or the meaning of an entry changes.
CACHE_FORMAT = 1


def _digest_tensor(h: hashlib._Hash, name: str, tensor: torch.Tensor) -> None:
    t = tensor.detach().contiguous().cpu()
    h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
    h.update(t.numpy().tobytes())


class PretrainCache:
    """A folder of stage-one results (see the module docstring).

    Parameters
    ----------
    directory : str or Path
        Created when missing.

    Attributes
    ----------
    hits, misses : int
        Look-ups answered from disk, and those that were not.
    """

    def __init__(self, directory):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def key(
        self, expert: WindowExpert, inputs: ExpertInputs, response: torch.Tensor, settings: dict
    ) -> str:
        """Hex digest of everything the stage-one result of ``expert`` depends on."""
        h = hashlib.sha256()
        meta = {
            "format": CACHE_FORMAT,
            "expert": expert_spec(expert),
            "settings": settings,
            "torch": torch.__version__,
            "columns": list(inputs.columns),
            "n_targets": inputs.n_targets,
            "horizon": inputs.horizon,
            "window": inputs.window,
            "scale_features": list(inputs.scale_features),
        }
        h.update(json.dumps(meta, sort_keys=True, default=str).encode())
        for name, tensor in (
            ("series", inputs.series),
            ("origins", inputs.origins),
            ("vol", inputs.vol),
            ("response", response),
        ):
            _digest_tensor(h, name, tensor)
        return h.hexdigest()

    def path(self, key: str) -> Path:
        """File of an entry."""
        return self.directory / f"{key}.safetensors"

    def load(self, key: str, expert: WindowExpert, inputs: ExpertInputs) -> PretrainResult | None:
        """Put the stored trunk weights into ``expert`` and return the result, or None."""
        path = self.path(key)
        if not path.exists():
            self.misses += 1
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            expert.build(inputs)
            assert expert.trunk is not None  # made by build
            trunk = {k[len("trunk/") :]: v for k, v in tensors.items() if k.startswith("trunk/")}
            expert.trunk.load_state_dict(trunk)
        except (SafetensorError, OSError, RuntimeError, KeyError):
            self.misses += 1
            return None
        self.hits += 1
        init = {k[len("init/") :]: v for k, v in tensors.items() if k.startswith("init/")}
        return PretrainResult(
            losses=tensors["losses"].numpy(),
            init_values=init,
            elapsed_s=float(meta.get("elapsed_s", "nan")),
        )

    def save(self, key: str, expert: WindowExpert, result: PretrainResult) -> Path:
        """Store the trained trunk of ``expert`` and ``result`` atomically."""
        assert expert.trunk is not None  # built by its pretraining
        tensors = {
            f"trunk/{k}": v.detach().contiguous() for k, v in expert.trunk.state_dict().items()
        }
        tensors.update(
            {f"init/{k}": v.detach().contiguous() for k, v in result.init_values.items()}
        )
        tensors["losses"] = torch.from_numpy(np.array(result.losses, dtype=np.float64))
        meta = {"format": str(CACHE_FORMAT), "elapsed_s": repr(result.elapsed_s)}
        path = self.path(key)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return path
