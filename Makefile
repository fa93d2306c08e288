# certshift: the two commands of the README's quick start, and helpers.
.PHONY: demo demo-down test lint crds examples bench bench-core bench-agent fuzz

# The main job: a real single-node cluster on this machine, certshift from its
# chart, member pods with the agent, and the Service Fabric conversion walking
# its stages to Ready (left running).
demo:
	hack/demo.sh

demo-down:
	hack/node.sh down

# Everything CI runs: formatting, lints, unit, property and CLI tests.
test:
	hack/test.sh

# The scale benchmark (W1-W4 at 1k, 10k and 30k against floors measured in
# the same run; ~30 min): docs/performance.md. Exits 1 when a target is
# missed, after printing every figure; BENCH_ARGS="--scales 1000 ..." narrows it.
bench:
	CERTSHIFT_KUBE_APISERVER="$$(hack/kube-apiserver.sh)" cargo run --release -p certshift-e2e --bin certshift-bench -- --check $(BENCH_ARGS)

# The core micro-benchmark and its regression check (part of make test).
bench-core:
	cargo bench -p certshift --bench core -- --check

# The agent's inbound proxy against a direct rustls server, reloads under load,
# heap per idle connection (~20 s after the build): docs/performance.md.
bench-agent:
	cargo bench -p certshift --bench agent -- --check

# 10^7 executions per fuzz target, then the corpus is reduced: docs/reliability.md.
fuzz:
	hack/fuzz.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

# Regenerate crds/ from the code.
crds:
	cargo run -q -p certshift -- crds > crds/certshift.io.yaml
	cp crds/certshift.io.yaml charts/certshift/files/crds.yaml

# Regenerate the example certificates and manifests.
examples:
	examples/generate.sh
