# complaints-allocation: the same commands locally and in CI (.ci/run calls `make ci`).
#   make demo        the main job on the embedded local stack (Kafka + Redis started for you)
#   make test        every test tier against the real local stack (started for you), plus lint and types
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
STACK := scripts/stack.sh
K8S := scripts/k8s.sh
# The images `make images` builds and tests/k8s checks, and loads into the test cluster's containerd (the trainer's
# torch makes it ~8.6 GB: loading it takes ~3.3 min, for the retraining Job test).
IMAGES ?= consumer explainer trainer
K8S_IMAGES ?= $(IMAGES)
TOOLS_BIN := $(shell scripts/install-tools.sh --print-bin)
INSTALLED := build/.installed
export PATH := $(TOOLS_BIN):$(PATH)
# tests run with the stack's addresses unless the caller points at other services
WITH_STACK = set -a; source .stack/env; set +a;

.PHONY: install system-deps tools stack-up stack-down images k8s-build k8s-up k8s-down test-k8s lint typecheck chart-check check test test-unit test-integration \
        test-e2e bench bench-accuracy business train demo demo-down ci clean

install: ## Python packages from the hash-pinned lock (the versions the images run), then the project itself
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q --require-hashes -r requirements/dev.lock
	$(PYTHON) -m pip install -q --no-deps -e .
	@mkdir -p build && touch $(INSTALLED)

# `make test` installs only when the lock or the project's metadata changed since the last install
$(INSTALLED): requirements/dev.lock pyproject.toml
	$(MAKE) install

system-deps: ## Debian packages the tests use (redis, prometheus, chromium, Java 17, buildah, containerd, etcd)
	@missing=""; \
	for pair in redis-server:redis-server prometheus:prometheus promtool:prometheus chromium:chromium java:openjdk-17-jre-headless mvn:maven \
	            buildah:buildah mmdebstrap:mmdebstrap containerd:containerd runc:runc etcd:etcd-server iptables:iptables \
	            conntrack:conntrack /usr/lib/cni/bridge:containernetworking-plugins; do \
	  command -v $${pair%%:*} >/dev/null || [ -x "$${pair%%:*}" ] || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

tools: ## helm and kustomize, pinned, built with Go (cached)
	scripts/install-tools.sh

stack-up: ## local Kafka (KRaft) + Redis on 127.0.0.1; addresses in .stack/env
	bash $(STACK) up

stack-down:
	bash $(STACK) down

images: ## the project's images with buildah (no Docker engine), hadolint first; IMAGES="consumer ..." to choose
	scripts/images.sh lint
	scripts/images.sh build $(IMAGES)

k8s-build: ## kube-apiserver, controller-manager, scheduler, kubelet, kube-proxy, kubectl from k8s.io/kubernetes (cached)
	scripts/k8s-build.sh

k8s-up: k8s-build images ## a single-node cluster on containerd + runc, the images loaded; KUBECONFIG in .k8s/env
	bash $(K8S) up
	bash $(K8S) load $(K8S_IMAGES)

k8s-down: ## stops exactly what k8s-up started
	bash $(K8S) down

lint:
	ruff check .
	ruff format --check .

typecheck:
	mypy

chart-check: tools ## helm lint, promtool check/test of the alert rules, dashboards drift check
	scripts/helm.sh check

check: lint typecheck chart-check

test-unit:
	$(PYTHON) -m pytest tests/unit -q

test-integration: stack-up
	$(WITH_STACK) $(PYTHON) -m pytest tests/integration -q

test-e2e: stack-up
	$(WITH_STACK) $(PYTHON) -m pytest tests/e2e -q

test-k8s: k8s-up ## the chart's pods on the single-node cluster
	CA_REQUIRE_SERVICES=1 $(PYTHON) -m pytest tests/k8s -q

# everything the tiers need is installed first (Debian packages: prometheus and chromium for the
# dashboard tests; helm and promtool for the chart checks), so a fresh clone skips no test
test: system-deps $(INSTALLED) tools check stack-up k8s-up ## lint, types, chart checks, then every tier against the real stack and cluster; no tier skips here
	$(WITH_STACK) CA_REQUIRE_SERVICES=1 $(PYTHON) -m pytest tests -q --durations=15

bench: stack-up bench-accuracy ## every benchmark (throughput, SHAP latency, accuracy); ratios side by side
	$(WITH_STACK) $(PYTHON) -m bench.throughput
	$(PYTHON) -m bench.explain

bench-accuracy: ## the default model vs TF-IDF vs the human team on test and holdout (trains it if not cached)
	WANDB_MODE=$${WANDB_MODE:-offline} $(PYTHON) -m bench.accuracy

business: stack-up ## the business case: coverage (bench.automation), throughput, then bench.business; outputs in artifacts/bench/
	mkdir -p artifacts/bench
	WANDB_MODE=$${WANDB_MODE:-offline} $(PYTHON) -m bench.automation --splits val,test,holdout \
	  $(if $(PACKAGE),--package $(PACKAGE)) | tee artifacts/bench/automation.txt
	$(WITH_STACK) $(PYTHON) -m bench.throughput $(if $(PACKAGE),--package $(PACKAGE)) \
	  | tee artifacts/bench/throughput.txt
	$(PYTHON) -m bench.business --automation artifacts/bench/automation.txt \
	  --throughput artifacts/bench/throughput.txt | tee artifacts/bench/business.txt

train: ## a full fine-tune of the default model into artifacts/runs/<version> (OUT=dir to choose)
	WANDB_MODE=$${WANDB_MODE:-offline} $(PYTHON) -m trainer train --config default \
	  $(if $(OUT),--out $(OUT))

demo: ## the whole lifecycle on the local stack (see README)
	$(PYTHON) -m pip show complaints-allocation >/dev/null 2>&1 || $(MAKE) install
	bash $(STACK) up
	$(WITH_STACK) $(PYTHON) -m demo

demo-down:
	-$(PYTHON) -m demo --down
	bash $(STACK) down

ci: system-deps install tools check test

clean:
	rm -rf .stack build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
