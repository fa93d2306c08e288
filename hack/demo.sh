#!/usr/bin/env bash
# The main job: a local control plane, the CRDs, the operator, and the Service
# Fabric conversion of examples/conversion walking its stages to Ready. Leaves
# everything running; `make demo-down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/common.sh
command -v kubectl >/dev/null || { echo "kubectl is needed for the demo" >&2; exit 1; }
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl; }

echo "== Building certshift"
cargo build -q -p certshift
bin="$PWD/target/debug/certshift"
[ -x "$bin" ] || bin="${CARGO_TARGET_DIR:-target}/debug/certshift"

echo "== Starting etcd and kube-apiserver on loopback (the first run builds kube-apiserver: ~5 min)"
KUBECONFIG="$(hack/control-plane.sh start)"
export KUBECONFIG

echo "== Installing the CRDs"
kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null

echo "== Starting the operator (log: .demo/operator.log, metrics: http://127.0.0.1:38080/metrics)"
nohup "$bin" run --kubeconfig "$KUBECONFIG" --metrics-addr 127.0.0.1:38080 > .demo/operator.log 2>&1 &
echo $! > .demo/operator.pid

echo "== The store and the declaration by thumbprint"
kubectl apply -f examples/conversion/store.yaml -f examples/conversion/declaration-thumbprint.yaml
kubectl wait --for=condition=Ready ccd/cluster --timeout=60s >/dev/null
kubectl get ccd,ocert

echo
echo "== Editing the declaration to common name with the CA pinned (one kubectl apply)"
kubectl apply -f examples/conversion/declaration-common-name.yaml
echo
printf "%-8s %-26s %-20s %-9s %-10s %-8s %s\n" TIME DECLARED-BY STAGE REVISION PRESENTING MEMBERS READY
last=""
for _ in $(seq 1 240); do
  row="$(kubectl get ccd cluster -o jsonpath='{.status.declaredBy} {.status.upgrade.stage} {.status.upgrade.revision} {.status.presenting.shortThumbprint} {.status.members.summary} {.status.conditions[?(@.type=="Ready")].status}')"
  read -r by stage revision presenting members ready <<<"$(echo "$row" | awk '{ if (NF == 5) print $1, "-", $2, $3, $4, $5; else print }')"
  line="$(printf "%-26s %-20s %-9s %-10s %-8s %s" "$by" "$stage" "$revision" "$presenting" "$members" "$ready")"
  if [ "$line" != "$last" ]; then
    printf "%-8s %s\n" "$(date +%T)" "$line"
    last="$line"
  fi
  if [ "$ready" = "True" ] && [ "$by" = "CommonName" ]; then break; fi
  sleep 0.5
done
echo
"$bin" status cluster --kubeconfig "$KUBECONFIG"
echo
echo "The control plane and the operator keep running. Try:"
echo "  export KUBECONFIG=$KUBECONFIG"
echo "  kubectl get ccd,ocert,cpol"
echo "Stop everything with: make demo-down"
