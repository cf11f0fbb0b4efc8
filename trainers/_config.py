"""TrainerConfig: every knob of a trainer, with checked string options."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ._registry import TRAINERS

# "algorithm" lists the built-in rules; a config is checked against the registry
# (``trainers._base.TRAINERS``), which a plugin's ``register_trainer`` extends.
CHOICES: dict[str, tuple[str, ...]] = {
    "algorithm": ("bp", "pc", "tp"),
    "parametrization": ("sp", "mup"),
    "optimizer": ("sgd", "adam"),
    "loss": ("mse", "ce"),
    "activation": ("tanh", "relu", "linear"),
    "dtype": ("float32", "float64"),
    "pc_init": ("forward", "zero"),
    "model": ("mlp", "cnn"),
    "feedback": ("linear", "tanh", "regression", "regression_drl"),
}


def registered_algorithms() -> tuple[str, ...]:
    """The algorithms with a trainer: the built-ins and any registered with ``register_trainer``."""
    return tuple(TRAINERS)


@dataclass(frozen=True)
class TrainerConfig:
    """Configuration of one trainer.

    Args:
        algorithm: ``bp`` (backpropagation), ``pc`` (predictive coding),
            ``tp`` (difference target propagation), or one added with ``register_trainer``.
        parametrization: ``sp`` (standard) or ``mup`` (maximal update).
        optimizer: ``sgd`` or ``adam``.
        loss: ``mse`` (0.5·||f − y||², mean over the batch) or ``ce``.
        model: ``mlp`` (fully connected) or ``cnn`` (3×3 convolutions with ``width`` channels and a
            linear readout, on square one-channel images).
        width: hidden width n.
        base_width: width at which every parametrization equals SP (m = width / base_width).
        depth: number of weight layers L (``layers.0 .. layers.{L-1}``).
        activation: ``tanh``, ``relu`` or ``linear``.
        bias: add biases (initialised at zero; learning rates from the table's ``bias_lr`` per role).
        lr: global learning rate η.
        seed: seed of the initialisation.
        dtype: ``float32`` or ``float64``.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (the default: CUDA when present; in a Ray
            trial, when Ray assigned the trial a GPU).
        inference_steps: PC: number T of inference steps.
        inference_lr: PC: step size of gradient descent on the activities.
        gamma_bar_L: PC: the output energy weight scales as γ_L = m^(−γ̄_L).
        pc_init: PC: activities start from the ``forward`` pass or from ``zero``.
        fixed_prediction: PC: weight gradients use the feedforward predictions.
        sequential_inference: PC: single-shot inference from the output down.
        feedback_lr: TP: learning rate of the feedback layers.
        target_step: TP: β, the output target is h_L − β ∂loss/∂h_L.
        feedback_steps: TP: feedback updates per batch.
        feedback_noise: TP: std of the noise used to train the feedback layers.
        feedback: TP: feedback maps g(h) = Q ψ(h): ``linear`` (ψ = id) or ``tanh``, trained on the
            difference reconstruction loss; or linear and set in closed form at every step to
            a ridge-regression solution (analysis options): ``regression`` (of the classic
            reconstruction loss on noise-perturbed activities) or ``regression_drl`` (of the
            difference reconstruction loss).
        feedback_ridge: TP: ridge λ of the regression options at the base width (scaled by the table).
        diverge_loss: a loss above this (or non-finite) marks the run diverged.
    """

    algorithm: str = "bp"
    parametrization: str = "mup"
    optimizer: str = "sgd"
    loss: str = "mse"
    model: str = "mlp"
    width: int = 256
    base_width: int = 64
    depth: int = 3
    activation: str = "tanh"
    bias: bool = False
    lr: float = 0.1
    seed: int = 0
    dtype: str = "float32"
    device: str = "auto"
    # predictive coding
    inference_steps: int = 20
    inference_lr: float = 0.1
    gamma_bar_L: float = 0.0
    pc_init: str = "forward"
    fixed_prediction: bool = False
    sequential_inference: bool = False
    # target propagation
    feedback_lr: float = 0.01
    target_step: float = 0.1
    feedback_steps: int = 1
    feedback_noise: float = 0.1
    feedback: str = "linear"
    feedback_ridge: float = 0.01
    # divergence
    diverge_loss: float = 1e4

    def __post_init__(self) -> None:
        for key, valid in {**CHOICES, "algorithm": registered_algorithms()}.items():
            value = getattr(self, key)
            if value not in valid:
                raise ValueError(f"{key}={value!r} is not one of {', '.join(valid)}")
        for key in ("width", "base_width", "depth", "inference_steps", "feedback_steps"):
            if int(getattr(self, key)) <= 0:
                raise ValueError(f"{key}={getattr(self, key)!r} must be a positive integer")
        if self.depth < 2:
            raise ValueError(f"depth={self.depth!r} must be at least 2 (input and output layers)")
        if not float(self.feedback_ridge) >= 0:
            raise ValueError(f"feedback_ridge={self.feedback_ridge!r} must be >= 0")
        for key in ("lr", "inference_lr", "feedback_lr", "target_step", "feedback_noise", "diverge_loss"):
            if not float(getattr(self, key)) > 0:
                raise ValueError(f"{key}={getattr(self, key)!r} must be > 0")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device={self.device!r} is not one of cpu, cuda, cuda:N, auto")

    @property
    def width_mult(self) -> float:
        """m = width / base_width."""
        return self.width / self.base_width

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def replace(self, **changes) -> TrainerConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))
