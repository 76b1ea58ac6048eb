#!/bin/sh
# Build the libcni driver offline from Debian's packages (golang-1.19-go, golang-github-appc-cni-dev).
# Usage: build.sh <output binary>
set -eu
out=${1:?usage: build.sh <output binary>}
case $out in /*) ;; *) out=$PWD/$out ;; esac
src=$(cd "$(dirname "$0")" && pwd)
go=${GO:-/usr/lib/go-1.19/bin/go}
gopath=$(mktemp -d)
trap 'rm -rf "$gopath"' EXIT
mkdir -p "$gopath/src/enipool-cni-driver"
cp "$src/main.go" "$gopath/src/enipool-cni-driver/"
cd "$gopath/src/enipool-cni-driver"
GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$gopath:/usr/share/gocode" GOCACHE="$gopath/cache" \
  "$go" build -o "$out" .
