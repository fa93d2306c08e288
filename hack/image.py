#!/usr/bin/env python3
"""Writes a one-layer image as a docker-archive (what `docker save` writes),
with no registry and no daemon, for `ctr images import` on the test node.

usage: image.py OUT.tar REF --entrypoint JSON [--cmd JSON] [--user UID:GID]
                [--busybox] FILE[:DEST] ...

Each FILE goes to DEST (default: the same absolute path) with the shared
libraries `ldd` names for it, so a dynamically linked binary runs as is.
--busybox adds /bin/busybox and its applets' links (Debian's busybox-static).
"""
import argparse, hashlib, io, json, subprocess, tarfile

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("ref")
parser.add_argument("--entrypoint", required=True)
parser.add_argument("--cmd", default="[]")
parser.add_argument("--user", default="0:0")
parser.add_argument("--busybox", action="store_true")
parser.add_argument("files", nargs="*")
args = parser.parse_intermixed_args()

entries = {}  # path in the image -> (kind, payload, mode)


def add_dir(path, mode=0o755):
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        entries.setdefault("/".join(parts[:i]), ("dir", None, mode))


def add_file(src, dest, mode=None):
    dest = dest.lstrip("/")
    add_dir("/".join(dest.split("/")[:-1]))
    data = open(src, "rb").read()
    entries[dest] = ("file", data, mode if mode is not None else 0o755)


def add_text(dest, text, mode=0o644):
    add_dir("/".join(dest.split("/")[:-1]))
    entries[dest] = ("file", text.encode(), mode)


def libraries(binary):
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            yield parts[2]
        elif parts and parts[0].startswith("/"):
            yield parts[0]


for d in ("etc", "root", "proc", "sys", "dev", "var/run", "home/nonroot"):
    add_dir(d)
entries["tmp"] = ("dir", None, 0o1777)
add_text("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
add_text("etc/group", "root:x:0:\nnonroot:x:65532:\n")
if args.busybox:
    add_file("/bin/busybox", "bin/busybox")
    for applet in subprocess.check_output(["/bin/busybox", "--list"]).decode().split():
        if applet != "busybox":
            entries["bin/" + applet] = ("link", "busybox", 0o777)
for spec in args.files:
    src, _, dest = spec.partition(":")
    add_file(src, dest or src)
    for lib in libraries(src):
        add_file(lib, lib, 0o755)

layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w", format=tarfile.GNU_FORMAT) as tar:
    for path in sorted(entries):
        kind, payload, mode = entries[path]
        info = tarfile.TarInfo(path)
        info.mode, info.mtime = mode, 0
        if kind == "dir":
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        elif kind == "link":
            info.type, info.linkname = tarfile.SYMTYPE, payload
            tar.addfile(info)
        else:
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
layer = layer.getvalue()
diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
config = {
    "architecture": "amd64",
    "os": "linux",
    "created": "1970-01-01T00:00:00Z",
    "config": {
        "Entrypoint": json.loads(args.entrypoint),
        "Cmd": json.loads(args.cmd) or None,
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
        "User": args.user,
        "WorkingDir": "/",
    },
    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "hack/image.py"}],
}
blob = json.dumps(config, sort_keys=True).encode()
config_name = hashlib.sha256(blob).hexdigest() + ".json"
manifest = [{"Config": config_name, "RepoTags": [args.ref], "Layers": ["layer/layer.tar"]}]
with tarfile.open(args.out, "w") as tar:
    for name, data in ((config_name, blob), ("layer/layer.tar", layer), ("manifest.json", json.dumps(manifest).encode())):
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tar.addfile(info, io.BytesIO(data))
print(f"{args.out}: {args.ref} ({len(layer) // 1024} KiB)")
