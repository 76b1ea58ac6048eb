#!/bin/sh
# install-cni: the agent pod's init container. Copies the enipool-cni plugin into the host's CNI
# bin dir and writes the conflist (rendered by the chart) into the host's CNI conf dir. Each file is
# written under a temporary name in its target directory and renamed over the old one, so the
# container runtime never execs a half-written plugin or reads a half-written conflist, and a
# running plugin keeps its (old) inode. Idempotent: every agent start runs it again.
# Environment (set by the DaemonSet; a test runs this script against temporary directories):
#   PLUGIN         the plugin binary in the image
#   CONFLIST       the rendered conflist (mounted from the chart's ConfigMap)
#   HOST_BIN_DIR   the host's CNI bin dir, mounted
#   HOST_CONF_DIR  the host's CNI conf dir, mounted
#   CONF_NAME      the conflist's file name
#   REQUIRE        plugins chained after enipool-cni that must already exist in HOST_BIN_DIR
set -eu

: "${PLUGIN:?}" "${CONFLIST:?}" "${HOST_BIN_DIR:?}" "${HOST_CONF_DIR:?}" "${CONF_NAME:?}"

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

tmp="$HOST_CONF_DIR/.$CONF_NAME.tmp.$$"
cp "$CONFLIST" "$tmp"
chmod 0644 "$tmp"
mv -f "$tmp" "$HOST_CONF_DIR/$CONF_NAME"

echo "install-cni: installed $HOST_BIN_DIR/enipool-cni and $HOST_CONF_DIR/$CONF_NAME"
