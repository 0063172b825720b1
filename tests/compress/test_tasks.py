"""The embedded digits task and the LeNets."""

import pytest
import torch

from slimtorch.compress import tasks


@pytest.fixture(scope="module")
def task():
    return tasks.digits_task()


def test_split_is_fixed_stratified_and_disjoint(task):
    again = tasks.digits_task()
    assert torch.equal(task.x_train, again.x_train) and torch.equal(task.y_test, again.y_test)
    assert task.x_train.shape == (1347, 1, 28, 28) and task.x_test.shape == (450, 1, 28, 28)
    # every class appears in the test split at about the test fraction
    counts = torch.bincount(task.y_test, minlength=10).float() / torch.bincount(
        torch.cat([task.y_train, task.y_test]), minlength=10
    )
    assert torch.all((counts - 0.25).abs() < 0.01)
    other = tasks.digits_task(seed=1)
    assert not torch.equal(other.y_test, task.y_test)
    # normalised with the training split's statistics
    assert abs(task.x_train.mean().item()) < 1e-4 and abs(task.x_train.std().item() - 1) < 1e-4


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="image_size"):
        tasks.digits_task(image_size=0)
    with pytest.raises(ValueError, match="test_fraction"):
        tasks.digits_task(test_fraction=1.5)


@pytest.mark.parametrize("name", sorted(tasks.MODELS))
def test_models_take_the_task_and_learn(task, name):
    torch.manual_seed(0)
    model = tasks.MODELS[name]()
    assert model(task.x_test[:3]).shape == (3, 10)
    before = tasks.evaluate(model, task)
    tasks.train(model, task, 2, progress=False)
    after = tasks.evaluate(model, task)
    assert after > 0.75 and after > before + 0.5
    with pytest.raises(ValueError, match="epochs"):
        tasks.train(model, task, -1)


def test_caffe_lenet5_shape(task):
    model = tasks.lenet5(caffe=True)
    assert model(task.x_test[:2]).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) == 431_080  # Han et al. 2016 Table 2
