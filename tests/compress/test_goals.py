"""compress.goals' validation split (hyperparameters are chosen without the test split) and the
demo's block-size choice for block-circulant layers."""

import torch
from torch import nn

from slimtorch.compress import demo, goals, tasks


def test_validation_split_partitions_the_training_split_only():
    task = tasks.digits_task()
    val = goals.validation_split(task, fraction=0.2, seed=0)
    assert len(val.x_test) == int(0.2 * len(task.x_train)) and len(val.x_train) + len(val.x_test) == len(task.x_train)
    rows = lambda x: {tuple(r.tolist()) for r in x.flatten(1)}
    train, held = rows(val.x_train), rows(val.x_test)
    assert rows(task.x_train) == train | held  # every validation image is a training image, none is a test one
    assert torch.equal(goals.validation_split(task, 0.2, 0).y_test, val.y_test)  # seeded: the same split
    assert not torch.equal(goals.validation_split(task, 0.2, 1).y_test, val.y_test)


def test_block_size_that_fits_the_lenets():
    assert demo.block_size_that_fits(tasks.lenet300_100()) == (4, 784 * 300 + 300 * 100)  # 300, 100: not of 8
    assert demo.block_size_that_fits(tasks.lenet5(caffe=True))[0] == 4  # 800 -> 500
    assert demo.block_size_that_fits(nn.Sequential(nn.Linear(64, 32)))[0] == 16
    assert demo.block_size_that_fits(nn.Sequential(nn.Linear(7, 5))) == (0, 0)
