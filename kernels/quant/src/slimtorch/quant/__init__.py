"""slimtorch-quant."""
