#!/usr/bin/env bash
# A local control plane for the demo: etcd and kube-apiserver v1.20.2 on loopback
# (the same parts the end-to-end tests use), state in .demo/.
#   hack/control-plane.sh start   # prints the kubeconfig path
#   hack/control-plane.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="$PWD/.demo"
API_PORT="${CERTSHIFT_DEMO_API_PORT:-36443}"
ETCD_PORT="${CERTSHIFT_DEMO_ETCD_PORT:-32379}"

stop() {
  for name in operator apiserver etcd; do
    if [ -f "$DIR/$name.pid" ]; then
      kill "$(cat "$DIR/$name.pid")" 2>/dev/null || true
      rm -f "$DIR/$name.pid"
    fi
  done
}

start() {
  local apiserver
  apiserver="$(hack/kube-apiserver.sh)"
  stop
  rm -rf "$DIR/etcd" "$DIR/certs"
  mkdir -p "$DIR/certs"
  [ -f "$DIR/sa.key" ] || openssl genrsa -out "$DIR/sa.key" 2048 2>/dev/null
  echo "certshift-demo-admin,admin,admin,\"system:masters\"" > "$DIR/tokens.csv"
  nohup etcd --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "default=http://127.0.0.1:$((ETCD_PORT + 1))" > "$DIR/etcd.log" 2>&1 &
  echo $! > "$DIR/etcd.pid"
  nohup "$apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
    --cert-dir="$DIR/certs" --service-cluster-ip-range=10.0.0.0/24 \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$DIR/sa.key" --service-account-signing-key-file="$DIR/sa.key" \
    --token-auth-file="$DIR/tokens.csv" --authorization-mode=RBAC --endpoint-reconciler-type=none \
    --disable-admission-plugins=ServiceAccount > "$DIR/apiserver.log" 2>&1 &
  echo $! > "$DIR/apiserver.pid"
  cat > "$DIR/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority: "$DIR/certs/apiserver.crt"}
  name: certshift-demo
users:
- name: admin
  user: {token: certshift-demo-admin}
contexts:
- context: {cluster: certshift-demo, user: admin, namespace: default}
  name: certshift-demo
current-context: certshift-demo
KUBECONFIG
  for _ in $(seq 1 120); do
    # kube-apiserver writes its self-signed serving certificate (and the CA
    # that signed it) to --cert-dir before it listens; clients verify with it.
    if [ -f "$DIR/certs/apiserver.crt" ] && curl -s --cacert "$DIR/certs/apiserver.crt" \
        -H "Authorization: Bearer certshift-demo-admin" "https://127.0.0.1:$API_PORT/readyz" 2>/dev/null | grep -qx ok; then
      echo "$DIR/kubeconfig"
      return 0
    fi
    sleep 0.5
  done
  echo "kube-apiserver did not become ready; see $DIR/apiserver.log" >&2
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
