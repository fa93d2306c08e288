#!/usr/bin/env bash
# The test node's images, made without a registry (hack/image.py), into DIR:
#   local/pause:1      the pod sandbox (a static pause written here)
#   local/busybox:1    Debian's busybox-static: httpd and sh for member backends
#   local/certshift:1  the release binary, laid out as the Dockerfile's image
#                      (/usr/local/bin/certshift, user 65532, `run`), with the
#                      shared libraries it links
#   local/certshift-shell:1  the same binary with busybox: an agent image
#                      with a shell, for `--reload-exec`
#   local/curl:1       Debian's curl with busybox: a client nobody manages
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/common.sh
DIR="${1:?usage: hack/images.sh DIR}"
mkdir -p "$DIR"
cat > "$DIR/pause.c" <<'C'
#include <signal.h>
#include <unistd.h>
#include <sys/wait.h>
static void quit(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
  struct sigaction q = {0}, r = {0};
  q.sa_handler = quit; sigaction(SIGINT, &q, NULL); sigaction(SIGTERM, &q, NULL);
  r.sa_handler = reap; r.sa_flags = SA_NOCLDSTOP; sigaction(SIGCHLD, &r, NULL);
  for (;;) pause();
}
C
gcc -Os -static -o "$DIR/pause" "$DIR/pause.c"
python3 hack/image.py "$DIR/pause.tar" docker.io/local/pause:1 --entrypoint '["/pause"]' "$DIR/pause:/pause"
python3 hack/image.py "$DIR/busybox.tar" docker.io/local/busybox:1 --entrypoint '["/bin/sh"]' --busybox

cargo build -q --release -p certshift
target="${CARGO_TARGET_DIR:-target}"
python3 hack/image.py "$DIR/certshift.tar" docker.io/local/certshift:1 --entrypoint '["/usr/local/bin/certshift"]' \
  --cmd '["run"]' --user 65532:65532 "$target/release/certshift:/usr/local/bin/certshift"
python3 hack/image.py "$DIR/certshift-shell.tar" docker.io/local/certshift-shell:1 --busybox \
  --entrypoint '["/usr/local/bin/certshift"]' --cmd '["agent"]' --user 65532:65532 \
  "$target/release/certshift:/usr/local/bin/certshift"
curl="$(command -v curl)" || { echo "images.sh: no curl (hack/node.sh prepare installs it)" >&2; exit 1; }
python3 hack/image.py "$DIR/curl.tar" docker.io/local/curl:1 --entrypoint '["/bin/sh"]' --busybox "$curl"
