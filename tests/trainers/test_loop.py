"""trainers.train: the ``sgd_steps`` of each history row is the count of updates the loop applied."""

import torch

from trainers import TrainerConfig, make_teacher_student, make_trainer, train


def _counted(n_train: int, batch: int, epochs: int, diverge_at: int | None = None) -> tuple[list[dict], list[int]]:
    """Train a tiny BP on the teacher set; ``calls`` records the updates the trainer really applied."""
    data = make_teacher_student(n_train=n_train, n_test=16, input_dim=8, output_dim=3, dtype=torch.float64)
    tr = make_trainer(TrainerConfig(width=16, base_width=16, dtype="float64", loss="mse", lr=0.01), 8, 3)
    step, applied = tr.step, [0]

    def counting_step(x, y):
        if diverge_at is not None and applied[0] + 1 == diverge_at:
            return {"loss": float("inf"), "diverged": True}  # reported diverged: nothing applied
        applied[0] += 1
        return step(x, y)

    tr.step = counting_step
    marks: list[int] = []
    rows = train(tr, data, epochs, batch_size=batch, on_epoch=lambda row: marks.append(applied[0]))
    return rows, marks


def test_sgd_steps_count_the_updates_of_each_epoch_the_partial_batch_dropped():
    rows, marks = _counted(n_train=100, batch=32, epochs=2)
    assert [r["sgd_steps"] for r in rows] == [3, 6] == marks  # ⌊100 / 32⌋ = 3 a epoch, the last 4 dropped
    rows, _ = _counted(n_train=10, batch=32, epochs=2)  # a batch larger than the set: one batch of all of it
    assert [r["sgd_steps"] for r in rows] == [1, 2]


def test_a_diverged_step_is_not_counted_and_stops_the_count():
    rows, marks = _counted(n_train=100, batch=32, epochs=3, diverge_at=5)
    assert [r["sgd_steps"] for r in rows] == [3, 4] == marks  # epoch 2: one update, then the divergence
    assert [r["diverged"] for r in rows] == [False, True]
