"""Goal scripts of slimtorch-quant part 2 (issue 15) on the embedded digits task: one module per part."""
