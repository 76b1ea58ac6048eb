#!/bin/sh
# install-cni: the agent pod's init container. Copies the enipool-cni plugin into the host's CNI
# bin dir, under a temporary name renamed over the old one, so the container runtime never execs a
# half-written plugin and a running plugin keeps its (old) inode. Idempotent: every agent start
# runs it again. The conflist is not written here: the agent writes it once it can serve.
# Environment (set by the DaemonSet; a test runs this script against temporary directories):
#   PLUGIN         the plugin binary in the image
#   HOST_BIN_DIR   the host's CNI bin dir, mounted
#   REQUIRE        plugins chained after enipool-cni that must already exist in HOST_BIN_DIR
set -eu

: "${PLUGIN:?}" "${HOST_BIN_DIR:?}"

for p in ${REQUIRE:-}; do
  if [ ! -x "$HOST_BIN_DIR/$p" ]; then
    echo "install-cni: the conflist chains '$p' but $HOST_BIN_DIR/$p does not exist;" \
      "install the standard CNI plugins on the node or disable it (cni.$p.enabled=false)" >&2
    exit 1
  fi
done

tmp="$HOST_BIN_DIR/.enipool-cni.tmp.$$"
cp "$PLUGIN" "$tmp"
chmod 0755 "$tmp"
mv -f "$tmp" "$HOST_BIN_DIR/enipool-cni"

echo "install-cni: installed $HOST_BIN_DIR/enipool-cni"
