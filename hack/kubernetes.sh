#!/usr/bin/env bash
# Builds Kubernetes v1.20.2 commands from Debian bookworm's `kubernetes` source
# package (see docs/development.md), once per machine, into a cache outside the
# repository: `hack/kubernetes.sh kube-apiserver kubelet ...` builds those not
# built yet (in one `make`, so shared packages compile once) and prints the
# directory holding them.
set -euo pipefail

VERSION="1.20.5+really1.20.2-1.1+deb12u1"
CACHE="${CERTSHIFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/certshift}"
DIR="$CACHE/kubernetes-v1.20.2"
export DEBIAN_FRONTEND=noninteractive

log() { echo "kubernetes.sh: $*" >&2; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq >&2
    apt-get install -y -qq "${missing[@]}" >&2
  fi
}

[ $# -gt 0 ] || set -- kube-apiserver
what=()
for cmd in "$@"; do [ -x "$DIR/$cmd" ] || what+=("cmd/$cmd"); done
if [ ${#what[@]} -eq 0 ]; then
  echo "$DIR"
  exit 0
fi

apt_install golang-go rsync make dpkg-dev
if ! grep -rqs "deb-src" /etc/apt/sources.list.d/; then
  log "adding deb-src entries"
  cat > /etc/apt/sources.list.d/certshift-deb-src.sources <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
apt-get update -qq >&2

WORK="$CACHE/build"
rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK"
log "downloading the kubernetes $VERSION source package"
apt-get source --download-only "kubernetes=$VERSION" >&2
dpkg-source -x ./kubernetes_*.dsc src >&2
cd src

R=vendor/github.com/modern-go/reflect2
python3 - "$R" <<'PY'
import re, sys
root = sys.argv[1]
link = open(f"{root}/unsafe_link.go").read()
link, n1 = re.subn(r"func mapiterinit\(rtype unsafe\.Pointer, m unsafe\.Pointer\) \*hiter",
                   "func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer, it *hiter)", link)
link, n2 = re.subn(r"type hiter struct \{.*?\n\}", """type hiter struct {
	key         unsafe.Pointer
	value       unsafe.Pointer
	t           unsafe.Pointer
	h           unsafe.Pointer
	buckets     unsafe.Pointer
	bptr        unsafe.Pointer
	overflow    *[]unsafe.Pointer
	oldoverflow *[]unsafe.Pointer
	startBucket uintptr
	offset      uint8
	wrapped     bool
	B           uint8
	i           uint8
	bucket      uintptr
	checkBucket uintptr
}""", link, flags=re.S)
umap = open(f"{root}/unsafe_map.go").read()
umap, n3 = re.subn(r"return &UnsafeMapIterator\{\n\t\thiter:\s+mapiterinit\(type2\.rtype, \*\(\*unsafe\.Pointer\)\(obj\)\),",
                   "var it hiter\n\tmapiterinit(type2.rtype, *(*unsafe.Pointer)(obj), &it)\n\treturn &UnsafeMapIterator{\n\t\thiter:      &it,", umap)
if (n1, n2, n3) != (1, 1, 1):
    sys.exit(f"reflect2 patch did not apply: {(n1, n2, n3)}")
open(f"{root}/unsafe_link.go", "w").write(link)
open(f"{root}/unsafe_map.go", "w").write(umap)
PY

log "building ${what[*]} (about 5 minutes for one on 2 cores, 7 for the node's four)"
export GOPATH="$PWD/.go" CGO_ENABLED=0 GO111MODULE=off
mkdir -p .go/src/k8s.io
ln -sfn ../../.. .go/src/k8s.io/kubernetes
cd .go/src/k8s.io/kubernetes
make WHAT="${what[*]}" >&2
mkdir -p "$DIR"
for cmd in "${what[@]}"; do
  cp "_output/bin/${cmd#cmd/}" "$DIR/${cmd#cmd/}.tmp"
  mv "$DIR/${cmd#cmd/}.tmp" "$DIR/${cmd#cmd/}"
done
cd "$CACHE"
rm -rf "$WORK"
echo "$DIR"
