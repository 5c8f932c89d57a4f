#!/usr/bin/env bash
# asv continuous: benchmark the merge base with main (HEAD~1 when HEAD is main itself) and
# HEAD, each built and installed from its commit in asv's own virtualenv (asv.conf.json
# pins the CPU torch first), and fail (exit 1) when a benchmark got slower by more than
# ASV_FACTOR (default 1.1). Extra arguments go to asv, e.g. -b Preprocessing.
# Only committed code is measured. Run it through `tox -e bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
head=$(git rev-parse HEAD)
base=$(git merge-base HEAD "${ASV_BASE_BRANCH:-main}" 2>/dev/null || true)
if [ -z "$base" ] || [ "$base" = "$head" ]; then
    base=$(git rev-parse HEAD~1)
fi
machine="${ASV_MACHINE:-local}"
echo "asv continuous: $(git log -1 --format='%h %s' "$base" | cut -c1-80) -> $(git log -1 --format='%h %s' "$head" | cut -c1-80)"
asv machine --yes --machine "$machine" >/dev/null
exec asv continuous --factor "${ASV_FACTOR:-1.1}" --machine "$machine" --show-stderr "$base" "$head" "$@"
