"""The slimtorch command: one-line errors with exit code 2; compress -> eval -> profile on a file;
an ImageFolder written by the test."""

import pytest
import torch

from slimtorch.compress import cli


def _run(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(argv))
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--batch", "0"], "--batch: expected a positive integer, got 0"),
        (["demo", "--image-size", "0"], "--image-size: expected a positive integer, got 0"),
        (["demo", "--batch", "two"], "--batch: expected a positive integer, got 'two'"),
        (["demo", "--device", "foo"], "--device: expected cpu or cuda[:N], got 'foo'"),
        (["demo", "--model", "no-such-net", "--quick"], "no-such-net"),
        (["demo", "--data", "/no/such/folder", "--quick"], "data: expected 'digits' or an ImageFolder directory"),
        (["eval", "/no/such/file.safetensors"], "file: no such file"),
        (["compress", "lenet5", "--recipe", "/no/recipe.toml", "--out", "x.safetensors"], "--recipe: no such file"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == 2, (out, err)
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_a_gpu(capsys):
    code, _, err = _run(capsys, "demo", "--device", "cuda")
    assert code == 2 and "no CUDA GPU" in err and err.count("\n") == 1


def test_existing_out_and_bad_recipe(capsys, tmp_path):
    existing = tmp_path / "exists.safetensors"
    existing.write_bytes(b"x")
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[step]]\nquantize = {format = "int4", group_size = 100}\n')
    code, _, err = _run(capsys, "compress", "lenet300_100", "--recipe", str(recipe), "--out", str(existing))
    assert code == 2 and "--out:" in err and "exists" in err
    code, _, err = _run(capsys, "compress", "lenet300_100", "--recipe", str(recipe), "--out", str(tmp_path / "n.st"))
    assert code == 2 and "step[0].quantize.group_size: expected one of 32, 64, 128, got 100" in err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 16)
    code, _, err = _run(capsys, "eval", str(bad))
    assert code == 2 and "bad.safetensors" in err and err.count("\n") == 1


def _image_folder(root, classes=3, per_class=12, size=12):
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            base = torch.zeros(size, size, 3)
            base[:, c * size // classes : (c + 1) * size // classes] = 200  # a stripe per class
            img = (base + 40 * torch.rand(size, size, 3, generator=gen)).clamp(0, 255).to(torch.uint8)
            Image.fromarray(img.numpy()).save(root / f"class{c}" / f"{i}.png")
    return root


def test_compress_eval_profile_on_an_image_folder(capsys, tmp_path):
    pytest.importorskip("torchvision")
    pytest.importorskip("slimtorch.quant")
    data = _image_folder(tmp_path / "images")
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        'name = "small"\ncoder = "huffman"\n[[step]]\nprune = {sparsity = 0.7, retrain_epochs = 1}\n'
        "[[step]]\nshare = {linear_bits = 3, retrain_epochs = 1}\n"
    )
    out = tmp_path / "m.safetensors"
    common = ["--data", str(data), "--image-size", "12", "--no-progress"]
    code, text, err = _run(capsys, "compress", "lenet300_100", "--recipe", str(recipe), "--out", str(out),
                           "--epochs", "3", *common)  # fmt: skip
    assert code == 0, err
    assert "share_weights_" in text and "to_codebook_" in text and out.exists()
    code, text, err = _run(capsys, "eval", str(out), *common)
    assert code == 0, err
    top1 = float(text.split("top-1 ")[1].split("%")[0])
    assert top1 > 60  # three stripes: far above the 33% of chance
    code, text, err = _run(capsys, "profile", str(out), "--image-size", "12", "--batch", "3")
    assert code == 0, err
    assert "nonzero params" in text and "MACs" in text and "ms median" in text
