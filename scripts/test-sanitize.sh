#!/usr/bin/env bash
# A representative subset of the test suite under AddressSanitizer and UndefinedBehaviorSanitizer
# (CI runs it after scripts/test.sh): every op on every CPU backend, the layers' and models'
# gradient checks, the config parser's error paths, the shard reader (damaged shards included), the
# checkpoint fault matrix (damaged checkpoints), remixer-prep and remixer-reconstruct on real audio,
# and a short remix run; a sanitizer report fails the test that triggered it. The build goes to
# build-asan/ (a CPU build: nvcc does not take the host compiler's -fsanitize flags).
#   scripts/test-sanitize.sh            the subset
#   scripts/test-sanitize.sh -E ckpt_   further ctest arguments (here: leave the checkpoint tests out)
# The whole suite under sanitizers: RMX_SANITIZE=address,undefined scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
subset='^(kernels_|model_|dit_gradcheck|dit_reference|config_|data_|ckpt_fault_matrix|ckpt_damaged|prep_dsp_|prep_bad_inputs|prep_short_header|prep_demo|reconstruct_plain|reconstruct_bad_inputs|remix_learns|remix_program)'
RMX_SANITIZE=${RMX_SANITIZE:-address,undefined} exec scripts/test.sh -R "$subset" "$@"
