"""SVI checkpoints: everything a fit needs to go on after being killed, in one file.

A fit with ``checkpoint="svi.safetensors"`` writes, every ``checkpoint_every`` steps
and at its end, the optimisation state at that step: every parameter and buffer of the
ELBO module (the guide's locations and scales, trained network weights), the state of
the optimizer (Adam's moment estimates and step counts, the decayed learning rate), the
loss trace so far, and the random-number states of torch, numpy and Python. Tensors
go in the safetensors body; the rest is versioned JSON in the file's metadata, never a
pickle. The file is written to a temporary name and renamed into place, so a fit killed
while writing leaves the previous checkpoint whole.

``fit(..., checkpoint=path, resume=True)`` repeats the deterministic set-up (stage one
is repeated, or read from a ``pretrain_cache``), restores this state and continues from
the saved step; the loss trace and the draws equal an uninterrupted run's with the same
seed. A checkpoint of another fit (other data, model, seed or optimisation settings)
is refused with a :class:`~bayes_moe.inference.checkpoint_errors.CheckpointError`
naming what differs, before any work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from bayes_moe.inference.checkpoint_errors import CheckpointError
from bayes_moe.io import atomic_path

FORMAT = "bayes-moe-svi-state"
FORMAT_VERSION = 1


def fingerprint(model_config: dict, response: torch.Tensor, settings: dict) -> dict:
    """What must match for a checkpoint to continue a fit: JSON-ready.

    ``model_config`` is the model's :meth:`~bayes_moe.BayesianMoE.config`, ``response``
    the responses fitted ``(N, d_y)`` (hashed), ``settings`` the optimisation settings
    that shape the trace (seed, steps, learning rate, guide...).
    """
    digest = hashlib.sha256(response.detach().cpu().numpy().tobytes()).hexdigest()
    return {
        "model": json.loads(json.dumps(model_config, default=str)),
        "response_sha256": digest,
        "response_shape": list(response.shape),
        **json.loads(json.dumps(settings, default=str)),
    }


@dataclass
class SVIState:
    """The optimisation state after ``step`` steps (see the module docstring)."""

    step: int
    losses: list
    converged: bool
    fingerprint: dict
    parameters: dict  # name -> tensor (parameters and buffers of the ELBO module)
    optimizer: dict  # torch optimizer state_dict
    rng: dict  # pyro.util.get_rng_state(), plus "cuda" for a fit on a GPU

    @classmethod
    def capture(
        cls, step, losses, converged, fingerprint, elbo, optimizer, device=None
    ) -> SVIState:
        """The state of ``elbo`` and ``optimizer`` now (tensors copied).

        On a CUDA ``device`` the state of its random-number generator is kept too (Pyro's
        state holds the CPU's only): the guide draws its samples there.
        """
        import pyro.util

        rng = pyro.util.get_rng_state()
        if device is not None and torch.device(device).type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        tensors = {f"parameter/{k}": v for k, v in elbo.named_parameters()}
        tensors.update({f"buffer/{k}": v for k, v in elbo.named_buffers()})
        return cls(
            step=step,
            losses=list(losses),
            converged=converged,
            fingerprint=fingerprint,
            parameters={k: v.detach().clone() for k, v in tensors.items()},
            optimizer=optimizer.state_dict(),
            rng=rng,
        )

    def restore(self, elbo, optimizer, device=None) -> None:
        """Put the parameters, optimizer state and random-number states back.

        The parameters and the optimizer's state go to the devices of the fit's own.
        A CUDA generator's state is put back when the checkpoint has one and the fit runs
        on a CUDA ``device``; a fit resumed on another kind of device than it was
        written on continues the same optimisation with other random numbers.

        Raises
        ------
        CheckpointError
            When a parameter or buffer is missing, extra or misshapen.
        """
        import pyro.util

        current = {f"parameter/{k}": v for k, v in elbo.named_parameters()}
        current.update({f"buffer/{k}": v for k, v in elbo.named_buffers()})
        missing = sorted(set(current) - set(self.parameters))
        extra = sorted(set(self.parameters) - set(current))
        if missing or extra:
            raise CheckpointError(
                f"the checkpoint's parameters do not match the model's: missing {missing[:3]}, "
                f"unexpected {extra[:3]}"
            )
        with torch.no_grad():
            for name, tensor in current.items():
                saved = self.parameters[name]
                if saved.shape != tensor.shape:
                    raise CheckpointError(
                        f"parameter {name!r} has shape {tuple(tensor.shape)}, the checkpoint "
                        f"{tuple(saved.shape)}"
                    )
                tensor.copy_(saved)
        optimizer.load_state_dict(self.optimizer)
        pyro.util.set_rng_state(self.rng)
        if "cuda" in self.rng and device is not None and torch.device(device).type == "cuda":
            torch.cuda.set_rng_state(self.rng["cuda"], device)

    def save(self, path) -> None:
        """Write atomically: tensors as safetensors, the rest as JSON metadata."""
        tensors = dict(self.parameters)
        scalars = {"state": {}, "param_groups": self.optimizer["param_groups"]}
        for index, entry in self.optimizer["state"].items():
            scalars["state"][str(index)] = {}
            for key, value in entry.items():
                if torch.is_tensor(value) and value.dim() > 0:
                    tensors[f"optimizer/{index}/{key}"] = value
                elif torch.is_tensor(value):
                    scalars["state"][str(index)][key] = value.item()
                else:
                    scalars["state"][str(index)][key] = value
        tensors["rng/torch"] = self.rng["torch"]
        if "cuda" in self.rng:
            tensors["rng/cuda"] = self.rng["cuda"]
        version, mt_state, gauss = self.rng["random"]
        np_name, np_keys, np_pos, np_has_gauss, np_gauss = self.rng["numpy"]
        tensors["rng/numpy"] = torch.as_tensor(np.asarray(np_keys, dtype=np.int64))
        document = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "step": self.step,
            "losses": self.losses,
            "converged": self.converged,
            "fingerprint": self.fingerprint,
            "optimizer": scalars,
            "rng": {
                "random": [version, list(mt_state), gauss],
                "numpy": [np_name, int(np_pos), int(np_has_gauss), float(np_gauss)],
            },
        }
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"bayes_moe": json.dumps(document)})

    @classmethod
    def load(cls, path) -> SVIState:
        """Read a file written by :meth:`save`.

        Raises
        ------
        CheckpointError
            When the file is not an SVI checkpoint of a readable version, or is damaged.
        """
        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{path} is not a readable SVI checkpoint: {error}") from error
        try:
            document = json.loads(metadata["bayes_moe"])
            if document["format"] != FORMAT:
                raise CheckpointError(f"{path} is a {document['format']!r} file, not {FORMAT!r}")
            if document["format_version"] != FORMAT_VERSION:
                raise CheckpointError(
                    f"{path} has SVI checkpoint version {document['format_version']}; this "
                    f"version of bayes-moe reads version {FORMAT_VERSION}"
                )
            optimizer = document["optimizer"]
            state = {}
            for index, entry in optimizer["state"].items():
                state[int(index)] = dict(entry)
            for key, value in tensors.items():
                if key.startswith("optimizer/"):
                    _, index, name = key.split("/", 2)
                    state.setdefault(int(index), {})[name] = value
            version, mt_state, gauss = document["rng"]["random"]
            np_name, np_pos, np_has_gauss, np_gauss = document["rng"]["numpy"]
            rng = {
                "torch": tensors["rng/torch"],
                "random": (version, tuple(mt_state), gauss),
                "numpy": (
                    np_name,
                    tensors["rng/numpy"].numpy().astype(np.uint32),
                    np_pos,
                    np_has_gauss,
                    np_gauss,
                ),
            }
            if "rng/cuda" in tensors:
                rng["cuda"] = tensors["rng/cuda"]
            parameters = {
                k: v for k, v in tensors.items() if k.startswith(("parameter/", "buffer/"))
            }
            return cls(
                step=int(document["step"]),
                losses=[float(x) for x in document["losses"]],
                converged=bool(document["converged"]),
                fingerprint=document["fingerprint"],
                parameters=parameters,
                optimizer={"state": state, "param_groups": optimizer["param_groups"]},
                rng=rng,
            )
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as error:
            raise CheckpointError(f"{path} is a damaged SVI checkpoint: {error!r}") from error

    def check_matches(self, fingerprint: dict, path) -> None:
        """CheckpointError naming the first field where this checkpoint's fit differs."""
        for key in sorted(set(fingerprint) | set(self.fingerprint)):
            if fingerprint.get(key) != self.fingerprint.get(key):
                raise CheckpointError(
                    f"{path} is the checkpoint of another fit: {key!r} differs (checkpoint "
                    f"{_short(self.fingerprint.get(key))}, this fit {_short(fingerprint.get(key))}"
                    "); remove it or choose another checkpoint path"
                )


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
