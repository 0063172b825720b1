# Sourced by ci/gpu and ci/bench: put every distribution's src/ on PYTHONPATH (the PEP 420
# namespace `slimtorch` merges them), so a machine with no network runs our code uninstalled.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
srcs=$(ls -d "$root"/packages/*/src "$root"/kernels/*/src "$root"/models/*/src 2>/dev/null | tr '\n' ':')
export PYTHONPATH="${srcs%:}${PYTHONPATH:+:$PYTHONPATH}"
