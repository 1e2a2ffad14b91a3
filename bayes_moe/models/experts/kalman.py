r"""Kalman expert: a latent AR(k) signal observed in heteroscedastic noise.

For each target, a linear-Gaussian state-space model with state
:math:`x_t = (\mu_t, \mu_{t-1}, \dots, \mu_{t-k+1})`,

.. math::

    \mu_t = \sum_{i=1}^{k} \phi_i \mu_{t-i} + \eta_t, \quad \eta_t \sim \mathcal N(0, q^2),
    \qquad
    y_t = d + \mu_t + v_t, \quad v_t \sim \mathcal N(0, s_{t-1}^2),

a persistent component of expected returns buried in noise (for ``k = 1`` the
ARMA(1,1) model of returns). With ``exog`` (covariate columns, e.g. the macro
features of :func:`bayes_moe.data.add_macro_features`) the observation has a
regression on their values at the previous close,

.. math::

    y_t = d + \beta^\top x_{t-1} + \mu_t + v_t, \qquad \beta_i \sim \mathcal N(0, 0.25^2),

with :math:`x` standardized (training mean and standard deviation), :math:`x_{-1} = 0`
and 0 on a missing day (the training mean; the columns may have gaps); the filter
runs on :math:`y_t - \beta^\top x_{t-1}`, and the forecast of day :math:`t+j` holds
:math:`x` at its value at the origin (exact for ``h = 1``):
``{"name": "kalman", "exog": ["credit_spread", "core_cpi_yoy"]}``.

The observation noise scale :math:`s_{t-1}` comes from
the shared scale model evaluated at the previous close, so the filter stays causal
and conditionally heteroscedastic. The filter runs over the whole history
(:func:`bayes_moe.kernels.kalman.kalman_filter`, a parallel scan), and the
predictive of origin ``t`` is the exact distribution of
:math:`y_{t+1} + \dots + y_{t+h}` given the filtered state at ``t``. The state is
initialized at its stationary distribution.

Priors: the AR coefficients come from partial autocorrelations
:math:`r_i \sim \mathcal U(-1, 1)` (Monahan 1984), so the signal is stationary;
:math:`q \sim \mathrm{LogNormal}(-2, 1)`, :math:`d \sim \mathcal N(0, 1)`.

References
----------
J. F. Monahan, "A note on enforcing stationarity in autoregressive-moving average
models", Biometrika 71(2), 1984.
J. Durbin and S. J. Koopman, *Time Series Analysis by State Space Methods*, 2012.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch

from bayes_moe.data.windows import ExpertInputs
from bayes_moe.kernels.kalman import aggregated_observation_forecast, kalman_filter
from bayes_moe.models.experts.base import Expert
from bayes_moe.models.experts.noise import NoiseModel


def pacf_to_ar(pacf: torch.Tensor) -> torch.Tensor:
    r"""Map partial autocorrelations in (-1, 1) to stationary AR coefficients.

    Durbin-Levinson recursion: :math:`\phi^{(m)}_m = r_m`,
    :math:`\phi^{(m)}_j = \phi^{(m-1)}_j - r_m \phi^{(m-1)}_{m-j}` for ``j < m``.

    Parameters
    ----------
    pacf : Tensor, shape ``(..., k)``

    Returns
    -------
    Tensor, shape ``(..., k)``
    """
    k = pacf.shape[-1]
    phi = pacf[..., :1]
    for m in range(1, k):
        r = pacf[..., m : m + 1]
        phi = torch.cat([phi - r * phi.flip(-1), r], dim=-1)
    return phi


def companion(phi: torch.Tensor) -> torch.Tensor:
    """Companion matrix of AR coefficients ``(..., k) -> (..., k, k)``."""
    k = phi.shape[-1]
    shift = torch.eye(k, dtype=phi.dtype, device=phi.device)[:-1]  # (k-1, k)
    return torch.cat([phi.unsqueeze(-2), shift.expand(phi.shape[:-1] + (k - 1, k))], dim=-2)


def stationary_covariance(F: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    r"""Solve the discrete Lyapunov equation :math:`P = F P F^\top + Q`.

    Uses :math:`\mathrm{vec}(P) = (I - F \otimes F)^{-1} \mathrm{vec}(Q)`; fine for the
    small state dimensions used here. Shapes ``(..., k, k)``.
    """
    k = F.shape[-1]
    kron = (F.unsqueeze(-1).unsqueeze(-3) * F.unsqueeze(-2).unsqueeze(-4)).reshape(
        F.shape[:-2] + (k * k, k * k)
    )
    eye = torch.eye(k * k, dtype=F.dtype, device=F.device)
    vec = torch.linalg.solve(eye - kron, Q.reshape(Q.shape[:-2] + (k * k, 1)))
    P = vec.reshape(Q.shape[:-2] + (k, k))
    return 0.5 * (P + P.transpose(-1, -2))


class Kalman(Expert):
    """Latent AR(k) signal plus heteroscedastic noise, filtered exactly.

    Parameters
    ----------
    state_dim : int
        Order ``k`` of the latent signal.
    family : {"studentt", "normal"}
        ``"studentt"`` keeps the Gaussian filter and gives its predictive Student-t
        tails with the same variance.
    heteroscedastic : bool
    exog : sequence of str, optional
        Covariate columns regressed on in the observation equation (module docstring).
    """

    name = "kalman"
    group = "linear"
    capacity = 0
    targets_independent = True
    param_dims = {
        "pacf": ("target", "state"),
        "state_scale": ("target",),
        "obs_intercept": ("target",),
        "exog_coef": ("target", "exog"),
        "scale": ("target",),
        "vol_coef": ("target", "scale_feature"),
        "df": ("target",),
    }

    def __init__(
        self,
        state_dim: int = 1,
        *,
        family: str = "studentt",
        heteroscedastic: bool = True,
        scale_features: Sequence[str] | None = None,
        exog: Sequence[str] | None = None,
    ):
        super().__init__()
        if state_dim < 1:
            raise ValueError(f"state_dim must be >= 1, got {state_dim}")
        if exog is not None and (isinstance(exog, str) or not len(exog)):
            raise ValueError(f"kalman: exog must be a non-empty list of names, got {exog!r}")
        self.state_dim = state_dim
        self.noise = NoiseModel(family, heteroscedastic, scale_features)
        self.exog = None if exog is None else tuple(exog)

    def config(self) -> dict:
        """Constructor arguments."""
        exog = None if self.exog is None else list(self.exog)
        return {"state_dim": self.state_dim, **self.noise.config(), "exog": exog}

    def reads(self, inputs: ExpertInputs) -> tuple[str, ...]:
        """The targets and the ``exog`` columns."""
        return inputs.targets + (self.exog or ())

    def optional_columns(self, inputs: ExpertInputs) -> tuple[str, ...]:
        """The ``exog`` columns, read as 0 (their training mean) on a missing day."""
        return self.exog or ()

    def build(self, inputs: ExpertInputs) -> None:
        """Check that the ``exog`` columns are model columns and not targets."""
        try:
            inputs.column_index(self.reads(inputs))
        except KeyError as err:
            raise ValueError(f"kalman: {err.args[0]}") from None
        targets = [c for c in self.exog or () if c in inputs.targets]
        if targets:
            raise ValueError(f"kalman: exog columns {targets} are targets")

    def param_coords(self, inputs: ExpertInputs) -> dict[str, list]:
        """Names of the scale features and of the ``exog`` columns."""
        coords = super().param_coords(inputs)
        return coords if self.exog is None else {**coords, "exog": list(self.exog)}

    def exog_effect(self, inputs: ExpertInputs, dtype: torch.dtype) -> torch.Tensor | None:
        r"""Sample :math:`\beta`; return :math:`\beta^\top x_t` on every row, ``S + (d_y, T)``."""
        if self.exog is None:
            return None
        self.build(inputs)
        one = torch.ones((), dtype=dtype, device=inputs.series.device)
        beta = pyro.sample(
            "exog_coef",
            dist.Normal(0 * one, 0.25 * one).expand([inputs.n_targets, len(self.exog)]).to_event(2),
        )  # S + (d_y, e)
        x = inputs.mean_filled(self.exog)  # (T, e) standardized, 0 where missing
        return torch.einsum("...de,te->...dt", beta, x)

    def model(self, inputs: ExpertInputs) -> dist.TorchDistribution:
        """Filter the history and return the predictive (see :meth:`Expert.model`)."""
        dtype, device = inputs.series.dtype, inputs.series.device
        d_y, k = inputs.n_targets, self.state_dim
        one = torch.ones((), dtype=dtype, device=device)
        pacf = pyro.sample("pacf", dist.Uniform(-one, one).expand([d_y, k]).to_event(2))
        q = pyro.sample("state_scale", dist.LogNormal(-2 * one, one).expand([d_y]).to_event(1))
        d = pyro.sample("obs_intercept", dist.Normal(0 * one, one).expand([d_y]).to_event(1))
        effect = self.exog_effect(inputs, dtype)  # S + (d_y, T) or None

        # Noise scale of day t's observation uses the summaries at the previous close.
        vol = inputs.vol
        vol_prev = torch.cat([torch.zeros_like(vol[:1]), vol[:-1]], dim=0)  # (T, d_y, V)
        n_rows = vol.shape[0]
        rows_and_origins = torch.cat([vol_prev, inputs.origin_vol], dim=0)
        scale = self.noise.sample_scale(
            rows_and_origins, dtype=dtype, available=inputs.scale_features
        )  # S + (T + N, d_y)
        obs_var = scale.square().transpose(-1, -2)  # S + (d_y, T + N)
        df = self.noise.sample_df(d_y, dtype=dtype, device=device)

        F = companion(pacf_to_ar(pacf))  # S + (d_y, k, k)
        Q = torch.zeros(F.shape, dtype=dtype, device=device)
        Q[..., 0, 0] = q.square()
        c = torch.zeros(F.shape[:-1], dtype=dtype, device=device)
        H = torch.zeros(k, dtype=dtype, device=device)
        H[0] = 1.0
        H = H.expand(F.shape[:-2] + (1, k))
        dvec = d.unsqueeze(-1)  # S + (d_y, 1)
        init_cov = stationary_covariance(F, Q)

        y = inputs.series[:, :d_y].transpose(0, 1).unsqueeze(-1)  # (d_y, T, 1)
        if effect is not None:  # y_t - beta'x_{t-1}, with x_{-1} = 0
            y = y - torch.nn.functional.pad(effect[..., :-1], (1, 0)).unsqueeze(-1)
        R_rows = obs_var[..., :n_rows, None, None]  # S + (d_y, T, 1, 1)
        result = kalman_filter(y, F, c, H, dvec, Q, R_rows, torch.zeros_like(c), init_cov)

        origins = inputs.origins
        mean, cov = aggregated_observation_forecast(
            result.filtered_mean[..., origins, :],
            result.filtered_cov[..., origins, :, :],
            F.unsqueeze(-3),  # broadcast over the origin axis
            c.unsqueeze(-2),
            H.unsqueeze(-3),
            dvec.unsqueeze(-2),
            Q.unsqueeze(-3),
            obs_var[..., n_rows:, None, None],
            inputs.horizon,
        )  # S + (d_y, N, 1), S + (d_y, N, 1, 1)
        loc = mean[..., 0].transpose(-1, -2)  # S + (N, d_y)
        if effect is not None:  # beta'x_t for each of the h days ahead
            loc = loc + inputs.horizon * effect[..., origins].transpose(-1, -2)
        variance = cov[..., 0, 0].transpose(-1, -2)
        return self.noise.predictive_from_variance(loc, variance, df)
