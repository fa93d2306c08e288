# certshift: the two commands of the README's quick start, and helpers.
.PHONY: demo demo-down test lint crds examples

# The main job: a local control plane, the operator, and the Service Fabric
# conversion walking its stages to Ready (left running).
demo:
	hack/demo.sh

demo-down:
	hack/control-plane.sh stop

# Everything CI runs: formatting, lints, unit, property and CLI tests.
test:
	hack/test.sh

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
