"""The run's state as checkpoints hold it (a format older and newer acl versions resume), and the objective a
step calls."""
import pytest
import torch

from acl_cli.checkpoint import load_checkpoint
from acl_cli.distill import distillation_loss
from acl_cli.objective import CrossEntropy, Distillation
from acl_cli.run_state import RunState

PROGRESS_KEYS = ["epoch", "batch", "step", "best_top1", "wall", "epoch_sums", "history", "pending", "lr", "train_images",
                 "steps_per_epoch", "train_files", "processes", "teacher", "distill_sums", "epoch_time"]


def test_a_checkpoint_holds_the_progress_keys_older_versions_wrote(small_run):
    last, best = load_checkpoint(small_run / "last.pt"), load_checkpoint(small_run / "best.pt")
    assert list(last["progress"]) == PROGRESS_KEYS
    assert list(best["progress"]) == PROGRESS_KEYS
    assert sorted(last) == ["classes", "config", "format", "input_shape", "model", "optimizer", "params", "progress",
                            "rng", "scaler", "scheduler", "version"]
    assert sorted(best) == ["classes", "config", "format", "input_shape", "model", "params", "progress", "version"]
    progress = last["progress"]
    assert (progress["epoch"], progress["batch"], progress["step"], progress["pending"]) == (1, 0, 2, None)
    assert progress["epoch_sums"] == [0.0, 0, 0, 0] and progress["distill_sums"] == [0.0, 0.0, 0]
    assert progress["teacher"] is None and progress["processes"] == 1 and len(progress["history"]) == 1


def _state():
    return RunState(train_images=64, steps_per_epoch=2, train_files="abc", processes=1, teacher=None)


def test_a_resumed_state_takes_what_the_checkpoint_has_and_keeps_what_it_lacks():
    """An older checkpoint lacks newer fields (they keep this run's values); a newer one's unknown keys are
    written again as they were."""
    state = _state()
    state.update_from_checkpoint({"epoch": 1, "batch": 1, "step": 3, "epoch_sums": [8.5, 5, 32], "from_later": [1]})
    assert (state.epoch, state.batch, state.step, state.epoch_sums) == (1, 1, 3, [8.5, 5, 32])
    assert (state.train_files, state.lr, state.distill_sums) == ("abc", None, [0.0, 0.0, 0])
    saved = state.to_checkpoint()
    assert list(saved) == PROGRESS_KEYS + ["from_later"] and saved["from_later"] == [1]
    saved["epoch_sums"].append(14)  # a copy: the run going on and the checkpoint share nothing
    assert state.epoch_sums == [8.5, 5, 32]


def test_skipped_steps_are_saved_once_there_is_one():
    state = _state()
    assert "skipped" not in state.to_checkpoint()
    state.skipped += 1
    assert state.to_checkpoint()["skipped"] == 1


def test_the_objective_takes_soft_targets_as_it_takes_labels():
    """Mixed images come with a probability per class: one-hot rows give the loss class indices give."""
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 10), torch.tensor([0, 3, 9, 1, 1, 4])
    soft = torch.nn.functional.one_hot(labels, 10).float()
    ce = CrossEntropy(label_smoothing=0.1)
    assert torch.allclose(ce(logits, labels, torch.empty(0)), ce(logits, soft, torch.empty(0)))
    teacher = torch.nn.Linear(4, 10)
    inputs = torch.randn(6, 4)
    distill = Distillation(0.1, teacher, alpha=0.5, temperature=2.0, device=torch.device("cpu"))
    hard, soft_loss = distill(logits, labels, inputs), distill(logits, soft, inputs)
    assert torch.allclose(hard, soft_loss)
    _, label_term, teacher_term = distillation_loss(logits, teacher(inputs), labels, ce.criterion, 0.5, 2.0)
    sums = distill.add_term_sums([0.0, 0.0, 0])  # the two calls' terms, each summed over its 6 images
    assert sums[2] == 12
    assert sums[0] == pytest.approx(12 * label_term.item()) and sums[1] == pytest.approx(12 * teacher_term.item())
    assert distill.add_term_sums(sums) == sums  # read back once: nothing is added twice
