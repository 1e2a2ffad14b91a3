"""Helpers on the predictive families experts return.

Experts return ``Independent(Normal | StudentT, 1)``, ``MultivariateNormal`` or
``MultivariateStudentT`` with batch ``S + (N,)`` and event ``(d_y,)``. The mixture
needs to select origins or draws from such a distribution and to join chunks of
draws, which torch does not offer; :func:`index_batch` and :func:`cat_batch` do it
for exactly these families by taking the distribution apart into parameter
tensors of full batch shape and building it again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import cast

import pyro.distributions as dist
import torch
from scipy import special

from bayes_moe.kernels.dispatch import choose_method
from bayes_moe.kernels.mixture_kernels import regime_location_scale_log_prob

Builder = Callable[..., dist.TorchDistribution]


def decompose(
    d: torch.distributions.Distribution | dist.Distribution,
) -> tuple[Builder, list[torch.Tensor]]:
    """Split ``d`` into a builder and its parameters, each expanded to ``batch + ...``.

    ``builder(*params)`` gives back an equal distribution; every parameter tensor
    starts with the full batch shape of ``d``, so indexing or concatenating all of
    them along a batch dimension and rebuilding is valid.
    """
    # The supported families are pyro distributions, so torch distributions as well.
    shape = cast(torch.distributions.Distribution, d).batch_shape
    if isinstance(d, dist.Independent):
        n = d.reinterpreted_batch_ndims
        build, params = decompose(d.base_dist)
        return (lambda *p: build(*p).to_event(n)), params
    if isinstance(d, dist.Normal):
        return dist.Normal, list(torch.broadcast_tensors(d.loc, d.scale))
    if isinstance(d, dist.StudentT):
        return dist.StudentT, list(torch.broadcast_tensors(d.df, d.loc, d.scale))
    event = cast(torch.distributions.Distribution, d).event_shape
    if isinstance(d, dist.MultivariateNormal):
        loc = d.loc.expand(shape + event)
        tril = d.scale_tril.expand(shape + event + event)
        return (lambda loc, tril: dist.MultivariateNormal(loc, scale_tril=tril)), [loc, tril]
    if isinstance(d, dist.MultivariateStudentT):
        params = [
            d.df.expand(shape),
            d.loc.expand(shape + event),
            d.scale_tril.expand(shape + event + event),
        ]
        return dist.MultivariateStudentT, params
    raise TypeError(f"unsupported predictive family {type(d).__name__}")


def index_batch(d: torch.distributions.Distribution, index: tuple) -> dist.TorchDistribution:
    """Apply ``index`` (a tuple over the leading batch dimensions) to ``d``."""
    build, params = decompose(d)
    return build(*[p[index] for p in params])


def scatter_batch(
    d: torch.distributions.Distribution, index: torch.Tensor, size: int
) -> dist.TorchDistribution:
    """``d`` placed at positions ``index`` of a last batch dimension of length ``size``.

    ``d`` has batch ``B + (n,)`` and ``index`` ``(n,)`` distinct positions in
    ``0..size-1``; the result has batch ``B + (size,)``, equal to ``d`` at ``index``.
    The other positions repeat ``d``'s first one: valid parameters, not a prediction
    (sparse inference gives them zero weight).
    """
    build, params = decompose(d)
    dim = len(d.batch_shape) - 1
    full = []
    for p in params:
        shape = list(p.shape)
        shape[dim] = size
        out = p.narrow(dim, 0, 1).expand(shape).clone()
        full.append(out.index_copy(dim, index, p))
    return build(*full)


def cat_batch(
    dists: Sequence[torch.distributions.Distribution], dim: int = 0
) -> dist.TorchDistribution:
    """Concatenate distributions of one family along batch dimension ``dim >= 0``."""
    parts = [decompose(d) for d in dists]
    build = parts[0][0]
    columns = zip(*[params for _, params in parts])
    return build(*[torch.cat(list(col), dim=dim) for col in columns])


def mean_and_variance(d: torch.distributions.Distribution) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Mean and marginal variance, each of shape ``batch + (d_y,)``.

    .. math::

        \operatorname{Var} Y_j = s_j^2 \, \frac{\nu}{\nu - 2}

    with :math:`s_j` the scale (the norm of row ``j`` of the Cholesky factor for the
    multivariate families) and the factor only for the Student-t families: ``inf`` for
    :math:`1 < \nu \le 2` and ``nan`` for :math:`\nu \le 1` (the mean too), as torch
    has it. Computed
    from the parameters, without torch's masked assignments (several times faster on
    the ``(S, N)`` batches of posterior evaluation).
    """
    _, params = decompose(d)
    *df, loc, scale = params
    multivariate = not isinstance(d, dist.Independent)
    variance = scale.square().sum(-1) if multivariate else scale.square()
    if df:
        nu = df[0].unsqueeze(-1) if multivariate else df[0]
        factor = torch.where(nu > 2, nu / (nu - 2), torch.where(nu > 1, torch.inf, torch.nan))
        variance = variance * factor
        loc = torch.where(nu > 1, loc, torch.nan)  # no mean for nu <= 1
    return loc, variance


def location(d: torch.distributions.Distribution) -> torch.Tensor:
    """Location parameter of a supported family, shape ``batch + (d_y,)``.

    For these symmetric location-scale families it is the mean (and the median of
    each margin), and rescaling about it leaves it fixed.
    """
    # Parameters end in (loc, scale) or (loc, scale_tril), after df for Student-t.
    return decompose(d)[1][-2]


def per_row(generators: Sequence[torch.Generator | None], draw) -> torch.Tensor:
    """Stack ``draw(i, generators[i])`` over ``i``: row ``i`` uses that generator alone.

    ``None`` in ``generators`` stands for torch's global generator.
    """
    return torch.stack([draw(i, g) for i, g in enumerate(generators)])


def sample_rows(d: torch.distributions.Distribution, generators: Sequence[torch.Generator | None]):
    """One sample of ``d``, row ``s`` of the batch ``(S, n)`` drawn with ``generators[s]`` only.

    :func:`sample_picked` with one distribution: returns a Tensor ``(S, n, d_y)``.
    """
    choice = torch.zeros(d.batch_shape[:2], dtype=torch.long)
    return sample_picked([d], choice, generators)


def _noise_transform(d: torch.distributions.Distribution):
    r"""``loc (B, d_y)``, ``tril (B, d_y, d_y)``, ``half_df (B, d_y)`` of ``d`` (batch ``B``).

    The scale of ``Independent`` margins as a diagonal factor; ``half_df`` is
    :math:`\nu / 2` per margin, repeated for ``MultivariateStudentT`` and 1 (unused)
    for the Normal families.
    """
    _, params = decompose(d)
    *df, loc, scale = params
    tril = scale if not isinstance(d, dist.Independent) else torch.diag_embed(scale)
    if not df:
        half_df = torch.ones_like(loc)
    elif isinstance(d, dist.Independent):
        half_df = 0.5 * df[0]
    else:
        half_df = 0.5 * df[0].unsqueeze(-1).expand(loc.shape)
    return loc, tril, half_df


def sample_picked(
    dists: Sequence[torch.distributions.Distribution],
    choice: torch.Tensor,
    generators: Sequence[torch.Generator | None],
) -> torch.Tensor:
    r"""One sample per entry of the batch ``(S, n)``, entry ``(s, i)`` from ``dists[choice[s, i]]``.

    The supported families as location-scale transforms of standard noise,

    .. math::

        x = \mu + L \big(z \odot \sqrt{\nu / c}\big), \qquad z \sim N(0, I),
        \quad c \sim \chi^2_\nu = 2\,\mathrm{Gamma}(\nu / 2)

    (:math:`L` the Cholesky factor, diagonal for ``Independent`` margins; the
    :math:`\sqrt{\nu/c}` factor only for the Student-t families, one per margin for
    ``Independent(StudentT)``, one per vector for ``MultivariateStudentT``), with the
    parameters of the chosen distribution only: one normal vector and one gamma vector
    per entry whatever the number of distributions. Row ``s`` is drawn with
    ``generators[s]`` alone (``None``: torch's global generator), so its sample depends
    on its generator only, not on the other rows.

    Parameters
    ----------
    dists : sequence of Distribution
        Each with batch ``(S, n)`` and event ``(d_y,)``.
    choice : LongTensor ``(S, n)``
        Index into ``dists`` of every entry.
    generators : sequence of ``S`` ``torch.Generator`` (or None)

    Returns
    -------
    Tensor ``(S, n, d_y)``
    """
    parts = [_noise_transform(d) for d in dists]
    pick = choice[..., None, None]

    def chosen(tensors: list) -> torch.Tensor:  # stack over dists, take the chosen one
        stacked = torch.stack(tensors, dim=2)  # (S, n, M, ...)
        index = pick.view(pick.shape + (1,) * (stacked.dim() - 4))
        return torch.take_along_dim(stacked, index, dim=2).squeeze(2)

    loc, tril, half_df = (chosen([p[i] for p in parts]) for i in range(3))
    student = torch.tensor([bool(decompose(d)[1][:-2]) for d in dists])[choice]  # (S, n)
    joint = torch.tensor([not isinstance(d, dist.Independent) for d in dists])[choice]
    row_shape = loc.shape[1:]
    z = per_row(generators, lambda i, g: torch.randn(row_shape, generator=g, dtype=loc.dtype))
    chi2 = per_row(generators, lambda i, g: 2.0 * torch._standard_gamma(half_df[i], generator=g))
    stretch = (2.0 * half_df / chi2).sqrt()
    stretch = torch.where(joint.unsqueeze(-1), stretch[..., :1], stretch)
    stretch = torch.where(student.unsqueeze(-1), stretch, torch.ones_like(stretch))
    noise = z * stretch
    if tril.shape[-1] == 1:  # one target: a product (a batched 1 x 1 matmul is slow)
        return loc + tril[..., 0] * noise
    return loc + (tril @ noise.unsqueeze(-1)).squeeze(-1)


def rescale(
    d: torch.distributions.Distribution, log_factor: torch.Tensor
) -> dist.TorchDistribution:
    r"""The distribution of :math:`\mu + c\,(Y - \mu)`, :math:`c = e^{\lambda}`, for ``Y ~ d``.

    The scale (or Cholesky factor) is multiplied by ``c`` about the location
    :math:`\mu`; the family and the degrees of freedom stay.

    Parameters
    ----------
    d : Distribution
        Batch ``B``, event ``(d_y,)``.
    log_factor : Tensor
        :math:`\lambda`, broadcastable to ``B``.

    Returns
    -------
    Distribution
        Batch ``broadcast(B, log_factor.shape)``, event ``(d_y,)``.
    """
    build, params = decompose(d)
    factor = log_factor.exp()
    if isinstance(d, dist.Independent):
        *rest, scale = params
        return build(*rest, scale * factor.unsqueeze(-1))
    *rest, tril = params
    return build(*rest, tril * factor[..., None, None])


def regime_log_prob(
    d: torch.distributions.Distribution, value: torch.Tensor, log_scale: torch.Tensor
):
    r"""Log density of ``value`` under ``d`` rescaled by each regime's volatility level.

    .. math::

        \log p_k(y) = \log p\big(\mu + e^{-\lambda_k} (y - \mu)\big) - d_y\,\lambda_k,

    the change of variables of :func:`rescale`, evaluated without building ``K``
    distributions. For ``Independent`` margins on the CPU with no gradient asked for it
    is one compiled pass
    (:func:`~bayes_moe.kernels.mixture_kernels.regime_location_scale_log_prob`).

    Parameters
    ----------
    d : Distribution
        Batch ``S + (N,)``, event ``(d_y,)``.
    value : Tensor ``(N, d_y)``
    log_scale : Tensor ``S + (K,)``
        :math:`\lambda_k`.

    Returns
    -------
    Tensor ``S + (N, K)``
    """
    if isinstance(d, dist.Independent):
        *df, loc, scale = decompose(d)[1]
        if choose_method("auto", value, log_scale, loc, scale, *df) == "sequential":
            nu = df[0] if df else None
            return regime_location_scale_log_prob(value, loc, scale, nu, log_scale)
        shrink = (-log_scale).exp().movedim(-1, 0)[..., None, None]  # (K,) + S + (1, 1)
        log_p = _margin_terms(value, loc, scale, df, shrink).sum(-1).movedim(0, -1)
    else:
        loc = location(d)  # S + (N, d_y)
        shrink = (-log_scale).exp().movedim(-1, 0)[..., None, None]  # (K,) + S + (1, 1)
        standardized = loc + shrink * (value - loc)  # (K,) + S + (N, d_y)
        log_p = d.log_prob(standardized).movedim(0, -1)  # S + (N, K)
    return log_p - value.shape[-1] * log_scale.unsqueeze(-2)


def _margin_terms(value, loc, scale, df: list, shrink) -> torch.Tensor:
    r""":math:`\log f_\nu(e^{-\lambda_k}(y_j - \mu_j)/s_j) - \log s_j`: ``(K,) + S + (N, d_y)``.

    Normal / Student-t margins (``df`` empty or ``[nu]``), ``shrink`` the factors
    :math:`e^{-\lambda_k}` broadcastable to ``(K,) + S + (N, d_y)``: the normalising
    constant depends on the parameters only, so it is computed once for all ``K``
    regimes.
    """
    z = shrink * ((value - loc) / scale)  # (K,) + S + (N, d_y)
    if df:
        (nu,) = df
        log_norm = (
            scale.log()
            + 0.5 * (nu * math.pi).log()
            + torch.lgamma(0.5 * nu)
            - torch.lgamma(0.5 * (nu + 1.0))
        )
        log_kernel = -0.5 * (nu + 1.0) * torch.log1p(z.square() / nu)
    else:
        log_norm = scale.log() + 0.5 * math.log(2.0 * math.pi)
        log_kernel = -0.5 * z.square()
    return log_kernel - log_norm


def regime_log_prob_margins(
    d: torch.distributions.Distribution, value: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    r"""Each target's term of :func:`regime_log_prob` for independent margins.

    .. math::

        \log p_k(y_j) = \log f_\nu\big(e^{-\lambda_{k,j}} (y_j - \mu_j) / s_j\big)
        - \log s_j - \lambda_{k,j},

    with a level per regime and target (a panel's assets may load on the market's
    levels differently); with :math:`\lambda_{k,j} = \lambda_k` their sum over ``j`` is
    :func:`regime_log_prob`. The torch route, with a gradient.

    Parameters
    ----------
    d : Distribution
        ``Independent`` Normal or Student-t, batch ``S + (N,)``, event ``(d_y,)``.
    value : Tensor ``(N, d_y)``
    log_scale : Tensor ``S + (K, d_y)``
        :math:`\lambda_{k,j}`.

    Returns
    -------
    Tensor ``S + (N, K, d_y)``
    """
    if not isinstance(d, dist.Independent):
        raise TypeError(f"independent margins needed, got {type(d).__name__}")
    *df, loc, scale = decompose(d)[1]
    shrink = (-log_scale).exp().movedim(-2, 0).unsqueeze(-2)  # (K,) + S + (1, d_y)
    terms = _margin_terms(value, loc, scale, df, shrink).movedim(0, -2)  # S + (N, K, d_y)
    return terms - log_scale.unsqueeze(-3)


def first_marginal(
    d: torch.distributions.Distribution,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Degrees of freedom (None for a Normal), location and scale of the first target.

    The first margin of every supported family is a location-scale Normal or
    Student-t: for the multivariate families its scale is the first diagonal entry of
    the Cholesky factor. Each returned tensor has the batch shape of ``d``.
    """
    _, params = decompose(d)
    if isinstance(d, dist.Independent):
        *df, loc, scale = [p[..., 0] for p in params]
    else:
        *df, loc, tril = params
        loc, scale = loc[..., 0], tril[..., 0, 0].abs()
    return (df[0] if df else None), loc, scale


def regime_cdf(d: torch.distributions.Distribution, value: torch.Tensor, log_scale: torch.Tensor):
    r"""CDF of the first target under ``d`` rescaled by each regime's volatility level.

    .. math:: F_k(y) = F_\nu\big((y - \mu) / (\sigma e^{\lambda_k})\big),

    with :math:`\mu, \sigma, \nu` the first margin's location, scale and degrees of
    freedom (:func:`first_marginal`) and :math:`F_\nu` the standard Student-t CDF
    (the standard Normal's for a Normal margin).

    Parameters
    ----------
    d : Distribution
        Batch ``S + (N,)``, event ``(d_y,)``.
    value : Tensor ``(N,)``
        The first target.
    log_scale : Tensor ``S + (K,)``

    Returns
    -------
    Tensor ``S + (N, K)``
    """
    df, loc, scale = first_marginal(d)
    stretch = log_scale.exp().unsqueeze(-2)  # S + (1, K)
    z = (value - loc).unsqueeze(-1) / (scale.unsqueeze(-1) * stretch)  # S + (N, K)
    if df is None:
        return torch.special.ndtr(z)
    df = df.unsqueeze(-1).expand_as(z)
    cdf = special.stdtr(df.detach().cpu().numpy(), z.detach().cpu().numpy())
    return torch.as_tensor(cdf, dtype=z.dtype, device=z.device)
