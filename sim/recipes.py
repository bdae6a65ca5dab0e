"""The RL recipe of a run: which roles and phases exist, resolved once from the experiment's `workload` section.

A recipe is `workload.algorithm` (grpo, ppo, dapo, rloo, reinforce_pp) plus its switches: the KL term
against a frozen reference model (in the loss, in the reward, or none: no reference role at all), the
old-log-prob recompute, a learned or rule-based reward, and DAPO's dynamic sampling. Every consumer reads
the roles from here: the iteration (sim/phases/iteration.py), the inference and training plans, a serverful job's
start-up, and schedulers through `ClusterView.inference_roles` / `trained_models` (RLHFless pre-warms).

`RECIPES` holds each algorithm's published defaults with their sources (docs/experiment.md, "Recipes";
docs/model.md section 1). The config layer (sim/config/) fills them into the resolved config, so a run's
config.yaml shows every value it used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from sim.resources.roles import ACTOR_LOGPROB, ACTOR_TRAINER, CRITIC, CRITIC_TRAINER, PREFILL, REFERENCE, REWARD, ROLLOUT

if TYPE_CHECKING:  # pragma: no cover
    from sim.config.models import ExperimentConfig

Kl = Literal["loss", "reward", "none"]


@dataclass(frozen=True)
class RecipeDefaults:
    """One algorithm's published configuration, as far as it decides roles and work, with a source per value."""

    samples_per_prompt: int
    mini_batches: int
    kl: Kl
    dynamic_sampling: bool
    critic: bool
    summary: str
    sources: dict[str, str]


RECIPES: dict[str, RecipeDefaults] = {
    "grpo": RecipeDefaults(
        samples_per_prompt=8, mini_batches=4, kl="loss", dynamic_sampling=False, critic=False,
        summary="group-normalised rewards, no critic; KL to the reference in the loss",
        sources={
            "samples_per_prompt": "../shared/research/calibration.md section 2.1 (n = 5-16 in verl and public GRPO runs; 64 in DeepSeekMath)",
            "mini_batches": "verl examples/grpo_trainer/run_qwen2-7b.sh: train_batch_size 1024 / ppo_mini_batch_size 256",
            "kl": "DeepSeekMath (Shao et al. 2024, arXiv 2402.03300) section 4.1: the KL to the reference is added to the loss, "
            "not the reward; verl's GRPO example sets actor.use_kl_loss=True",
        },
    ),  # fmt: skip
    "ppo": RecipeDefaults(
        samples_per_prompt=1, mini_batches=4, kl="reward", dynamic_sampling=False, critic=True,
        summary="a learned critic (values, GAE) trained beside the actor; KL penalty in the reward",
        sources={
            "samples_per_prompt": "one response per prompt (InstructGPT; verl examples/ppo_trainer/run_deepseek7b_llm.sh leaves rollout.n at 1)",
            "mini_batches": "verl examples/ppo_trainer/run_deepseek7b_llm.sh: train_batch_size 1024 / ppo_mini_batch_size 256",
            "kl": "InstructGPT (Ouyang et al. 2022, arXiv 2203.02155) eq. 2: a per-token KL penalty against the SFT "
            "(reference) policy in the reward; verl's GSM8K PPO examples turn it off (use_kl_in_reward=False): kl: none",
        },
    ),  # fmt: skip
    "dapo": RecipeDefaults(
        samples_per_prompt=16, mini_batches=16, kl="none", dynamic_sampling=True, critic=False,
        summary="GRPO without the KL term (no reference model) and with dynamic sampling",
        sources={
            "samples_per_prompt": "DAPO (Yu et al. 2025, arXiv 2503.14476) section 4.1 and verl recipe/dapo/run_dapo_qwen2.5_32b.sh: n_resp_per_prompt=16",
            "mini_batches": "verl recipe/dapo/run_dapo_qwen2.5_32b.sh: train_prompt_bsz 512 / train_prompt_mini_bsz 32 "
            "(the paper's 16 gradient updates per rollout step)",
            "kl": "DAPO section 2.3 removes the KL divergence; recipe/dapo/run_dapo_qwen2.5_32b.sh: kl_coef=0.0, kl_loss_coef=0.0",
            "dynamic_sampling": "DAPO section 3.2; recipe/dapo/run_dapo_qwen2.5_32b.sh: enable_filter_groups=True",
        },
    ),  # fmt: skip
    "rloo": RecipeDefaults(
        samples_per_prompt=5, mini_batches=4, kl="reward", dynamic_sampling=False, critic=False,
        summary="leave-one-out baseline over the group, no critic; KL penalty in the reward",
        sources={
            "samples_per_prompt": "verl examples/rloo_trainer/run_qwen2-7b.sh: rollout.n=5",
            "mini_batches": "verl examples/rloo_trainer/run_qwen2-7b.sh: train_batch_size 1024 / ppo_mini_batch_size 256",
            "kl": "verl examples/rloo_trainer/run_qwen2-7b.sh: use_kl_in_reward=True, use_kl_loss=False, kl_coef 0.001 "
            "(as RLOO, Ahmadian et al. 2024, arXiv 2402.14740)",
        },
    ),  # fmt: skip
    "reinforce_pp": RecipeDefaults(
        samples_per_prompt=8, mini_batches=1, kl="loss", dynamic_sampling=False, critic=False,
        summary="REINFORCE++: batch-normalised advantages, no critic; KL to the reference in the loss",
        sources={
            "samples_per_prompt": "verl examples/reinforce_plus_plus_trainer/run_qwen2-7b_math_rf.sh: rollout.n=8",
            "mini_batches": "verl examples/reinforce_plus_plus_trainer/run_qwen2-7b_math_rf.sh: train_batch_size 1024 = "
            "ppo_mini_batch_size 1024 (one update per step: on-policy)",
            "kl": "verl examples/reinforce_plus_plus_trainer/run_qwen2-7b_math_rf.sh: use_kl_loss=True (kl_loss_type=mse), "
            "use_kl_in_reward=False; the REINFORCE++ paper (Hu 2025, arXiv 2501.03262) puts it in the reward: kl: reward",
        },
    ),  # fmt: skip
}
ALGORITHMS = tuple(RECIPES)


def recompute_old_logprob(setting: bool | str, ppo_epochs: int, mini_batches: int, kl: str) -> bool:
    """Whether the actor's old log-prob pass runs: `auto` runs it unless the step is on-policy.

    With one optimizer step per generation step (ppo_epochs x mini_batches == 1) the policy that generated
    the samples is the one being updated, so the importance ratio is 1 and the training forward's own
    log-probs serve as the old ones (verl dp_actor.py: `on_policy = len(mini_batches) == 1 and
    ppo_epochs == 1`). A KL penalty in the reward needs the log-probs before training starts, so it keeps
    the pass. `false` always skips it (the ratio then uses the rollout engine's log-probs, as verl's
    rollout_correction.bypass_mode does); `true` always runs it (verl's default trainer, verl issue #3996).
    """
    if setting == "auto":
        return ppo_epochs * mini_batches > 1 or kl == "reward"
    return bool(setting)


@dataclass(frozen=True)
class Recipe:
    """The resolved recipe of one run: the roles that exist and the phases they run in."""

    algorithm: str
    critic: bool
    kl: str  # "loss" | "reward" | "none"
    old_logprob: bool
    learned_reward: bool
    dynamic_sampling: bool

    @classmethod
    def from_config(cls, cfg: "ExperimentConfig") -> "Recipe":
        w = cfg.workload
        kl = w.kl or RECIPES[w.algorithm].kl
        mini = w.mini_batches or RECIPES[w.algorithm].mini_batches
        return cls(
            algorithm=w.algorithm,
            critic=RECIPES[w.algorithm].critic,
            kl=kl,
            old_logprob=recompute_old_logprob(w.old_logprob, w.ppo_epochs, mini, kl),
            learned_reward=cfg.reward_model is not None,
            dynamic_sampling=bool(w.dynamic_sampling.enabled),
        )

    @property
    def reference(self) -> bool:
        """A frozen reference model exists (its log-prob pass runs) whenever there is a KL term."""
        return self.kl != "none"

    @property
    def inference_roles(self) -> tuple[str, ...]:
        """The inference phase's roles on the training batch, in verl's order. With dynamic sampling a learned
        reward scores each generation round instead (`scoring_roles`): the filter needs the rewards."""
        roles = []
        if self.old_logprob:
            roles.append(ACTOR_LOGPROB)
        if self.reference:
            roles.append(REFERENCE)
        if self.critic:
            roles.append(CRITIC)
        if self.learned_reward and not self.dynamic_sampling:
            roles.append(REWARD)
        return tuple(roles)

    @property
    def scoring_roles(self) -> tuple[str, ...]:
        """GPU roles that score every generation round before the group filter (dynamic sampling only)."""
        return (REWARD,) if self.dynamic_sampling and self.learned_reward else ()

    @property
    def trained_models(self) -> tuple[str, ...]:
        return ("actor", "critic") if self.critic else ("actor",)

    @property
    def startup_roles(self) -> tuple[str, ...]:
        """The roles whose models a serverful job loads before its first iteration (the rollout engine takes
        its weights from the actor's FSDP module, and the actor's log-probs run on that module too)."""
        roles = [ACTOR_TRAINER]
        if self.reference:
            roles.append(REFERENCE)
        if self.critic:
            roles.append(CRITIC_TRAINER)
        if self.learned_reward:
            roles.append(REWARD)
        return tuple(roles)

    @property
    def function_roles(self) -> tuple[str, ...]:
        """Every function role this recipe may run (a scheduler may ask for these, and no others)."""
        trainers = tuple(f"{m}_trainer" for m in self.trained_models)
        return (ROLLOUT, PREFILL, *self.inference_roles, *self.scoring_roles, *trainers)

    def describe(self) -> dict[str, object]:
        """The resolved recipe for summary.json: what ran, after `auto` and the recipe defaults."""
        return {
            "algorithm": self.algorithm,
            "kl": self.kl,
            "reference": self.reference,
            "old_logprob": self.old_logprob,
            "critic": self.critic,
            "reward": "model" if self.learned_reward else "rule",
            "dynamic_sampling": self.dynamic_sampling,
            "inference_roles": list(self.inference_roles),
            "trained_models": list(self.trained_models),
        }
