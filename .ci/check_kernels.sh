#!/usr/bin/env bash
# Compile every CUDA source in the repo to PTX for Orin (sm_87), RTX 4090 (sm_89) and
# H100/H200 (sm_90). Needs nvcc, not a GPU. Exits non-zero on the first failure.
# Without nvcc: in CI (CI=true or 1, as CI services and .ci/run set it) that is a failure, since the CI
# machine has the CUDA toolkit; on a developer's machine the check is skipped with a message.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null 2>&1; then
    case "${CI:-}" in
        true | True | TRUE | 1)
            echo "kernels: nvcc not found, and CI=$CI: the CI machine must have the CUDA toolkit" >&2
            exit 1
            ;;
    esac
    echo "kernels: nvcc not found, CUDA compile check skipped (install the CUDA toolkit to run it)"
    exit 0
fi
mapfile -t sources < <(git ls-files '*.cu')
if [ "${#sources[@]}" -eq 0 ]; then
    echo "kernels: no .cu files tracked"
    exit 0
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for src in "${sources[@]}"; do
    for arch in 87 89 90; do
        nvcc --ptx -arch="sm_${arch}" -Werror all-warnings -o "$out/kernel.ptx" "$src"
        echo "kernels: $src compiles for sm_${arch}"
    done
done
