r"""Denoising diffusion models: noise schedules, the forward process and its posterior, the
terms of the negative ELBO, and Tweedie's formula with exact scores (claims E1 and E2).

The forward (noising) process of Ho et al. (2020) is the Markov chain
:math:`q(x_t|x_{t-1}) = \mathcal N(\sqrt{1-\beta_t}\,x_{t-1}, \beta_t I)`, ``t = 1..T``, whose
marginals are :math:`q(x_t|x_0) = \mathcal N(\sqrt{\bar\alpha_t}\,x_0, (1-\bar\alpha_t)I)` with
:math:`\alpha_t = 1-\beta_t` and :math:`\bar\alpha_t = \prod_{s\le t}\alpha_s`. A model
:math:`p_\theta(x_{0:T}) = \mathcal N(x_T; 0, I)\prod_t p_\theta(x_{t-1}|x_t)` is trained by the
negative ELBO :math:`L_T + \sum_{t=2}^T L_{t-1} + L_0` (:func:`prior_term`,
:func:`denoising_term`, :func:`decoder_term`); with the noise parametrisation each
:math:`L_{t-1}` is a weighted squared error of a noise predictor (:func:`noise_weight`,
:func:`denoising_term_from_noise`), and the optimal noise predictor is the scaled score
:math:`\varepsilon^* = -\sqrt{1-\bar\alpha_t}\,\nabla\log p_t` (:func:`noise_from_score`), which
Tweedie's formula turns into the posterior mean of the data (:func:`tweedie_denoiser`). For
Gaussian and Gaussian-mixture data the scores, denoisers and optimal noise predictors are
exact closed forms (``gaussian_data_*``, ``mixture_data_*``).

Conventions (the same for every function here):

* **Time steps.** A :class:`NoiseSchedule` holds arrays of length ``T + 1`` indexed by the time
  step ``t = 0..T``: ``betas[t] = β_t`` with ``β_0 = 0``, ``alphas[t] = 1 - β_t``,
  ``alpha_bars[t] = ᾱ_t`` with ``ᾱ_0 = 1``, and ``one_minus_alpha_bars[t] = 1 - ᾱ_t`` computed
  without cancellation (``-expm1`` of the cumulative sum of ``log1p(-β)``); the named schedules
  are computed in float64 and then cast, so each entry is correctly rounded in any dtype.
* **t indexes the leading axes of the data.** ``t`` is an integer scalar or array of shape
  ``(*batch,)``; data arrays have shape ``(*batch, *event)`` (``t``'s shape must broadcast to
  the leading ``t.ndim`` axes of the data). Each example gets the coefficients of its own time
  step. A Python or NumPy integer ``t`` outside the function's range is a ``ValueError``; JAX
  array values are not inspected (an out-of-range value reads another step's coefficients, as
  JAX indexing clamps or wraps it).
* **Elementwise.** Every other argument (data, means, standard deviations) broadcasts
  elementwise against the data, and every Gaussian is isotropic (diagonal), so the log-densities
  and KL divergences are returned **per coordinate**: sum them over the event axes to get the
  terms :math:`L_t` of Ho et al. (their :math:`\|\cdot\|^2` are such sums). The mixture
  functions are the exception: their data have one event axis ``d`` (the last), their
  components are isotropic Gaussians in :math:`\mathbb R^d`, and a log-density is per point.
* **dtype.** Results have dtype ``promote_types(result_type(data and parameters), float32)``:
  bfloat16/float16 inputs are computed in float32, and the schedule's arrays are cast to the
  data's dtype (a float64 schedule does not promote float32 data). Standard deviations given
  as Python or NumPy numbers must be finite and ``> 0`` (``ValueError`` naming the argument).
* **Endpoints.** ``t = 0`` (no noise, ``ᾱ_0 = 1``) and ``t = T`` (``ᾱ_T`` as small as
  ``2.4e-9`` for the cosine schedule) give finite values and gradients wherever the quantity is
  defined; where it is not (the posterior below ``t = 1``, a score of the noise-free kernel),
  the function says what it returns there.

References:
  J. Sohl-Dickstein et al., "Deep unsupervised learning using nonequilibrium thermodynamics",
  ICML 2015. J. Ho, A. Jain, P. Abbeel, "Denoising diffusion probabilistic models", NeurIPS 2020
  (eqs. (4)–(12) and §3.2). A. Nichol, P. Dhariwal, "Improved denoising diffusion probabilistic
  models", ICML 2021 (§3.2, the cosine schedule). Y. Song, S. Ermon, "Generative modeling by
  estimating gradients of the data distribution", NeurIPS 2019. P. Vincent, "A connection
  between score matching and denoising autoencoders", Neural Computation 23(7), 2011.
  B. Efron, "Tweedie's formula and selection bias", JASA 106(496), 2011.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from vfe import _checks
from vfe._numerics import result_compute_dtype as _dtype
from vfe._numerics import compute_dtype, kl_term
from vfe.gaussian import gaussian_kl, gaussian_log_density

__all__ = [
    "SCHEDULES",
    "NoiseSchedule",
    "conditional_score",
    "cosine_schedule",
    "decoder_term",
    "denoising_term",
    "denoising_term_from_noise",
    "gaussian_data_denoiser",
    "gaussian_data_noise",
    "gaussian_data_score",
    "linear_schedule",
    "mixture_data_denoiser",
    "mixture_data_log_density",
    "mixture_data_noise",
    "mixture_data_score",
    "noise_from_score",
    "noise_schedule",
    "noise_weight",
    "predict_x0",
    "prior_term",
    "q_marginal",
    "q_posterior",
    "q_posterior_mean_from_noise",
    "q_sample",
    "q_step",
    "schedule_from_betas",
    "tweedie_denoiser",
]

SCHEDULES: tuple[str, ...] = ("linear", "cosine")
"""Names accepted by :func:`noise_schedule`."""


# ----------------------------------------------------------------------------- schedules


class NoiseSchedule(NamedTuple):
    """The variances of a forward process, indexed by the time step ``t = 0..T``.

    A NamedTuple, hence a JAX pytree: it can be passed to (and returned from) ``jit``-ed
    functions. Build one with :func:`noise_schedule`, :func:`linear_schedule`,
    :func:`cosine_schedule` or :func:`schedule_from_betas`.

    Attributes:
      betas: ``β_t``, shape ``(T + 1,)``, ``β_0 = 0``.
      alphas: ``α_t = 1 - β_t`` to full relative accuracy (also where ``β_t ≈ 1``: the cosine
        schedule's ``β_T = 0.999``, whose ``1 - β`` in float32 would lose four digits).
      alpha_bars: ``ᾱ_t = Π_{s≤t} (1 - β_s)``, shape ``(T + 1,)``, ``ᾱ_0 = 1``.
      one_minus_alpha_bars: ``1 - ᾱ_t`` to full relative accuracy (also where ``ᾱ_t ≈ 1``).
    """

    betas: Float[Array, " T1"]
    alphas: Float[Array, " T1"]
    alpha_bars: Float[Array, " T1"]
    one_minus_alpha_bars: Float[Array, " T1"]

    @property
    def num_steps(self) -> int:
        """``T``, the number of noising steps."""
        return self.betas.shape[-1] - 1


def _num_steps(func: str, num_steps) -> int:
    if isinstance(num_steps, (bool, np.bool_)) or not isinstance(num_steps, (int, np.integer)):
        raise TypeError(f"{func}: argument `num_steps` must be an int, got {num_steps!r}")
    if num_steps < 1:
        raise ValueError(f"{func}: argument `num_steps` must be >= 1, got {num_steps}")
    return int(num_steps)


def _unit_interval(func: str, name: str, value, *, closed_right: bool = False) -> float:
    """A Python float in ``(0, 1)`` (or ``(0, 1]``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{func}: argument `{name}` must be a real number, got {value!r}")
    value = float(value)
    if not (0.0 < value < 1.0 or (closed_right and value == 1.0)):
        bound = "(0, 1]" if closed_right else "(0, 1)"
        raise ValueError(f"{func}: argument `{name}` must lie in {bound}, got {value!r}")
    return value


def _float_dtype(func: str, dtype) -> np.dtype:
    try:
        dt = jnp.dtype(dtype)
    except TypeError:
        raise TypeError(f"{func}: argument `dtype` is not a dtype: {dtype!r}") from None
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"{func}: argument `dtype` must be a floating dtype, got {dt}")
    return dt


def _schedule_from_betas64(betas: np.ndarray, dtype) -> NoiseSchedule:
    """The schedule of ``β_1..β_T`` (float64 NumPy), computed in float64 and cast to ``dtype``."""
    betas = np.concatenate([[0.0], np.asarray(betas, dtype=np.float64)])
    log_alpha_bars = np.cumsum(np.log1p(-betas))
    arrays = (betas, 1.0 - betas, np.exp(log_alpha_bars), 0.0 - np.expm1(log_alpha_bars))  # 0 - x: no -0.0
    return NoiseSchedule(*(jnp.asarray(a.astype(dtype)) for a in arrays))


def linear_schedule(num_steps: int, *, beta_start: float = 1e-4, beta_end: float = 0.02,
                    dtype=jnp.float32) -> NoiseSchedule:
    r"""The linear schedule of Ho et al. (2020): ``β_t`` evenly spaced from ``beta_start`` to ``beta_end``.

    .. math:: \beta_t = \beta_{\rm start} + \frac{t-1}{T-1}(\beta_{\rm end}-\beta_{\rm start}),
              \quad t = 1..T,\qquad \bar\alpha_t = \exp\sum_{s\le t}\log(1-\beta_s)

    (``β_1 = beta_start`` when ``T = 1``). Computed in float64, then cast to ``dtype``. With the
    defaults and ``T = 1000`` (Ho et al.'s setting), :math:`\sqrt{\bar\alpha_T} \approx 0.0064`.
    Nichol & Dhariwal rescale the endpoints by ``1000/T`` for other ``T``; pass them explicitly.

    Args:
      num_steps: ``T ≥ 1``.
      beta_start: ``β_1`` in ``(0, 1)``.
      beta_end: ``β_T`` in ``(0, 1)``.
      dtype: floating dtype of the arrays.

    Returns:
      the :class:`NoiseSchedule`.

    References: Ho et al. (2020), §4.
    """
    func = "linear_schedule"
    T = _num_steps(func, num_steps)
    lo, hi = _unit_interval(func, "beta_start", beta_start), _unit_interval(func, "beta_end", beta_end)
    return _schedule_from_betas64(np.linspace(lo, hi, T), _float_dtype(func, dtype))


def cosine_schedule(num_steps: int, *, offset: float = 0.008, max_beta: float = 0.999,
                    dtype=jnp.float32) -> NoiseSchedule:
    r"""The cosine schedule of Nichol & Dhariwal (2021).

    .. math::
        \bar\alpha_t = \frac{f(t)}{f(0)},\quad f(t) = \cos^2\Big(\frac{t/T + s}{1+s}\cdot\frac\pi2\Big),
        \qquad \beta_t = \min\Big(1 - \frac{\bar\alpha_t}{\bar\alpha_{t-1}},\ \beta_{\max}\Big),

    and the returned ``ᾱ`` is recomputed from the clipped ``β`` (as in the authors' code), so
    that it equals :math:`f(t)/f(0)` wherever no clipping happened (all ``t < T`` for
    ``T = 1000``) and stays positive at ``t = T``. ``1 - ᾱ_t/ᾱ_{t-1}`` is evaluated as
    :math:`\sin(b-a)\sin(b+a)/\cos^2 a` (``a``, ``b`` the angles at ``t - 1`` and ``t``), with the
    sines taken of arguments in ``[0, π/2]`` formed directly (``b - a``, ``a + b`` or ``π - (a + b)``,
    ``π/2 - a``): no cancellation, and ``β`` is accurate to a few ulps at every ``t``. Computed in float64, then cast to ``dtype``.

    Args:
      num_steps: ``T ≥ 1``.
      offset: ``s > 0`` (0.008 in the paper: ``β_1`` is then not vanishingly small).
      max_beta: the clip ``β_max`` in ``(0, 1)`` (0.999 in the paper), which keeps ``β_T < 1``.
      dtype: floating dtype of the arrays.

    Returns:
      the :class:`NoiseSchedule`.

    References: Nichol & Dhariwal (2021), eq. (17) and §3.2.
    """
    func = "cosine_schedule"
    T = _num_steps(func, num_steps)
    if isinstance(offset, (bool, np.bool_)) or not isinstance(offset, numbers.Real):
        raise TypeError(f"{func}: argument `offset` must be a real number, got {offset!r}")
    if not (0.0 < float(offset) < math.inf):
        raise ValueError(f"{func}: argument `offset` must be finite and > 0, got {offset!r}")
    clip = _unit_interval(func, "max_beta", max_beta)
    # β_t = 1 - cos²b/cos²a = sin(b - a) sin(a + b)/cos²a with a, b the angles at t - 1, t. Each sine
    # is taken of an argument in [0, π/2] formed directly (b - a = u/T; a + b or π - (a + b); π/2 - a
    # for cos a), never of a difference of rounded angles: every factor is accurate to a few ulps
    s, u = float(offset), np.pi / (2.0 * (1.0 + float(offset)))
    t = np.arange(1, T + 1, dtype=np.float64)
    total, rest = ((2 * t - 1) / T + 2 * s) * u, (2 * T - 2 * t + 1) / T * u  # a + b and π - (a + b)
    betas = np.sin(u / T) * np.sin(np.minimum(total, rest)) / np.sin((T - t + 1) / T * u) ** 2
    return _schedule_from_betas64(np.minimum(betas, clip), _float_dtype(func, dtype))


def noise_schedule(name: str, num_steps: int, *, dtype=jnp.float32) -> NoiseSchedule:
    """A named schedule with its published parameters: ``"linear"`` or ``"cosine"``.

    Args:
      name: one of :data:`SCHEDULES`: ``"linear"`` (Ho et al. 2020, ``β`` from 1e-4 to 0.02) or
        ``"cosine"`` (Nichol & Dhariwal 2021, ``s = 0.008``, ``β`` clipped at 0.999).
      num_steps: ``T ≥ 1``.
      dtype: floating dtype of the arrays.

    Returns:
      the :class:`NoiseSchedule`.

    Raises:
      ValueError: for an unknown name (the message lists the known ones) or ``T < 1``.

    Example:
      >>> s = noise_schedule("linear", 1000)
      >>> round(float(s.alpha_bars[-1]) ** 0.5, 4)
      0.0064
    """
    if not isinstance(name, str):
        raise TypeError(f"noise_schedule: argument `name` must be a string, got {name!r}")
    if name == "linear":
        return linear_schedule(num_steps, dtype=dtype)
    if name == "cosine":
        return cosine_schedule(num_steps, dtype=dtype)
    raise ValueError(f"noise_schedule: unknown schedule {name!r}; known schedules: {', '.join(SCHEDULES)}")


def schedule_from_betas(betas: Float[Array, " T"]) -> NoiseSchedule:
    r"""The schedule of arbitrary variances ``β_1..β_T`` (traceable: ``betas`` may be a traced array).

    .. math:: \bar\alpha_t = \exp\sum_{s=1}^t \log(1-\beta_s),\qquad
              1 - \bar\alpha_t = -\operatorname{expm1}\sum_{s=1}^t\log(1-\beta_s)

    Args:
      betas: ``β_1..β_T``, shape ``(T,)``, values in ``(0, 1)`` (checked when given as a list or a
        NumPy array; a JAX array's values are not inspected).

    Returns:
      the :class:`NoiseSchedule` (arrays of length ``T + 1``, dtype at least float32).
    """
    func = "schedule_from_betas"
    host = not isinstance(betas, jax.Array)
    betas = _checks.floating(func, "betas", betas)
    if betas.ndim != 1 or betas.shape[0] < 1:
        raise ValueError(f"{func}: argument `betas` must have shape (T,) with T >= 1, got {betas.shape}")
    values = np.asarray(betas) if host else None
    if values is not None and not np.all((values > 0) & (values < 1)):
        raise ValueError(f"{func}: argument `betas` must lie in (0, 1), got {values}")
    return _from_betas(betas)


@jax.jit
def _from_betas(betas):
    betas = betas.astype(compute_dtype(betas.dtype))
    betas = jnp.concatenate([jnp.zeros((1,), betas.dtype), betas])
    log_alpha_bars = jnp.cumsum(jnp.log1p(-betas))
    return NoiseSchedule(betas, 1.0 - betas, jnp.exp(log_alpha_bars), 0.0 - jnp.expm1(log_alpha_bars))


# ----------------------------------------------------------------------------- argument checks


def _schedule(func: str, schedule) -> NoiseSchedule:
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"{func}: argument `schedule` must be a NoiseSchedule (see noise_schedule), "
                        f"got {type(schedule).__name__}")
    return schedule


def _time(func: str, t, schedule: NoiseSchedule, lo: int = 0) -> jax.Array:
    """An integer array of time steps; a Python/NumPy integer is checked against ``[lo, T]``."""
    if isinstance(t, (bool, np.bool_)):
        raise TypeError(f"{func}: argument `t` must be an integer time step, got a bool")
    if isinstance(t, (numbers.Integral, np.ndarray, np.generic)):
        arr = np.asarray(t)
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"{func}: argument `t` must have an integer dtype, got {arr.dtype}")
        T = schedule.num_steps
        if arr.size and (arr.min() < lo or arr.max() > T):
            raise ValueError(f"{func}: argument `t` must lie in [{lo}, {T}] (T = the schedule's num_steps), "
                             f"got {t!r}")
        return jnp.asarray(arr)
    return _checks.integer(func, "t", t)


def _leading(func: str, t: jax.Array, shape: tuple[int, ...], what: str = "the data") -> None:
    """``t`` must index the leading axes of an array of ``shape``."""
    k = t.ndim
    ok = k <= len(shape)
    if ok:
        try:
            ok = np.broadcast_shapes(t.shape, shape[:k]) == tuple(shape[:k])
        except ValueError:
            ok = False
    if not ok:
        raise ValueError(f"{func}: argument `t` of shape {t.shape} must broadcast to the leading axes of "
                         f"{what} (shape {tuple(shape)}): t indexes the batch axes, one time step per example")


def _floats(func: str, names, values, positive=()) -> tuple[jax.Array, ...]:
    return tuple(_checks.parameter(func, n, v, positive=n in positive, finite=n in positive)
                 for n, v in zip(names, values))


# ----------------------------------------------------------------------------- kernel helpers


def _sqrt0(x):
    """``sqrt(x)`` for ``x ≥ 0`` with a finite derivative (0) at ``x = 0``."""
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


def _safe(x):
    """``x`` where it is non-zero, else 1 (a denominator whose zero case is handled apart)."""
    return jnp.where(x != 0, x, 1.0)


def _coef(values, t, ndim: int, dtype):
    """``values[t]`` cast to ``dtype`` with trailing unit axes up to ``ndim`` dimensions."""
    c = values.astype(dtype)[t]
    return c.reshape(c.shape + (1,) * (ndim - c.ndim))


def _gather(schedule: NoiseSchedule, t, ndim: int, dtype):
    """``(β_t, ᾱ_t, 1 - ᾱ_t)`` shaped to broadcast against ``ndim``-dimensional data."""
    return (_coef(schedule.betas, t, ndim, dtype), _coef(schedule.alpha_bars, t, ndim, dtype),
            _coef(schedule.one_minus_alpha_bars, t, ndim, dtype))


def _alpha(schedule: NoiseSchedule, t, ndim: int, dtype):
    """``α_t = 1 - β_t`` shaped like :func:`_gather`'s coefficients."""
    return _coef(schedule.alphas, t, ndim, dtype)


def _out_ndim(t, *arrays) -> int:
    return max([t.ndim] + [a.ndim for a in arrays])


# ----------------------------------------------------------------------------- forward process


def q_marginal(schedule: NoiseSchedule, x0: Float[Array, "*batch *event"], t: Int[Array, "*batch"]
               ) -> tuple[Float[Array, "*batch *event"], Float[Array, "*batch *event"]]:
    r"""Mean and variance of the forward marginal :math:`q(x_t|x_0) = \mathcal N(\sqrt{\bar\alpha_t}x_0, (1-\bar\alpha_t)I)`.

    The composition of the one-step kernels :func:`q_step` (claim E1).

    Args:
      schedule: the :class:`NoiseSchedule`.
      x0: data, shape ``(*batch, *event)``.
      t: time steps in ``[0, T]``, shape broadcasting to ``(*batch,)``.

    Returns:
      ``(mean, variance)``, both of ``x0``'s shape (``t = 0``: ``(x0, 0)``).

    References: Ho et al. (2020), eq. (4).
    """
    func = "q_marginal"
    schedule = _schedule(func, schedule)
    t = _time(func, t, schedule)
    x0 = _checks.floating(func, "x0", x0)
    _leading(func, t, x0.shape)
    return _q_marginal(schedule, x0, t)


@jax.jit
def _q_marginal(schedule, x0, t):
    dtype = _dtype(x0)
    _, ab, omab = _gather(schedule, t, _out_ndim(t, x0), dtype)
    mean = _sqrt0(ab) * x0.astype(dtype)
    return mean, jnp.broadcast_to(omab, mean.shape)


def q_step(schedule: NoiseSchedule, x_prev: Float[Array, "*batch *event"], t: Int[Array, "*batch"]
           ) -> tuple[Float[Array, "*batch *event"], Float[Array, "*batch *event"]]:
    r"""Mean and variance of one forward step :math:`q(x_t|x_{t-1}) = \mathcal N(\sqrt{1-\beta_t}x_{t-1}, \beta_t I)`.

    Args:
      schedule: the :class:`NoiseSchedule`.
      x_prev: :math:`x_{t-1}`, shape ``(*batch, *event)``.
      t: time steps in ``[0, T]`` (``t = 0`` is the identity kernel, ``β_0 = 0``).

    Returns:
      ``(mean, variance)``, both of ``x_prev``'s shape.

    References: Ho et al. (2020), eq. (2).
    """
    func = "q_step"
    schedule = _schedule(func, schedule)
    t = _time(func, t, schedule)
    x_prev = _checks.floating(func, "x_prev", x_prev)
    _leading(func, t, x_prev.shape)
    return _q_step(schedule, x_prev, t)


@jax.jit
def _q_step(schedule, x_prev, t):
    dtype = _dtype(x_prev)
    ndim = _out_ndim(t, x_prev)
    beta, _, _ = _gather(schedule, t, ndim, dtype)
    mean = jnp.sqrt(_alpha(schedule, t, ndim, dtype)) * x_prev.astype(dtype)
    return mean, jnp.broadcast_to(beta, mean.shape)


def q_sample(schedule: NoiseSchedule, x0: Float[Array, "*batch *event"], t: Int[Array, "*batch"],
             noise: Float[Array, "*batch *event"]) -> Float[Array, "*batch *event"]:
    r"""A draw of :math:`x_t \sim q(x_t|x_0)` by reparametrisation: :math:`\sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon`.

    Args:
      schedule: the :class:`NoiseSchedule`.
      x0: data, shape ``(*batch, *event)``.
      t: time steps in ``[0, T]``.
      noise: ``ε``, standard normal draws (e.g. ``jax.random.normal(key, x0.shape)``),
        broadcasting with ``x0``.

    Returns:
      ``x_t``, of the broadcast shape.

    References: Ho et al. (2020), Algorithm 1.
    """
    func = "q_sample"
    schedule = _schedule(func, schedule)
    t = _time(func, t, schedule)
    x0, noise = _checks.floating(func, "x0", x0), _checks.floating(func, "noise", noise)
    _leading(func, t, _checks.broadcast_shape(func, ("x0", "noise"), (x0, noise)))
    return _q_sample(schedule, x0, t, noise)


@jax.jit
def _q_sample(schedule, x0, t, noise):
    dtype = _dtype(x0, noise)
    _, ab, omab = _gather(schedule, t, _out_ndim(t, x0, noise), dtype)
    return _sqrt0(ab) * x0.astype(dtype) + _sqrt0(omab) * noise.astype(dtype)


def predict_x0(schedule: NoiseSchedule, xt: Float[Array, "*batch *event"], t: Int[Array, "*batch"],
               noise: Float[Array, "*batch *event"]) -> Float[Array, "*batch *event"]:
    r"""The data point implied by ``x_t`` and a noise (prediction): :math:`(x_t - \sqrt{1-\bar\alpha_t}\,\varepsilon)/\sqrt{\bar\alpha_t}`.

    The inverse of :func:`q_sample` in ``x0``. With the optimal noise predictor
    ``ε* = E[ε|x_t]`` this is Tweedie's ``E[x_0|x_t]`` (claim E2). Loses about
    ``log10(1/ᾱ_t)`` digits to cancellation when ``ᾱ_t`` is small.

    Args:
      schedule: the :class:`NoiseSchedule`.
      xt: ``x_t``, shape ``(*batch, *event)``.
      t: time steps in ``[0, T]``.
      noise: ``ε`` (or a prediction of it), broadcasting with ``xt``.

    Returns:
      ``x̂_0``, of the broadcast shape.

    References: Ho et al. (2020), eq. (15).
    """
    func = "predict_x0"
    schedule = _schedule(func, schedule)
    t = _time(func, t, schedule)
    xt, noise = _checks.floating(func, "xt", xt), _checks.floating(func, "noise", noise)
    _leading(func, t, _checks.broadcast_shape(func, ("xt", "noise"), (xt, noise)))
    return _predict_x0(schedule, xt, t, noise)


@jax.jit
def _predict_x0(schedule, xt, t, noise):
    dtype = _dtype(xt, noise)
    _, ab, omab = _gather(schedule, t, _out_ndim(t, xt, noise), dtype)
    return (xt.astype(dtype) - _sqrt0(omab) * noise.astype(dtype)) / _sqrt0(ab)


# ----------------------------------------------------------------------------- forward posterior


def q_posterior(schedule: NoiseSchedule, x0: Float[Array, "*batch *event"], xt: Float[Array, "*batch *event"],
                t: Int[Array, "*batch"]) -> tuple[Float[Array, "*batch *event"], Float[Array, "*batch *event"]]:
    r"""Mean and variance of the forward posterior :math:`q(x_{t-1}|x_t, x_0) = \mathcal N(\tilde\mu_t, \tilde\beta_t I)`.

    .. math::
        \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\,x_0
                    + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\,x_t,\qquad
        \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t

    (Bayes' rule with the prior :math:`q(x_{t-1}|x_0)` and the likelihood :math:`q(x_t|x_{t-1})`;
    claim E1). At ``t = 1`` it is the point mass at ``x0`` (``μ̃ = x0`` up to rounding, ``β̃ = 0``);
    ``t = 0`` is outside the chain: an array ``t`` equal to 0 returns exactly ``(x0, 0)``, a Python
    ``0`` is an error.

    Args:
      schedule: the :class:`NoiseSchedule`.
      x0: data, shape ``(*batch, *event)``.
      xt: ``x_t``, broadcasting with ``x0``.
      t: time steps in ``[1, T]``.

    Returns:
      ``(μ̃_t, β̃_t)``, both of the broadcast shape.

    References: Ho et al. (2020), eqs. (6)–(7).
    """
    func = "q_posterior"
    schedule = _schedule(func, schedule)
    t = _time(func, t, schedule, lo=1)
    x0, xt = _checks.floating(func, "x0", x0), _checks.floating(func, "xt", xt)
    _leading(func, t, _checks.broadcast_shape(func, ("x0", "xt"), (x0, xt)))
    return _q_posterior(schedule, x0, xt, t)


def _posterior_coefficients(schedule, t, ndim, dtype):
    """``(c_0, c_t, β̃_t)`` with ``μ̃ = c_0 x_0 + c_t x_t``; ``(1, 0, 0)`` at ``t = 0``."""
    tp = jnp.maximum(t - 1, 0)
    beta, _, omab = _gather(schedule, t, ndim, dtype)
    ab_prev, omab_prev = _coef(schedule.alpha_bars, tp, ndim, dtype), _coef(schedule.one_minus_alpha_bars, tp, ndim, dtype)
    den = _safe(omab)
    c0 = jnp.where(omab > 0, _sqrt0(ab_prev) * beta / den, 1.0)
    ct = jnp.sqrt(_alpha(schedule, t, ndim, dtype)) * omab_prev / den
    var = omab_prev * beta / den
    return c0, ct, var


@jax.jit
def _q_posterior(schedule, x0, xt, t):
    dtype = _dtype(x0, xt)
    c0, ct, var = _posterior_coefficients(schedule, t, _out_ndim(t, x0, xt), dtype)
    mean = c0 * x0.astype(dtype) + ct * xt.astype(dtype)
    return mean, jnp.broadcast_to(var, mean.shape)


def q_posterior_mean_from_noise(schedule: NoiseSchedule, xt: Float[Array, "*batch *event"], t: Int[Array, "*batch"],
                                noise: Float[Array, "*batch *event"]) -> Float[Array, "*batch *event"]:
    r"""The posterior mean in terms of the noise: :math:`\tilde\mu_t = \frac{1}{\sqrt{\alpha_t}}\big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\varepsilon\big)`.

    Equal to :func:`q_posterior`'s mean when ``x_t = q_sample(x0, t, ε)``. Given a *predicted*
    noise ``ε_θ(x_t, t)`` instead of ``ε``, this is the mean :math:`\mu_\theta(x_t, t)` of the
    noise-parametrised model :math:`p_\theta(x_{t-1}|x_t)` of Ho et al. (their eq. (11)), for
    which :func:`denoising_term` becomes :func:`denoising_term_from_noise`. ``t = 0`` returns
    ``x_t``.

    Args:
      schedule: the :class:`NoiseSchedule`.
      xt: ``x_t``, shape ``(*batch, *event)``.
      t: time steps in ``[1, T]``.
      noise: ``ε`` or ``ε_θ(x_t, t)``, broadcasting with ``xt``.

    Returns:
      the mean, of the broadcast shape.

    References: Ho et al. (2020), eqs. (10)–(11).
    """
    func = "q_posterior_mean_from_noise"
    schedule = _schedule(func, schedule)
    t = _time(func, t, schedule, lo=1)
    xt, noise = _checks.floating(func, "xt", xt), _checks.floating(func, "noise", noise)
    _leading(func, t, _checks.broadcast_shape(func, ("xt", "noise"), (xt, noise)))
    return _mean_from_noise(schedule, xt, t, noise)


@jax.jit
def _mean_from_noise(schedule, xt, t, noise):
    dtype = _dtype(xt, noise)
    ndim = _out_ndim(t, xt, noise)
    beta, _, omab = _gather(schedule, t, ndim, dtype)
    scale = beta / _safe(_sqrt0(omab))
    return (xt.astype(dtype) - scale * noise.astype(dtype)) / jnp.sqrt(_alpha(schedule, t, ndim, dtype))


# ----------------------------------------------------------------------------- negative ELBO


def prior_term(schedule: NoiseSchedule, x0: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    r"""The prior term :math:`L_T = \mathrm{KL}\big(q(x_T|x_0)\,\|\,\mathcal N(0, I)\big)`, per coordinate.

    .. math:: L_T = \tfrac12\big(\bar\alpha_T x_0^2 + \psi(d)\big) \ge 0,\qquad
              d = -\log(1-\bar\alpha_T),\quad \psi(d) = e^{-d} - 1 + d = -\bar\alpha_T - \log(1-\bar\alpha_T)

    (the KL of :func:`vfe.gaussian.gaussian_kl` with :math:`\sigma_p^2 = 1-\bar\alpha_T`, :math:`\sigma_q = 1`,
    evaluated with its kernel :func:`vfe._numerics.kl_term` but with ``d`` taken from ``ᾱ_T``
    itself: :math:`\sqrt{1-\bar\alpha_T}` rounds to 1 in float32 for the cosine schedule, which
    would lose the :math:`\psi` part, ~1e-18). Accurate to a few ulps relative to itself. It has no
    trainable parameter. For Ho et al.'s linear schedule (T = 1000) and data in ``[-1, 1]`` it is
    at most ``2.1e-5`` nats per coordinate.

    Args:
      schedule: the :class:`NoiseSchedule` (its last step ``T`` is used).
      x0: data, any shape.

    Returns:
      ``L_T`` per coordinate, of ``x0``'s shape; sum over the event axes for a data point.

    References: Ho et al. (2020), eq. (5) and §3.1.
    """
    func = "prior_term"
    schedule = _schedule(func, schedule)
    x0 = _checks.floating(func, "x0", x0)
    return _prior_term(schedule, x0)


@jax.jit
def _prior_term(schedule, x0):
    dtype = _dtype(x0)
    x0 = x0.astype(dtype)
    ab, omab = schedule.alpha_bars[-1].astype(dtype), schedule.one_minus_alpha_bars[-1].astype(dtype)
    # d = log(σ_q²/σ_p²) = -log(1 - ᾱ_T), from whichever of ᾱ_T and 1 - ᾱ_T is the small one
    d = jnp.where(ab < 0.5, -jnp.log1p(-ab), -jnp.log(omab))
    return 0.5 * (ab * x0 * x0 + kl_term(jnp.ones((), dtype), omab, d))


def denoising_term(schedule: NoiseSchedule, x0: Float[Array, "*batch *event"], xt: Float[Array, "*batch *event"],
                   t: Int[Array, "*batch"], model_mean: Float[Array, "*batch *event"], model_std
                   ) -> Float[Array, "*batch *event"]:
    r"""The term :math:`L_{t-1} = \mathrm{KL}\big(q(x_{t-1}|x_t,x_0)\,\|\,p_\theta(x_{t-1}|x_t)\big)`, per coordinate.

    For a Gaussian model :math:`p_\theta(x_{t-1}|x_t) = \mathcal N(\mu_\theta, \sigma_t^2 I)` and the
    posterior of :func:`q_posterior` (computed by :func:`vfe.gaussian.gaussian_kl`):

    .. math:: L_{t-1} = \frac{(\tilde\mu_t-\mu_\theta)^2 + \tilde\beta_t}{2\sigma_t^2}
              + \log\frac{\sigma_t}{\sqrt{\tilde\beta_t}} - \frac12

    For ``t = 1`` the posterior is a point mass and the KL is ``+inf``: the ELBO uses
    :func:`decoder_term` there. The negative ELBO of a data point is
    :math:`L_T + \sum_{t=2}^T \mathbb E_{q(x_t|x_0)} L_{t-1} + \mathbb E_{q(x_1|x_0)} L_0`.

    Args:
      schedule: the :class:`NoiseSchedule`.
      x0: data, shape ``(*batch, *event)``.
      xt: ``x_t`` (e.g. from :func:`q_sample`), broadcasting with ``x0``.
      t: time steps in ``[2, T]``.
      model_mean: ``μ_θ(x_t, t)``, broadcasting with ``x0``.
      model_std: ``σ_t > 0``, broadcasting elementwise with ``x0`` (a scalar, or an array shaped
        like the data; for one ``σ`` per example give it trailing unit axes).

    Returns:
      ``L_{t-1}`` per coordinate, of the broadcast shape.

    References: Ho et al. (2020), eqs. (5) and (8).
    """
    func = "denoising_term"
    schedule = _schedule(func, schedule)
    t = _time(func, t, schedule, lo=2)
    x0, xt = _checks.floating(func, "x0", x0), _checks.floating(func, "xt", xt)
    mean, std = _floats(func, ("model_mean", "model_std"), (model_mean, model_std), positive=("model_std",))
    _leading(func, t, _checks.broadcast_shape(func, ("x0", "xt", "model_mean", "model_std"), (x0, xt, mean, std)))
    return _denoising_term(schedule, x0, xt, t, mean, std)


@jax.jit
def _denoising_term(schedule, x0, xt, t, model_mean, model_std):
    post_mean, post_var = _q_posterior(schedule, x0, xt, t)
    dtype = _dtype(post_mean, model_mean, model_std)
    return gaussian_kl(post_mean.astype(dtype), _sqrt0(post_var).astype(dtype), model_mean.astype(dtype),
                       model_std.astype(dtype))


def decoder_term(x0: Float[Array, "*shape"], model_mean: Float[Array, "*shape"], model_std) -> Float[Array, "*shape"]:
    r"""The reconstruction term :math:`L_0 = -\log p_\theta(x_0|x_1)` of a Gaussian decoder, per coordinate.

    .. math:: L_0 = -\log\mathcal N(x_0; \mu_\theta(x_1, 1), \sigma_1^2)

    A continuous Gaussian decoder (a density, in nats). Ho et al. use a discretised Gaussian over
    the 256 pixel bins instead, for a discrete log-likelihood; for continuous data this is the
    matching term, and it makes the ELBO a bound on the log-*density* :math:`\log p_\theta(x_0)`.

    Args:
      x0: data, any shape.
      model_mean: ``μ_θ(x_1, 1)``, broadcasting with ``x0``.
      model_std: ``σ_1 > 0``, broadcasting with ``x0``.

    Returns:
      ``L_0`` per coordinate, of the broadcast shape.

    References: Ho et al. (2020), eq. (13) (their discrete decoder).
    """
    func = "decoder_term"
    x0 = _checks.floating(func, "x0", x0)
    mean, std = _floats(func, ("model_mean", "model_std"), (model_mean, model_std), positive=("model_std",))
    _checks.broadcast_shape(func, ("x0", "model_mean", "model_std"), (x0, mean, std))
    return -gaussian_log_density(x0, mean, std)


def noise_weight(schedule: NoiseSchedule, t: Int[Array, "*batch"], model_std) -> Float[Array, "*batch"]:
    r"""The weight :math:`\lambda_t = \beta_t^2 / \big(2\sigma_t^2\alpha_t(1-\bar\alpha_t)\big)` of the noise error in :math:`L_{t-1}`.

    With the noise-parametrised mean (:func:`q_posterior_mean_from_noise`),
    :math:`\tilde\mu_t - \mu_\theta = \frac{\beta_t}{\sqrt{\alpha_t}\sqrt{1-\bar\alpha_t}}(\varepsilon_\theta - \varepsilon)`,
    so :math:`L_{t-1} = \lambda_t\|\varepsilon - \varepsilon_\theta\|^2 + C_t` (claim E1; see
    :func:`denoising_term_from_noise`). Ho et al.'s simplified loss sets :math:`\lambda_t = 1`.
    For :math:`\sigma_t^2 = \beta_t` it is :math:`\beta_t/(2\alpha_t(1-\bar\alpha_t))`, for
    :math:`\sigma_t^2 = \tilde\beta_t` it is :math:`\beta_t/(2\alpha_t(1-\bar\alpha_{t-1}))`.
    ``t = 0`` (no term) gives 0.

    Args:
      schedule: the :class:`NoiseSchedule`.
      t: time steps in ``[1, T]``.
      model_std: ``σ_t > 0``, broadcasting with ``t``.

    Returns:
      ``λ_t``, of the broadcast shape of ``t`` and ``model_std``.

    References: Ho et al. (2020), eq. (12).
    """
    func = "noise_weight"
    schedule = _schedule(func, schedule)
    t = _time(func, t, schedule, lo=1)
    (std,) = _floats(func, ("model_std",), (model_std,), positive=("model_std",))
    _checks.broadcast_shape(func, ("t", "model_std"), (t, std))
    return _noise_weight(schedule, t, std)


@jax.jit
def _noise_weight(schedule, t, model_std):
    dtype = _dtype(model_std)
    ndim = _out_ndim(t, model_std)
    beta, _, omab = _gather(schedule, t, ndim, dtype)
    sigma = model_std.astype(dtype)
    alpha = _alpha(schedule, t, ndim, dtype)
    return jnp.where(omab > 0, beta * (beta / _safe(omab)) / (2.0 * alpha * sigma * sigma), 0.0)


def denoising_term_from_noise(schedule: NoiseSchedule, t: Int[Array, "*batch"], noise: Float[Array, "*batch *event"],
                              predicted_noise: Float[Array, "*batch *event"], model_std
                              ) -> Float[Array, "*batch *event"]:
    r""":math:`L_{t-1}` of the noise-parametrised model, per coordinate: :math:`\lambda_t(\varepsilon - \varepsilon_\theta)^2 + C_t`.

    .. math::
        C_t = \mathrm{KL}\big(\mathcal N(0, \tilde\beta_t)\,\|\,\mathcal N(0, \sigma_t^2)\big)
            = \tfrac12\Big(\frac{\tilde\beta_t}{\sigma_t^2} - 1 - \log\frac{\tilde\beta_t}{\sigma_t^2}\Big) \ge 0,

    the part of :math:`L_{t-1}` that does not depend on the prediction (0 exactly when
    :math:`\sigma_t^2 = \tilde\beta_t`), and :math:`\lambda_t` = :func:`noise_weight`. Equal to
    :func:`denoising_term` at ``x_t = q_sample(x0, t, ε)`` and
    ``μ_θ = q_posterior_mean_from_noise(x_t, t, ε_θ)`` (claim E1). ``t = 1`` gives ``+inf``
    (``β̃_1 = 0``), as :func:`denoising_term` does.

    Args:
      schedule: the :class:`NoiseSchedule`.
      t: time steps in ``[2, T]``.
      noise: the ``ε`` that produced ``x_t``, shape ``(*batch, *event)``.
      predicted_noise: ``ε_θ(x_t, t)``, broadcasting with ``noise``.
      model_std: ``σ_t > 0``, broadcasting elementwise with ``noise``.

    Returns:
      ``L_{t-1}`` per coordinate, of the broadcast shape.

    References: Ho et al. (2020), eq. (12).
    """
    func = "denoising_term_from_noise"
    schedule = _schedule(func, schedule)
    t = _time(func, t, schedule, lo=2)
    noise = _checks.floating(func, "noise", noise)
    pred = _checks.floating(func, "predicted_noise", predicted_noise)
    (std,) = _floats(func, ("model_std",), (model_std,), positive=("model_std",))
    _leading(func, t, _checks.broadcast_shape(func, ("noise", "predicted_noise", "model_std"), (noise, pred, std)))
    return _denoising_term_from_noise(schedule, t, noise, pred, std)


@jax.jit
def _denoising_term_from_noise(schedule, t, noise, pred, model_std):
    dtype = _dtype(noise, pred, model_std)
    ndim = _out_ndim(t, noise, pred, model_std)
    beta, _, omab = _gather(schedule, t, ndim, dtype)
    _, _, post_var = _posterior_coefficients(schedule, t, ndim, dtype)
    sigma = model_std.astype(dtype)
    alpha = _alpha(schedule, t, ndim, dtype)
    weight = jnp.where(omab > 0, beta * (beta / _safe(omab)) / (2.0 * alpha * sigma * sigma), 0.0)
    error = noise.astype(dtype) - pred.astype(dtype)
    constant = gaussian_kl(jnp.zeros((), dtype), _sqrt0(post_var), jnp.zeros((), dtype), sigma)
    return weight * error * error + constant


# ----------------------------------------------------------------------------- scores and Tweedie


def tweedie_denoiser(schedule: NoiseSchedule, xt: Float[Array, "*batch *event"], t: Int[Array, "*batch"],
                     score: Float[Array, "*batch *event"]) -> Float[Array, "*batch *event"]:
    r"""Tweedie's formula: :math:`\mathbb E[x_0|x_t] = \big(x_t + (1-\bar\alpha_t)\nabla\log p_t(x_t)\big)/\sqrt{\bar\alpha_t}`.

    For :math:`x_t = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon` with any data law,
    :math:`\mathbb E[\sqrt{\bar\alpha_t}x_0|x_t] = x_t + (1-\bar\alpha_t)\nabla\log p_t(x_t)`
    (claim E2). Exact given the exact score of the noisy marginal :math:`p_t`; it loses about
    ``log10(1/ᾱ_t)`` digits to cancellation when ``ᾱ_t`` is small (prefer the closed-form
    denoisers there). ``t = 0`` returns ``x_t``.

    Args:
      schedule: the :class:`NoiseSchedule`.
      xt: ``x_t``, shape ``(*batch, *event)``.
      t: time steps in ``[0, T]``.
      score: :math:`\nabla\log p_t(x_t)`, broadcasting with ``xt``.

    Returns:
      ``E[x_0|x_t]``, of the broadcast shape.

    References: Efron (2011), eq. (2.8); Ho et al. (2020), §3.2.
    """
    func = "tweedie_denoiser"
    schedule = _schedule(func, schedule)
    t = _time(func, t, schedule)
    xt, score = _checks.floating(func, "xt", xt), _checks.floating(func, "score", score)
    _leading(func, t, _checks.broadcast_shape(func, ("xt", "score"), (xt, score)))
    return _tweedie(schedule, xt, t, score)


@jax.jit
def _tweedie(schedule, xt, t, score):
    dtype = _dtype(xt, score)
    _, ab, omab = _gather(schedule, t, _out_ndim(t, xt, score), dtype)
    return (xt.astype(dtype) + omab * score.astype(dtype)) / _sqrt0(ab)


def noise_from_score(schedule: NoiseSchedule, t: Int[Array, "*batch"], score: Float[Array, "*batch *event"]
                     ) -> Float[Array, "*batch *event"]:
    r"""The noise predictor of a score: :math:`\varepsilon = -\sqrt{1-\bar\alpha_t}\,s`.

    With the exact score :math:`s = \nabla\log p_t(x_t)` this is the optimal noise predictor
    :math:`\varepsilon^*(x_t) = \mathbb E[\varepsilon|x_t]`, the minimiser of
    :math:`\mathbb E\|\varepsilon - \varepsilon_\theta(x_t)\|^2` (claim E2). ``t = 0`` gives 0.

    Args:
      schedule: the :class:`NoiseSchedule`.
      t: time steps in ``[0, T]``.
      score: a score (model or exact), shape ``(*batch, *event)``.

    Returns:
      the noise prediction, of ``score``'s shape.

    References: Ho et al. (2020), §3.2; Song & Ermon (2019).
    """
    func = "noise_from_score"
    schedule = _schedule(func, schedule)
    t = _time(func, t, schedule)
    score = _checks.floating(func, "score", score)
    _leading(func, t, score.shape)
    return _noise_from_score(schedule, t, score)


@jax.jit
def _noise_from_score(schedule, t, score):
    dtype = _dtype(score)
    _, _, omab = _gather(schedule, t, _out_ndim(t, score), dtype)
    return -_sqrt0(omab) * score.astype(dtype)


def conditional_score(schedule: NoiseSchedule, x0: Float[Array, "*batch *event"], xt: Float[Array, "*batch *event"],
                      t: Int[Array, "*batch"]) -> Float[Array, "*batch *event"]:
    r"""The score of the forward kernel: :math:`\nabla_{x_t}\log q(x_t|x_0) = -(x_t - \sqrt{\bar\alpha_t}x_0)/(1-\bar\alpha_t)`.

    The regression target of denoising score matching (Vincent 2011; Song & Ermon 2019); at
    ``x_t = q_sample(x0, t, ε)`` it is :math:`-\varepsilon/\sqrt{1-\bar\alpha_t}`, so the noise
    loss :math:`\|\varepsilon - \varepsilon_\theta\|^2` with :math:`\varepsilon_\theta = -\sqrt{1-\bar\alpha_t}s_\theta`
    is :math:`(1-\bar\alpha_t)\|s_\theta - \nabla\log q(x_t|x_0)\|^2` (claim E2: the objectives
    agree up to weights). The kernel at ``t = 0`` is a point mass with no score: an array ``t``
    equal to 0 gives 0 (so that a batch containing it stays finite); a Python ``0`` is an error.

    Args:
      schedule: the :class:`NoiseSchedule`.
      x0: data, shape ``(*batch, *event)``.
      xt: ``x_t``, broadcasting with ``x0``.
      t: time steps in ``[1, T]``.

    Returns:
      the score, of the broadcast shape.

    References: Vincent (2011), eq. (9) ff.; Song & Ermon (2019), eq. (2).
    """
    func = "conditional_score"
    schedule = _schedule(func, schedule)
    t = _time(func, t, schedule, lo=1)
    x0, xt = _checks.floating(func, "x0", x0), _checks.floating(func, "xt", xt)
    _leading(func, t, _checks.broadcast_shape(func, ("x0", "xt"), (x0, xt)))
    return _conditional_score(schedule, x0, xt, t)


@jax.jit
def _conditional_score(schedule, x0, xt, t):
    dtype = _dtype(x0, xt)
    _, ab, omab = _gather(schedule, t, _out_ndim(t, x0, xt), dtype)
    score = -(xt.astype(dtype) - _sqrt0(ab) * x0.astype(dtype)) / _safe(omab)
    return jnp.where(omab > 0, score, 0.0)


# ----------------------------------------------------------------------------- Gaussian data


def _gaussian_data_args(func, schedule, xt, t, mean, std):
    schedule = _schedule(func, schedule)
    t = _time(func, t, schedule)
    xt = _checks.floating(func, "xt", xt)
    mean, std = _floats(func, ("mean", "std"), (mean, std), positive=("std",))
    _leading(func, t, _checks.broadcast_shape(func, ("xt", "mean", "std"), (xt, mean, std)))
    return schedule, xt, t, mean, std


def _gaussian_data_parts(schedule, xt, t, mean, std):
    """``(x, √ᾱ, 1 - ᾱ, s², residual x - √ᾱ m, marginal variance ᾱs² + 1 - ᾱ)`` in the compute dtype."""
    dtype = _dtype(xt, mean, std)
    _, ab, omab = _gather(schedule, t, _out_ndim(t, xt, mean, std), dtype)
    x, m, s = xt.astype(dtype), mean.astype(dtype), std.astype(dtype)
    root = _sqrt0(ab)
    s2 = s * s
    return x, root, omab, s2, x - root * m, ab * s2 + omab


def gaussian_data_score(schedule: NoiseSchedule, xt: Float[Array, "*batch *event"], t: Int[Array, "*batch"],
                        mean, std) -> Float[Array, "*batch *event"]:
    r"""Exact score of the noisy marginal for Gaussian data :math:`x_0 \sim \mathcal N(m, s^2 I)`.

    .. math:: p_t = \mathcal N\big(\sqrt{\bar\alpha_t}m,\ (\bar\alpha_t s^2 + 1 - \bar\alpha_t)I\big),\qquad
              \nabla\log p_t(x) = -\frac{x - \sqrt{\bar\alpha_t}m}{\bar\alpha_t s^2 + 1 - \bar\alpha_t}

    (elementwise: ``mean`` and ``std`` may differ per coordinate, a diagonal Gaussian).

    Args:
      schedule: the :class:`NoiseSchedule`.
      xt: points ``x_t``, shape ``(*batch, *event)``.
      t: time steps in ``[0, T]``.
      mean: ``m``, broadcasting with ``xt``.
      std: ``s > 0``, broadcasting with ``xt``.

    Returns:
      :math:`\nabla\log p_t(x_t)`, of the broadcast shape.

    References: claim E2.
    """
    args = _gaussian_data_args("gaussian_data_score", schedule, xt, t, mean, std)
    return _gaussian_data_score(*args)


@jax.jit
def _gaussian_data_score(schedule, xt, t, mean, std):
    _, _, _, _, resid, var = _gaussian_data_parts(schedule, xt, t, mean, std)
    return -resid / var


def gaussian_data_denoiser(schedule: NoiseSchedule, xt: Float[Array, "*batch *event"], t: Int[Array, "*batch"],
                           mean, std) -> Float[Array, "*batch *event"]:
    r"""Exact posterior mean :math:`\mathbb E[x_0|x_t]` for Gaussian data :math:`x_0 \sim \mathcal N(m, s^2 I)`.

    .. math:: \mathbb E[x_0|x_t] = m + \frac{\sqrt{\bar\alpha_t}\,s^2}{\bar\alpha_t s^2 + 1 - \bar\alpha_t}(x_t - \sqrt{\bar\alpha_t}m)

    (conjugate normal model; equal to Tweedie's formula with :func:`gaussian_data_score`, and
    accurate also where ``ᾱ_t → 0``, where it tends to ``m``). ``t = 0`` gives ``x_t``.

    Args:
      schedule: the :class:`NoiseSchedule`.
      xt: points ``x_t``, shape ``(*batch, *event)``.
      t: time steps in ``[0, T]``.
      mean: ``m``, broadcasting with ``xt``.
      std: ``s > 0``, broadcasting with ``xt``.

    Returns:
      ``E[x_0|x_t]``, of the broadcast shape.

    References: Bishop (2006), eq. (2.141) (the conjugate normal posterior); claim E2.
    """
    args = _gaussian_data_args("gaussian_data_denoiser", schedule, xt, t, mean, std)
    return _gaussian_data_denoiser(*args)


@jax.jit
def _gaussian_data_denoiser(schedule, xt, t, mean, std):
    x, root, _, s2, resid, var = _gaussian_data_parts(schedule, xt, t, mean, std)
    return mean.astype(x.dtype) + root * s2 * resid / var


def gaussian_data_noise(schedule: NoiseSchedule, xt: Float[Array, "*batch *event"], t: Int[Array, "*batch"],
                        mean, std) -> Float[Array, "*batch *event"]:
    r"""The optimal noise predictor :math:`\varepsilon^*(x_t) = \mathbb E[\varepsilon|x_t]` for Gaussian data.

    .. math:: \varepsilon^*(x_t) = -\sqrt{1-\bar\alpha_t}\,\nabla\log p_t(x_t)
              = \frac{\sqrt{1-\bar\alpha_t}\,(x_t - \sqrt{\bar\alpha_t}m)}{\bar\alpha_t s^2 + 1 - \bar\alpha_t},

    affine in ``x_t``: it minimises :math:`\mathbb E\|\varepsilon - \varepsilon_\theta(x_t)\|^2`
    over all predictors, with minimum :math:`\bar\alpha_t s^2/(\bar\alpha_t s^2 + 1 - \bar\alpha_t)`
    per coordinate (claim E2). ``t = 0`` gives 0.

    Args:
      schedule: the :class:`NoiseSchedule`.
      xt: points ``x_t``, shape ``(*batch, *event)``.
      t: time steps in ``[0, T]``.
      mean: ``m``, broadcasting with ``xt``.
      std: ``s > 0``, broadcasting with ``xt``.

    Returns:
      ``ε*(x_t)``, of the broadcast shape.
    """
    args = _gaussian_data_args("gaussian_data_noise", schedule, xt, t, mean, std)
    return _gaussian_data_noise(*args)


@jax.jit
def _gaussian_data_noise(schedule, xt, t, mean, std):
    _, _, omab, _, resid, var = _gaussian_data_parts(schedule, xt, t, mean, std)
    return _sqrt0(omab) * resid / var


# ----------------------------------------------------------------------------- Gaussian-mixture data


def _mixture_args(func, schedule, xt, t, weights, means, stds):
    schedule = _schedule(func, schedule)
    t = _time(func, t, schedule)
    xt = _checks.floating(func, "xt", xt)
    weights = _checks.floating(func, "weights", weights)
    means = _checks.floating(func, "means", means)
    stds = _checks.parameter(func, "stds", stds, positive=True, finite=True)
    if xt.ndim < 1:
        raise ValueError(f"{func}: argument `xt` must have a last (event) axis d, got a scalar; use shape (..., 1) "
                         "for 1-D data")
    if weights.ndim != 1:
        raise ValueError(f"{func}: argument `weights` must have shape (K,), got {weights.shape}")
    k, d = weights.shape[0], xt.shape[-1]
    if means.shape != (k, d):
        raise ValueError(f"{func}: argument `means` must have shape (K, d) = {(k, d)} (K from `weights`, d the last "
                         f"axis of `xt`), got {means.shape}")
    if stds.shape != (k,):
        raise ValueError(f"{func}: argument `stds` must have shape (K,) = {(k,)}, got {stds.shape}")
    _leading(func, t, xt.shape[:-1], "the data without its event axis")
    return schedule, xt, t, weights, means, stds


def _mixture_parts(schedule, xt, t, weights, means, stds):
    r"""Per-component quantities on a ``(*batch, K, d)`` layout.

    Returns ``(x, √ᾱ, 1 - ᾱ, s_k², residual x - √ᾱ m_k, v_k = ᾱ s_k² + 1 - ᾱ, log r_k)`` with the
    responsibilities :math:`r_k(x) \propto \pi_k \mathcal N(x; \sqrt{\bar\alpha}m_k, v_k I)` (on
    the ``K`` axis, log-normalised), and the log-density of the mixture.
    """
    dtype = _dtype(xt, weights, means, stds)
    x = xt.astype(dtype)[..., None, :]  # (*batch, 1, d)
    _, ab, omab = _gather(schedule, t, x.ndim, dtype)  # (*t, 1, ..., 1)
    root = _sqrt0(ab)
    s2 = jnp.square(stds.astype(dtype))[:, None]  # (K, 1)
    var = ab * s2 + omab  # (..., K, 1)
    resid = x - root * means.astype(dtype)  # (*batch, K, d)
    comp = jnp.sum(gaussian_log_density(resid, jnp.zeros((), dtype), _sqrt0(var)), axis=-1)  # (*batch, K)
    w = weights.astype(dtype)
    log_w = jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)
    joint = log_w + comp
    log_p = jax.nn.logsumexp(joint, axis=-1)
    log_r = joint - log_p[..., None]
    return x, root, omab, s2, resid, var, log_r, log_p


def mixture_data_log_density(schedule: NoiseSchedule, xt: Float[Array, "*batch d"], t: Int[Array, "*batch"],
                             weights: Float[Array, " K"], means: Float[Array, "K d"], stds: Float[Array, " K"]
                             ) -> Float[Array, "*batch"]:
    r"""Log-density of the noisy marginal :math:`p_t` of Gaussian-mixture data.

    For :math:`x_0 \sim \sum_k \pi_k\mathcal N(m_k, s_k^2 I_d)`, the marginal of
    :math:`x_t = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\varepsilon` is again a mixture,

    .. math:: p_t(x) = \sum_k \pi_k\,\mathcal N\big(x;\ \sqrt{\bar\alpha_t}m_k,\ (\bar\alpha_t s_k^2 + 1 - \bar\alpha_t)I_d\big),

    evaluated by log-sum-exp over the components (zero weights contribute nothing). For
    ``d = 1`` it equals :func:`vfe.gaussian.gaussian_mixture_log_density` with those means and
    standard deviations.

    Args:
      schedule: the :class:`NoiseSchedule`.
      xt: points, shape ``(*batch, d)`` (``d`` the last axis; ``(..., 1)`` for 1-D data).
      t: time steps in ``[0, T]``, shape broadcasting to ``(*batch,)``.
      weights: ``π_k ≥ 0`` summing to one, shape ``(K,)`` (not checked).
      means: ``m_k``, shape ``(K, d)``.
      stds: ``s_k > 0``, shape ``(K,)``.

    Returns:
      ``log p_t(x_t)``, shape ``(*batch,)``.

    References: Bishop (2006), eq. (2.115) (a linear-Gaussian marginal), per component; claim E2.
    """
    args = _mixture_args("mixture_data_log_density", schedule, xt, t, weights, means, stds)
    return _mixture_log_density(*args)


@jax.jit
def _mixture_log_density(schedule, xt, t, weights, means, stds):
    return _mixture_parts(schedule, xt, t, weights, means, stds)[-1]


def mixture_data_score(schedule: NoiseSchedule, xt: Float[Array, "*batch d"], t: Int[Array, "*batch"],
                       weights: Float[Array, " K"], means: Float[Array, "K d"], stds: Float[Array, " K"]
                       ) -> Float[Array, "*batch d"]:
    r"""Exact score :math:`\nabla\log p_t` of the noisy marginal of Gaussian-mixture data.

    .. math:: \nabla\log p_t(x) = -\sum_k r_k(x)\,\frac{x - \sqrt{\bar\alpha_t}m_k}{\bar\alpha_t s_k^2 + 1 - \bar\alpha_t},
              \qquad r_k(x) = \frac{\pi_k\mathcal N_k(x)}{p_t(x)}

    (the gradient of :func:`mixture_data_log_density`, in closed form; the responsibilities
    ``r_k`` come from a log-softmax, so points far in the tails are exact too).

    Args, shapes: as :func:`mixture_data_log_density`.

    Returns:
      the score, of ``xt``'s shape.
    """
    args = _mixture_args("mixture_data_score", schedule, xt, t, weights, means, stds)
    return _mixture_score(*args)


@jax.jit
def _mixture_score(schedule, xt, t, weights, means, stds):
    _, _, _, _, resid, var, log_r, _ = _mixture_parts(schedule, xt, t, weights, means, stds)
    return -jnp.sum(jnp.exp(log_r)[..., None] * resid / var, axis=-2)


def mixture_data_denoiser(schedule: NoiseSchedule, xt: Float[Array, "*batch d"], t: Int[Array, "*batch"],
                          weights: Float[Array, " K"], means: Float[Array, "K d"], stds: Float[Array, " K"]
                          ) -> Float[Array, "*batch d"]:
    r"""Exact posterior mean :math:`\mathbb E[x_0|x_t]` for Gaussian-mixture data.

    .. math:: \mathbb E[x_0|x_t] = \sum_k r_k(x_t)\Big(m_k + \frac{\sqrt{\bar\alpha_t}\,s_k^2}{\bar\alpha_t s_k^2 + 1 - \bar\alpha_t}
              (x_t - \sqrt{\bar\alpha_t}m_k)\Big),

    the responsibility-weighted conjugate posterior means of the components (equal to Tweedie's
    formula with :func:`mixture_data_score`; claim E2). ``t = 0`` gives ``x_t``.

    Args, shapes: as :func:`mixture_data_log_density`.

    Returns:
      ``E[x_0|x_t]``, of ``xt``'s shape.
    """
    args = _mixture_args("mixture_data_denoiser", schedule, xt, t, weights, means, stds)
    return _mixture_denoiser(*args)


@jax.jit
def _mixture_denoiser(schedule, xt, t, weights, means, stds):
    x, root, _, s2, resid, var, log_r, _ = _mixture_parts(schedule, xt, t, weights, means, stds)
    component = means.astype(x.dtype) + root * s2 * resid / var
    return jnp.sum(jnp.exp(log_r)[..., None] * component, axis=-2)


def mixture_data_noise(schedule: NoiseSchedule, xt: Float[Array, "*batch d"], t: Int[Array, "*batch"],
                       weights: Float[Array, " K"], means: Float[Array, "K d"], stds: Float[Array, " K"]
                       ) -> Float[Array, "*batch d"]:
    r"""The optimal noise predictor :math:`\varepsilon^* = \mathbb E[\varepsilon|x_t] = -\sqrt{1-\bar\alpha_t}\nabla\log p_t` for Gaussian-mixture data.

    .. math:: \varepsilon^*(x) = \sqrt{1-\bar\alpha_t}\sum_k r_k(x)\,\frac{x - \sqrt{\bar\alpha_t}m_k}{\bar\alpha_t s_k^2 + 1 - \bar\alpha_t}

    (claim E2). ``t = 0`` gives 0.

    Args, shapes: as :func:`mixture_data_log_density`.

    Returns:
      ``ε*(x_t)``, of ``xt``'s shape.
    """
    args = _mixture_args("mixture_data_noise", schedule, xt, t, weights, means, stds)
    return _mixture_noise(*args)


@jax.jit
def _mixture_noise(schedule, xt, t, weights, means, stds):
    _, _, omab, _, resid, var, log_r, _ = _mixture_parts(schedule, xt, t, weights, means, stds)
    return _sqrt0(omab)[..., 0, :] * jnp.sum(jnp.exp(log_r)[..., None] * resid / var, axis=-2)
