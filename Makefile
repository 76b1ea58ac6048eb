# enipool: container images. Everything else is cargo (see README.md and scripts/).
#   make images [ENGINE=docker|podman] [REGISTRY=ghcr.io/enipool] [TAG=0.1.0]
REGISTRY ?= ghcr.io/enipool
TAG ?= $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}/\1/p' charts/enipool/Chart.yaml)
# The first engine whose daemon/service answers; a docker client without a daemon does not count.
ENGINE ?= $(shell if docker info >/dev/null 2>&1; then echo docker; \
	elif podman info >/dev/null 2>&1; then echo podman; fi)
IMAGES := operator agent cni

.PHONY: images $(addprefix image-,$(IMAGES))

images: $(addprefix image-,$(IMAGES))

$(addprefix image-,$(IMAGES)): image-%:
	@if [ -z "$(ENGINE)" ]; then \
	  echo "make images: no working container engine (need a running docker daemon or podman)." >&2; \
	  echo "  This machine cannot build images; the Dockerfiles are in images/ and e2e/runner/tests/chart.rs checks them." >&2; \
	  exit 2; \
	fi
	$(ENGINE) build -f images/$*.Dockerfile -t $(REGISTRY)/enipool-$*:$(TAG) \
	  --build-arg ENIPOOL_GIT_COMMIT=$$(git rev-parse HEAD 2>/dev/null) .
