# enipool: container images. Everything else is cargo (see README.md and scripts/).
#   make images [ENGINE=buildah|docker|podman] [REGISTRY=ghcr.io/enipool] [TAG=0.1.0]
# scripts/build-images does the work: it builds the binaries and then the images from
# images/*.Containerfile. With a docker daemon or podman that answers, the images go into that
# engine's store on the Containerfiles' default (pulled) bases; without one, buildah builds them
# on bases made here by debootstrap and writes OCI archives to target/images/ (see images/README.md).
REGISTRY ?= ghcr.io/enipool
TAG ?= $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}/\1/p' charts/enipool/Chart.yaml)
# The first engine whose daemon/service answers; a docker client without a daemon does not count.
ENGINE ?= $(shell if docker info >/dev/null 2>&1; then echo docker; \
	elif podman info >/dev/null 2>&1; then echo podman; else echo buildah; fi)

.PHONY: images

images:
	scripts/build-images --engine "$(ENGINE)" --registry "$(REGISTRY)" --tag "$(TAG)"
