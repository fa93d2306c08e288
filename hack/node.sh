#!/usr/bin/env bash
# A real single-node cluster on this machine: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kube-proxy and the kubelet v1.20.2
# (hack/kubernetes.sh), containerd, runc and the CNI bridge from Debian, and
# images made without a registry (hack/images.sh). docs/development.md.
#
#   hack/node.sh prepare  installs the packages, builds the binaries and images
#   hack/node.sh up     starts it (state in $CERTSHIFT_NODE_DIR, default .node/),
#                       prints the admin kubeconfig's path
#   hack/node.sh restart-kubelet   stops the kubelet and starts it again
#   hack/node.sh restart-apiserver [SECONDS]   stops kube-apiserver, starts it
#                       again after SECONDS (15)
#   hack/node.sh down   stops everything up started and undoes what it changed
#                       (mounts, bridge, iptables rules, sysctls, cgroups)
#
# No packet leaves the machine: everything listens on loopback or on the pod
# bridge's own address (10.88.0.1, which only this machine and its pods
# reach), and before the first pod a mangle rule drops any packet from the
# pod network that would leave by another interface, and any packet still
# addressed to the service range (not translated by kube-proxy).
set -euo pipefail
cd "$(dirname "$0")/.."
STATE="${CERTSHIFT_NODE_DIR:-$PWD/.node}"
R="$STATE/run"
NODE=certshift-node
BRIDGE=certshift0
NODE_IP=10.88.0.1
POD_CIDR=10.88.0.0/16
SVC_CIDR=10.0.0.0/24
SVC_IP=10.0.0.1
SOCK=/run/certshift-containerd/containerd.sock
GUARD=CERTSHIFT-NODE-GUARD
log() { echo "node.sh: $(date +%T) $*" >&2; }
K() { kubectl --kubeconfig "$R/admin.kubeconfig" --request-timeout=10s "$@"; }
pid_of() { awk -v n="$1" '$1==n{print $2}' "$STATE/pids" 2>/dev/null; }
rec() { echo "$1 $2" >> "$STATE/pids"; }
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    # containerd's package would start its service: not here.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
    rm -f /usr/sbin/policy-rc.d
  fi
}

guard_in_place() {
  iptables -t mangle -S POSTROUTING 2>/dev/null | head -2 | grep -q -- "-j $GUARD"
}

BINARIES=(kube-apiserver kubelet kube-controller-manager kube-scheduler kube-proxy)

# Packages, binaries and images (the images again each time: they carry
# the current certshift).
prepare() {
  apt_install etcd-server containerd runc containernetworking-plugins iptables conntrack busybox-static gcc curl
  hack/kubernetes.sh "${BINARIES[@]}" >/dev/null
  hack/images.sh "$STATE/images" >&2
}

start_kubelet() {
  setsid "$1/kubelet" --config="$R/kubelet.yaml" --kubeconfig="$R/kubelet.kubeconfig" --root-dir="$R/kubelet" \
    --cert-dir="$R/kubelet/pki" --container-runtime=remote --container-runtime-endpoint="unix://$SOCK" \
    --node-ip="$NODE_IP" --hostname-override="$NODE" --v=1 >> "$R/logs/kubelet.log" 2>&1 &
  rec kubelet $!
}

# kube-apiserver on the node's address (ports from $R/env), waited for.
start_apiserver() {
  local api_port etcd_port
  api_port="$(sed -n 's/.*API_PORT=\([0-9]*\).*/\1/p' "$R/env")"
  etcd_port="$(sed -n 's/.*ETCD_PORT=\([0-9]*\).*/\1/p' "$R/env")"
  setsid "$1/kube-apiserver" --etcd-servers="http://127.0.0.1:$etcd_port" --secure-port="$api_port" \
    --bind-address="$NODE_IP" --advertise-address="$NODE_IP" \
    --tls-cert-file="$R/pki/apiserver.crt" --tls-private-key-file="$R/pki/apiserver.key" \
    --client-ca-file="$R/pki/ca.crt" --service-cluster-ip-range="$SVC_CIDR" \
    --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$R/pki/sa.key" \
    --service-account-signing-key-file="$R/pki/sa.key" --token-auth-file="$R/tokens.csv" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --kubelet-client-certificate="$R/pki/kubelet-client.crt" --kubelet-client-key="$R/pki/kubelet-client.key" \
    --audit-log-path="$R/logs/audit.log" --audit-policy-file="$R/audit-policy.yaml" \
    --kubelet-preferred-address-types=InternalIP --allow-privileged=true >> "$R/logs/kube-apiserver.log" 2>&1 &
  rec kube-apiserver $!
  for i in $(seq 120); do
    curl -sf --cacert "$R/pki/ca.crt" -H "Authorization: Bearer admin-token" "https://$NODE_IP:$api_port/readyz" >/dev/null 2>&1 && break
    sleep 0.5
    [ "$i" = 120 ] && { log "kube-apiserver not ready: $R/logs/kube-apiserver.log"; exit 1; }
  done
}

# Stops one recorded process (NAME) and forgets it, for a restart.
stop_for_restart() {
  local pid
  pid="$(pid_of "$1")"
  [ -n "$pid" ] || { log "not up"; exit 1; }
  kill "$pid"
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  sed -i "/^$1 /d" "$STATE/pids"
}

# kube-apiserver stopped, left down for SECONDS (default 15), started again
# (etcd keeps the data): an outage as long as a control-plane upgrade's.
restart_apiserver() {
  stop_for_restart kube-apiserver
  sleep "${1:-15}"
  start_apiserver "$(hack/kubernetes.sh "${BINARIES[@]}")"
  log "kube-apiserver restarted"
}

# The kubelet stopped and started again (pods keep running in containerd).
restart_kubelet() {
  stop_for_restart kubelet
  start_kubelet "$(hack/kubernetes.sh "${BINARIES[@]}")"
  log "kubelet restarted"
}

up() {
  [ -s "$STATE/pids" ] && { log "already up ($STATE/pids); hack/node.sh down first"; exit 1; }
  command -v containerd >/dev/null && [ -s "$STATE/images/certshift.tar" ] ||
    { log "not prepared: run hack/node.sh prepare (hack/test.sh does)"; exit 1; }
  # Under 2 % free the kubelet reports DiskPressure (evictionHard: 1 %, and
  # the pods' images and logs take the rest) and no pod starts: say so now
  # rather than let a test time out waiting for one.
  local avail size
  read -r avail size < <(df --output=avail,size -k "$(dirname "$STATE")" | tail -1)
  if [ $((avail * 100 / size)) -lt 2 ]; then
    log "$((avail / 1048576)) GiB free of $((size / 1048576)) GiB under $STATE: the node would report DiskPressure and start no pod; free some space"
    exit 1
  fi
  local bin
  bin="$(hack/kubernetes.sh "${BINARIES[@]}")"
  mkdir -p "$STATE"
  rm -rf "$R"
  mkdir -p "$R/pki" "$R/logs" "$(dirname "$SOCK")"
  : > "$STATE/pids"
  # The kubelet's pod logs live outside the state: down removes the new ones.
  mkdir -p /var/log/pods
  ls /var/log/pods > "$R/pod-logs.before"

  # What this changes on the host, for down.
  for k in net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables vm.overcommit_memory vm.panic_on_oom \
           kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes; do
    v="$(sysctl -n "$k" 2>/dev/null)" && echo "$k=$v"
  done > "$R/sysctl.before"

  # The pod bridge first, with the node's address: the API server and the
  # kubelet listen there, and the guard is in place before any pod exists.
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip addr replace "$NODE_IP/16" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  modprobe br_netfilter 2>/dev/null || true
  iptables -t mangle -N "$GUARD" 2>/dev/null || iptables -t mangle -F "$GUARD"
  iptables -t mangle -A "$GUARD" -s "$POD_CIDR" -o "$BRIDGE" -j RETURN
  iptables -t mangle -A "$GUARD" -s "$POD_CIDR" -o lo -j RETURN
  iptables -t mangle -A "$GUARD" -s "$POD_CIDR" -j DROP
  iptables -t mangle -A "$GUARD" -d "$SVC_CIDR" -j DROP
  iptables -t mangle -C POSTROUTING -j "$GUARD" 2>/dev/null || iptables -t mangle -I POSTROUTING 1 -j "$GUARD"
  guard_in_place || { log "the egress guard is not first in mangle POSTROUTING"; exit 1; }

  (
    cd "$R/pki"
    cat > openssl.cnf <<EOF
[req]
distinguished_name = dn
[dn]
[server]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local, DNS:localhost, IP:127.0.0.1, IP:$SVC_IP, IP:$NODE_IP
[client]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
EOF
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 7 -subj /CN=certshift-node-ca 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 7 -out apiserver.crt \
      -extfile openssl.cnf -extensions server 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout kubelet-client.key -out kubelet-client.csr \
      -subj /CN=kube-apiserver-kubelet-client 2>/dev/null
    openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 7 -out kubelet-client.crt \
      -extfile openssl.cnf -extensions client 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
  )
  cat > "$R/tokens.csv" <<EOF
admin-token,admin,admin,system:masters
kubelet-token,system:node:$NODE,kubelet,system:nodes
kcm-token,system:kube-controller-manager,kcm
scheduler-token,system:kube-scheduler,scheduler
proxy-token,system:kube-proxy,proxy
EOF
  local etcd_port peer_port api_port
  etcd_port=$(freeport) peer_port=$(freeport) api_port=$(freeport)
  echo "API_PORT=$api_port NODE_IP=$NODE_IP NODE=$NODE ETCD_PORT=$etcd_port" > "$R/env"
  for who in admin kubelet kcm scheduler proxy; do
    cat > "$R/$who.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- cluster: {server: "https://$NODE_IP:$api_port", certificate-authority: "$R/pki/ca.crt"}
  name: node
users:
- name: $who
  user: {token: $who-token}
contexts:
- context: {cluster: node, user: $who}
  name: node
current-context: node
EOF
  done

  # Who writes what: the node tests read the writers off this log.
  cat > "$R/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: Metadata
  verbs: [create, update, patch, delete]
EOF
  setsid etcd --data-dir "$R/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "default=http://127.0.0.1:$peer_port" > "$R/logs/etcd.log" 2>&1 &
  rec etcd $!
  start_apiserver "$bin"
  K create clusterrolebinding certshift-node-apiserver-kubelet --clusterrole=system:kubelet-api-admin \
    --user=kube-apiserver-kubelet-client >/dev/null

  setsid "$bin/kube-controller-manager" --kubeconfig="$R/kcm.kubeconfig" --use-service-account-credentials=true \
    --service-account-private-key-file="$R/pki/sa.key" --root-ca-file="$R/pki/ca.crt" \
    --cluster-signing-cert-file="$R/pki/ca.crt" --cluster-signing-key-file="$R/pki/ca.key" \
    --leader-elect=false --port=0 --secure-port=0 --controllers='*' --v=1 > "$R/logs/kube-controller-manager.log" 2>&1 &
  rec kube-controller-manager $!
  setsid "$bin/kube-scheduler" --kubeconfig="$R/scheduler.kubeconfig" --leader-elect=false --port=0 --secure-port=0 \
    --v=1 > "$R/logs/kube-scheduler.log" 2>&1 &
  rec kube-scheduler $!

  mkdir -p "$R/cni/net.d"
  cat > "$R/cni/net.d/10-certshift.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "certshift",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$R/cni/ipam", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  cat > "$R/containerd.toml" <<EOF
version = 2
root = "$R/containerd/root"
state = "$(dirname "$SOCK")/state"
[grpc]
  address = "$SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/local/pause:1"
  stream_server_address = "127.0.0.1"
  # Root here lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj below
  # containerd's own (the pause container asks for -998).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$R/cni/net.d"
EOF
  setsid containerd --config "$R/containerd.toml" > "$R/logs/containerd.log" 2>&1 &
  rec containerd $!
  for i in $(seq 60); do ctr --address "$SOCK" version >/dev/null 2>&1 && break; sleep 0.5; done
  for image in "$STATE"/images/*.tar; do
    ctr --address "$SOCK" -n k8s.io images import "$image" >/dev/null
  done

  mkdir -p "$R/kubelet"
  cat > "$R/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$R/pki/ca.crt"}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
failSwapOn: false
# The default (-999) needs CAP_SYS_RESOURCE.
oomScoreAdj: 0
# Secret and ConfigMap volumes follow within about this (plus jitter).
syncFrequency: ${CERTSHIFT_NODE_SYNC:-2s}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
clusterDomain: cluster.local
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
# Local images have no registry to come back from.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
  start_kubelet "$bin"
  setsid "$bin/kube-proxy" --kubeconfig="$R/proxy.kubeconfig" --hostname-override="$NODE" --proxy-mode=iptables \
    --cluster-cidr="$POD_CIDR" --conntrack-max-per-core=0 --bind-address=127.0.0.1 \
    --healthz-bind-address=127.0.0.1:10256 --metrics-bind-address=127.0.0.1:10249 --v=1 > "$R/logs/kube-proxy.log" 2>&1 &
  rec kube-proxy $!

  for i in $(seq 240); do
    [ "$(K get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ] && break
    sleep 0.5
    [ "$i" = 240 ] && { log "node not Ready after 120 s: $R/logs/kubelet.log"; exit 1; }
  done
  for i in $(seq 120); do
    iptables -t nat -S KUBE-SERVICES 2>/dev/null | grep -q "$SVC_IP/32" && break
    sleep 0.5
    [ "$i" = 120 ] && { log "kube-proxy has no rule for $SVC_IP: $R/logs/kube-proxy.log"; exit 1; }
  done
  for i in $(seq 120); do
    K get serviceaccount default -o jsonpath='{.secrets[0].name}' 2>/dev/null | grep -q . && break
    sleep 0.5
  done
  guard_in_place || { log "the egress guard was moved from the head of mangle POSTROUTING"; exit 1; }
  log "node $NODE Ready; API server https://$NODE_IP:$api_port"
  echo "$R/admin.kubeconfig"
}

stop() {
  local pid
  pid="$(pid_of "$1")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  log "$1 ($pid) did not stop on TERM; KILL"
  kill -9 "$pid" 2>/dev/null || true
}

down() {
  set +e
  [ -s "$STATE/pids" ] || { log "not up"; return 0; }
  # Let the kubelet tear the pods down (CNI DEL, volumes unmounted) first.
  if kill -0 "$(pid_of kubelet)" 2>/dev/null; then
    K delete deployments,replicasets,daemonsets,statefulsets,jobs --all --all-namespaces --wait=false >/dev/null 2>&1
    K delete pods --all --all-namespaces --grace-period=1 --wait=false >/dev/null 2>&1
    for _ in $(seq 60); do
      [ -z "$(K get pods --all-namespaces -o name 2>/dev/null)" ] &&
        [ -z "$(ctr --address "$SOCK" -n k8s.io tasks ls -q 2>/dev/null)" ] && break
      sleep 1
    done
  fi
  stop kubelet
  stop kube-proxy
  if kill -0 "$(pid_of containerd)" 2>/dev/null; then
    local c="ctr --address $SOCK -n k8s.io"
    for t in $($c tasks ls -q 2>/dev/null); do $c tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
    sleep 1
    for t in $($c tasks ls -q 2>/dev/null); do $c tasks delete -f "$t" >/dev/null 2>&1; done
    for t in $($c containers ls -q 2>/dev/null); do $c containers rm "$t" >/dev/null 2>&1; done
  fi
  stop kube-scheduler
  stop kube-controller-manager
  stop containerd
  stop kube-apiserver
  stop etcd
  # Mounts under the state (Secret tmpfs, overlay roots) and the pods' netns, deepest first.
  for m in $(awk '{print $5}' /proc/self/mountinfo | grep -E "^($R|$(dirname "$SOCK")|/run/netns/cni-)" | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
  done
  rm -f /run/netns/cni-* 2>/dev/null
  ip link del "$BRIDGE" 2>/dev/null
  # kube-proxy's and the kubelet's chains, then the guard.
  for t in filter nat mangle; do
    iptables -t "$t" -S 2>/dev/null | grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j KUBE-' |
      sed 's/^-A/-D/' | while read -r rule; do eval iptables -t "$t" "$rule" 2>/dev/null; done
    for chain in $(iptables -t "$t" -S 2>/dev/null | awk '/^-N KUBE-/{print $2}'); do iptables -t "$t" -F "$chain" 2>/dev/null; done
    for chain in $(iptables -t "$t" -S 2>/dev/null | awk '/^-N KUBE-/{print $2}'); do iptables -t "$t" -X "$chain" 2>/dev/null; done
  done
  iptables -t nat -S POSTROUTING 2>/dev/null | grep -E "CNI-" | sed 's/^-A/-D/' | while read -r rule; do eval iptables -t nat "$rule"; done
  for chain in $(iptables -t nat -S 2>/dev/null | awk '/^-N CNI-/{print $2}'); do iptables -t nat -F "$chain"; iptables -t nat -X "$chain"; done
  for chain in $(iptables -t filter -S 2>/dev/null | awk '/^-N CNI-/{print $2}'); do
    iptables -t filter -S FORWARD | grep -- "-j $chain" | sed 's/^-A/-D/' | while read -r rule; do eval iptables "$rule"; done
    iptables -t filter -F "$chain"; iptables -t filter -X "$chain"
  done
  iptables -t mangle -D POSTROUTING -j "$GUARD" 2>/dev/null
  iptables -t mangle -F "$GUARD" 2>/dev/null
  iptables -t mangle -X "$GUARD" 2>/dev/null
  [ -f "$R/sysctl.before" ] && while IFS= read -r kv; do sysctl -q -w "$kv" >/dev/null 2>&1; done < "$R/sysctl.before"
  for c in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/k8s.io; do
    [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  rm -rf "$(dirname "$SOCK")"
  if [ -f "$R/pod-logs.before" ]; then
    for d in /var/log/pods/*; do
      [ -e "$d" ] && ! grep -qxF "$(basename "$d")" "$R/pod-logs.before" && rm -rf "$d"
    done
    find /var/log/containers -xtype l -delete 2>/dev/null
  fi
  rm -f "$STATE/pids"
  log "down; logs kept in $R/logs"
}

case "${1:-}" in
  prepare) prepare ;;
  up) up ;;
  restart-kubelet) restart_kubelet ;;
  restart-apiserver) restart_apiserver "${2:-15}" ;;
  down) down ;;
  *) echo "usage: hack/node.sh prepare|up|restart-kubelet|restart-apiserver [SECONDS]|down" >&2; exit 2 ;;
esac
