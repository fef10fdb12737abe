#!/usr/bin/env bash
# Prebuilds main and variants for a device call (tools/prebuild.sh each): .prebuilt/main.so.xz from the
# working tree, .prebuilt/variants/<name>.so.xz from a worktree of HEAD with tools/variants/<name>.patch
# applied. ccache (in the prebuild venv) shares the unchanged files between them.
#   tools/prebuild_variants.sh [--no-main] NAME...
set -euo pipefail
cd "$(dirname "$0")/.."
main=1; [ "${1:-}" = --no-main ] && { main=0; shift; }
export CCACHE_BASEDIR=/tmp  # worktrees under /tmp hit the same cache entries
mkdir -p .prebuilt/variants .git/info
grep -qx '/.prebuilt/' .git/info/exclude 2>/dev/null || echo '/.prebuilt/' >> .git/info/exclude
(( main )) && bash tools/prebuild.sh . .prebuilt/main.so.xz
for v in "$@"; do
  wt=/tmp/ac4k_pre_$v
  git worktree remove --force "$wt" 2>/dev/null || rm -rf "$wt"
  git worktree prune
  git worktree add -q --detach "$wt" HEAD
  (cd "$wt" && git apply "$OLDPWD/tools/variants/$v.patch")
  bash tools/prebuild.sh "$wt" ".prebuilt/variants/$v.so.xz"
done
