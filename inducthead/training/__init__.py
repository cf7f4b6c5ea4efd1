"""Training: `train` (one model; data-parallel under torchrun) and `train_many` (K seeds in one
batched computation), both driving the one loop `fit` through a stepper per execution mode."""

from inducthead.recipe import TrainConfig
from inducthead.training.loop import TrainingDiverged, evaluate, fit
from inducthead.training.steppers import (
    SingleStepper,
    Stepper,
    data_seed,
    make_optimizer,
    train_step,
)
from inducthead.training.trainer import train, train_many
from inducthead.training.vmapped import VmappedStepper

__all__ = [
    "train",
    "train_many",
    "TrainConfig",
    "TrainingDiverged",
    "fit",
    "evaluate",
    "Stepper",
    "SingleStepper",
    "VmappedStepper",
    "make_optimizer",
    "train_step",
    "data_seed",
]
