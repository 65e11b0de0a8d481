"""vfe: variational free energy, statistical mechanics and language models as checked JAX code.

Every public function is pure, differentiable, batched over leading axes and jitted (the
``axis`` argument is static). Argument shapes, dtypes and Python-number temperatures are
checked before any work; array values are checked only on request, by :mod:`vfe.validate`.

Modules: :mod:`vfe.information` (entropy, cross-entropy, KL), :mod:`vfe.thermodynamics`
(tempered softmax, Boltzmann, partition function, free energies), :mod:`vfe.variational`
(variational free energy, ELBO, evidence, posterior, point mass, MAP/MLE),
:mod:`vfe.derivation` (the executable-proof checker), :mod:`vfe.testing` (Hypothesis
strategies), :mod:`vfe.validate` (eager value checks), :mod:`vfe.sequences`, :mod:`vfe.gaussian`,
:mod:`vfe.mixture` (EM), :mod:`vfe.coding`, :mod:`vfe.methods` (numerical methods of the proofs),
:mod:`vfe.streaming`, :mod:`vfe.linear_cross_entropy`, :mod:`vfe.sharding` (large vocabularies),
and the results the seeds name: :mod:`vfe.diffusion` (noise schedules, the diffusion ELBO, Tweedie),
:mod:`vfe.langevin` (unadjusted Langevin), :mod:`vfe.scaling` (Kaplan and Chinchilla laws),
:mod:`vfe.emergence` (exact match from per-token loss), :mod:`vfe.in_context` (linear
self-attention as gradient descent, latent-intent posteriors).
"""

from vfe import coding as coding
from vfe import diffusion as diffusion
from vfe import emergence as emergence
from vfe import gaussian as gaussian
from vfe import in_context as in_context
from vfe import langevin as langevin
from vfe import linear_cross_entropy as linear_cross_entropy
from vfe import methods as methods
from vfe import mixture as mixture
from vfe import scaling as scaling
from vfe import sequences as sequences
from vfe import sharding as sharding
from vfe import streaming as streaming
from vfe import validate as validate
from vfe.coding import code_length_bits as code_length_bits
from vfe.coding import expected_code_length as expected_code_length
from vfe.coding import kraft_sum as kraft_sum
from vfe.coding import shannon_code_lengths as shannon_code_lengths
from vfe.gaussian import gaussian_cross_entropy as gaussian_cross_entropy
from vfe.gaussian import gaussian_kl as gaussian_kl
from vfe.gaussian import gaussian_log_density as gaussian_log_density
from vfe.gaussian import gaussian_mixture_log_density as gaussian_mixture_log_density
from vfe.gaussian import moment_match as moment_match
from vfe.gaussian import normal_log_evidence as normal_log_evidence
from vfe.gaussian import normal_posterior as normal_posterior
from vfe.information import bits_to_nats as bits_to_nats
from vfe.information import cross_entropy as cross_entropy
from vfe.information import cross_entropy_from_logits as cross_entropy_from_logits
from vfe.information import (
    cross_entropy_with_integer_labels as cross_entropy_with_integer_labels,
)
from vfe.information import entropy as entropy
from vfe.information import entropy_from_logits as entropy_from_logits
from vfe.information import kl_divergence as kl_divergence
from vfe.information import kl_divergence_from_logits as kl_divergence_from_logits
from vfe.information import nats_to_bits as nats_to_bits
from vfe.information import perplexity as perplexity
from vfe.sequences import autoregressive_log_joint as autoregressive_log_joint
from vfe.sequences import bits_per_token as bits_per_token
from vfe.sequences import globally_tempered_log_joint as globally_tempered_log_joint
from vfe.sequences import mean_token_nll as mean_token_nll
from vfe.sequences import perplexity_from_logits as perplexity_from_logits
from vfe.sequences import sample_autoregressive as sample_autoregressive
from vfe.sequences import sample_categorical as sample_categorical
from vfe.sequences import sample_tempered as sample_tempered
from vfe.sequences import sequence_log_prob as sequence_log_prob
from vfe.sequences import sequence_nll as sequence_nll
from vfe.sequences import token_log_probs as token_log_probs
from vfe.thermodynamics import boltzmann as boltzmann
from vfe.thermodynamics import energy_variance as energy_variance
from vfe.thermodynamics import gibbs_free_energy as gibbs_free_energy
from vfe.thermodynamics import heat_capacity as heat_capacity
from vfe.thermodynamics import helmholtz_free_energy as helmholtz_free_energy
from vfe.thermodynamics import log_partition as log_partition
from vfe.thermodynamics import mean_energy as mean_energy
from vfe.thermodynamics import tempered_log_softmax as tempered_log_softmax
from vfe.thermodynamics import tempered_softmax as tempered_softmax
from vfe.thermodynamics import thermodynamic_entropy as thermodynamic_entropy
from vfe.variational import elbo as elbo
from vfe.variational import free_energy as free_energy
from vfe.variational import gaussian_entropy as gaussian_entropy
from vfe.variational import gaussian_free_energy as gaussian_free_energy
from vfe.variational import log_evidence as log_evidence
from vfe.variational import log_posterior as log_posterior
from vfe.variational import map_estimate as map_estimate
from vfe.variational import mle_estimate as mle_estimate
from vfe.variational import point_mass_free_energy as point_mass_free_energy
from vfe.variational import posterior as posterior

__version__ = "0.1.0"

__all__ = [
    "autoregressive_log_joint",
    "bits_per_token",
    "bits_to_nats",
    "boltzmann",
    "code_length_bits",
    "coding",
    "cross_entropy",
    "cross_entropy_from_logits",
    "diffusion",
    "elbo",
    "emergence",
    "energy_variance",
    "entropy",
    "entropy_from_logits",
    "expected_code_length",
    "free_energy",
    "gaussian",
    "gaussian_cross_entropy",
    "gaussian_entropy",
    "gaussian_free_energy",
    "gaussian_kl",
    "gaussian_log_density",
    "gaussian_mixture_log_density",
    "gibbs_free_energy",
    "globally_tempered_log_joint",
    "heat_capacity",
    "helmholtz_free_energy",
    "in_context",
    "kl_divergence",
    "kl_divergence_from_logits",
    "kraft_sum",
    "langevin",
    "linear_cross_entropy",
    "log_evidence",
    "log_partition",
    "log_posterior",
    "map_estimate",
    "mean_energy",
    "mean_token_nll",
    "methods",
    "mixture",
    "mle_estimate",
    "moment_match",
    "nats_to_bits",
    "normal_log_evidence",
    "normal_posterior",
    "perplexity",
    "perplexity_from_logits",
    "point_mass_free_energy",
    "posterior",
    "sample_autoregressive",
    "sample_categorical",
    "sample_tempered",
    "scaling",
    "sequence_log_prob",
    "sequence_nll",
    "sequences",
    "shannon_code_lengths",
    "sharding",
    "streaming",
    "tempered_log_softmax",
    "tempered_softmax",
    "thermodynamic_entropy",
    "token_log_probs",
    "validate",
]
