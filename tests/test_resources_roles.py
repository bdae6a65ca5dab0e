"""Each role's typed description: what it holds on its GPUs, what a cold start reads and what a wake copies."""

from __future__ import annotations

import pytest

from sim.catalog import load_catalog
from sim.hardware.memory import forward_peak_bytes, training_peak_bytes
from sim.resources.roles import ROLES, RoleBook, RoleError

CAT = load_catalog()
GPU = CAT.gpu("L40S")
ACTOR = CAT.model("qwen2.5-3b")
CRITIC = CAT.model("qwen2.5-0.5b")
REWARD = CAT.model("qwen2.5-1.5b")


def book(**over) -> RoleBook:
    args = dict(gpu=GPU, actor=ACTOR, reference=ACTOR, critic=CRITIC, reward=REWARD, micro_batch_tokens=8192,
                activation_checkpointing=True, offload=False)  # fmt: skip
    args.update(over)
    return RoleBook(**args)


def test_a_reference_loads_its_bf16_weights_not_training_state():
    """The bug the typed roles fix: a frozen reference reads 2 bytes per parameter, a trainer 12 (optimizer state)."""
    roles = book()
    ref = roles.spec("reference", 8, 16)
    assert ref.load_bytes == pytest.approx(2 * ACTOR.params * 8 / 16)
    assert ref.wake_bytes == ref.load_bytes
    trainer = roles.spec("actor_trainer", 8, 16)
    assert trainer.load_bytes == pytest.approx(12 * ACTOR.params * 8 / 16)
    assert trainer.first_load_bytes == pytest.approx(2 * ACTOR.params * 8 / 16)  # no optimizer state yet


@pytest.mark.parametrize(
    "role, model, weights_share",
    [("rollout", ACTOR, 1.0), ("prefill", ACTOR, 1.0), ("actor_logprob", ACTOR, 0.5), ("reference", ACTOR, 0.5),
     ("critic", CRITIC, 0.5), ("reward", REWARD, 0.5)],
)  # fmt: skip
def test_serving_roles_load_and_wake_with_their_share_of_the_weights(role, model, weights_share):
    spec = book().spec(role, 4, 8)
    assert spec.model is model
    assert spec.load_bytes == pytest.approx(model.weight_bytes * weights_share)
    assert spec.first_load_bytes == spec.load_bytes == spec.wake_bytes


def test_resident_footprints_come_from_the_memory_model():
    roles = book()
    assert roles.spec("rollout", 1, None, 0.6).resident_bytes_per_gpu == pytest.approx(0.6 * GPU.memory_bytes)
    assert roles.spec("reference", 8, 16).resident_bytes_per_gpu == pytest.approx(forward_peak_bytes(ACTOR, 16, 8192, True))
    # a value head outputs one number per token: no vocabulary logits
    assert roles.spec("critic", 8, 16).resident_bytes_per_gpu == pytest.approx(forward_peak_bytes(CRITIC, 16, 8192, False))
    assert roles.spec("critic", 8, 16).resident_bytes_per_gpu < forward_peak_bytes(CRITIC, 16, 8192, True)
    assert roles.spec("actor_trainer", 8, 16).resident_bytes_per_gpu == pytest.approx(training_peak_bytes(ACTOR, 16, 8192, True, False))
    offloaded = book(offload=True).spec("actor_trainer", 8, 16).resident_bytes_per_gpu
    assert offloaded < roles.spec("actor_trainer", 8, 16).resident_bytes_per_gpu


def test_identities_share_the_actor_weights_and_keep_frozen_and_trained_models_apart():
    roles = book(critic=ACTOR)  # a critic of the actor's size, initialised from its checkpoint
    keys = {role: roles.key(role) for role in ROLES}
    assert keys["rollout"] == keys["prefill"] == keys["actor_logprob"] == ACTOR.name
    assert len({keys["reference"], keys["critic"], keys["actor_trainer"], keys["critic_trainer"], ACTOR.name}) == 5
    assert [roles.spec(r, 1).tracks for r in ("rollout", "actor_logprob", "critic", "reference", "reward")] == [
        "actor", "actor", "critic", None, None,
    ]  # fmt: skip


def test_a_role_without_a_model_or_an_unknown_role_is_refused():
    with pytest.raises(RoleError, match="no model"):
        book(reward=None).spec("reward", 1)
    with pytest.raises(RoleError, match="unknown function role 'judge'"):
        book().spec("judge", 1)
