#!/usr/bin/env bash
# The main job, on a real single-node cluster on this machine (hack/node.sh:
# kubelet, containerd, controller-manager, scheduler, kube-proxy; needs root):
# certshift installed from its Helm chart (two replicas, leader election),
# three member pods each with the `certshift agent` sidecar in front of a web
# server, and the Service Fabric conversion of examples/conversion walking its
# stages to Ready as the members load and acknowledge each revision. Leaves
# everything running; `make demo-down` stops it and cleans up.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/common.sh
command -v kubectl >/dev/null || { echo "kubectl is needed for the demo" >&2; exit 1; }
NS=node-members

echo "== Preparing the node: Debian packages, Kubernetes v1.20.2 (built once per machine, ~5 min),"
echo "   certshift's release build (a few minutes the first time) and the images"
hack/node.sh down >/dev/null 2>&1 || true
hack/node.sh prepare
hack/chart.sh target/chart >/dev/null
bin="${CARGO_TARGET_DIR:-target}/release/certshift"

echo "== Starting the node (state and logs in .node/run)"
KUBECONFIG="$(hack/node.sh up)"
export KUBECONFIG
kubectl get nodes

echo "== Installing the CRDs and certshift from its chart (2 replicas, leader election)"
kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
kubectl create namespace certshift-system >/dev/null
kubectl create namespace "$NS" >/dev/null
kubectl apply -f target/chart/node.yaml >/dev/null
kubectl -n certshift-system rollout status deployment/certshift --timeout=180s

# The examples, in the members' namespace, with the members declared: the
# pods labelled app=members, each revision gated on their acknowledgements.
with_members() {
  sed "s/namespace: default/namespace: $NS/" "$1" |
    python3 -c 'import sys; t = sys.stdin.read(); print(t.replace("  store:\n", "  members:\n    pods:\n      matchLabels: {app: members}\n  store:\n", 1).replace("healthCheckStableDuration: 5s", "healthCheckStableDuration: 3s"), end="")'
}

echo "== The store and the declaration by thumbprint"
sed "s/namespace: default/namespace: $NS/" examples/conversion/store.yaml | kubectl apply -f - >/dev/null
with_members examples/conversion/declaration-thumbprint.yaml | kubectl apply -f - >/dev/null
kubectl -n "$NS" wait --for=condition=Ready ccd/cluster --timeout=120s >/dev/null

echo "== Three members: busybox httpd behind the certshift agent, outputs in a projected volume"
kubectl -n "$NS" apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: ServiceAccount
metadata: {name: member}
---
apiVersion: v1
kind: Service
metadata: {name: members}
spec:
  selector: {app: members}
  ports: [{name: https, port: 8443}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: members}
spec:
  serviceName: members
  replicas: 3
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: members}}
  template:
    metadata: {labels: {app: members}}
    spec:
      serviceAccountName: member
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: docker.io/local/busybox:1
        imagePullPolicy: Never
        command: [sh, -c, 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www']
      - name: certshift-agent
        image: docker.io/local/certshift:1
        imagePullPolicy: Never
        args: [agent, --dir, /etc/certshift, --inbound, "0.0.0.0:8443=127.0.0.1:8080"]
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        readinessProbe:
          httpGet: {path: /readyz, port: 9090}
          periodSeconds: 1
        volumeMounts: [{name: certshift, mountPath: /etc/certshift, readOnly: true}]
      volumes:
      - name: certshift
        projected:
          sources:
          - secret: {name: cluster-presentation}
          - configMap: {name: cluster-validation}
EOF
kubectl -n "$NS" rollout status statefulset/members --timeout=180s
kubectl -n "$NS" get ccd,ocert,pods

echo
echo "== Editing the declaration to common name with the CA pinned (one kubectl apply)"
with_members examples/conversion/declaration-common-name.yaml | kubectl apply -f - >/dev/null
echo
printf "%-8s %-26s %-20s %-9s %-10s %-8s %s\n" TIME DECLARED-BY STAGE REVISION PRESENTING MEMBERS READY
last=""
for _ in $(seq 1 480); do
  row="$(kubectl -n "$NS" get ccd cluster -o jsonpath='{.status.declaredBy} {.status.upgrade.stage} {.status.upgrade.revision} {.status.presenting.shortThumbprint} {.status.members.summary} {.status.conditions[?(@.type=="Ready")].status}')"
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
kubectl -n "$NS" get pods -o custom-columns='POD:.metadata.name,READY:.status.conditions[?(@.type=="Ready")].status,ACKNOWLEDGED:.metadata.annotations.certshift\.io/observed-revision'
echo
"$bin" status cluster -n "$NS" --kubeconfig "$KUBECONFIG"
echo
echo "== What a GitOps pipeline waits on, and what kubectl explains"
kubectl -n "$NS" wait --for=condition=Ready ccd/cluster --timeout=60s
kubectl get certshift -n "$NS"
kubectl explain ccd.spec.upgrade
echo
echo "The node, certshift and the members keep running. Try:"
echo "  export KUBECONFIG=$KUBECONFIG"
echo "  kubectl -n $NS get ccd,ocert,pods; kubectl -n certshift-system logs deploy/certshift"
echo "Stop everything with: make demo-down"
