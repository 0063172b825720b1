"""slimtorch.zoo.format_bytes (the bytes-per-format table of models/zoo/README.md): on ShuffleNetV2
0.5x (K = 24, 48, 96: not multiples of 32) int4-g32 pads K and converts every dense layer, only the
depthwise convolutions stay float, and the table row says so."""

from slimtorch.zoo import format_bytes


def test_int4_g32_converts_shufflenetv2_layers_whose_k_is_not_a_group_multiple():
    row = format_bytes.measure("slim_shufflenetv2_x0_5", "int4-g32")
    assert row["float"] == 19 and row["converted"] == row["layers"] - 19  # its 19 depthwise convolutions
    (reason,) = row["float_reasons"]
    assert reason.startswith("groups=N: grouped/depthwise convolutions stay as they are"), reason
    assert row["ratio"] > 3.0  # was 1.6x on ShuffleNetV2 1.0 when those layers stayed float
    table = format_bytes.markdown([row], ["int4-g32"])
    assert f"| `int4-g32` | {row['bytes_after'] / 1e6:.2f} MB ({row['ratio']:.2f}x, 19 float) |" in table
