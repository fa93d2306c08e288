"""Lints and renders charts/certshift with Helm's own engine (helm-python-sdk).

Usage: chart.py OUT_DIR
Writes OUT_DIR/default.yaml (cluster-wide, leader election on, the release the
end-to-end tests install), OUT_DIR/single-namespace.yaml (most values set),
OUT_DIR/crds-not-kept.yaml and OUT_DIR/node.yaml (the release on the test node,
hack/node.sh); refuses values values.schema.json does not admit; fails on any lint
error or when the chart's copy of the CRDs differs from crds/.
"""
import pathlib
import sys

import helm_python

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "certshift"
RELEASE, NAMESPACE = "certshift", "certshift-system"


def main(out: pathlib.Path) -> int:
    if (CHART / "files" / "crds.yaml").read_text() != (ROOT / "crds" / "certshift.io.yaml").read_text():
        print("charts/certshift/files/crds.yaml differs from crds/: run make crds", file=sys.stderr)
        return 1
    report = helm_python.lint(str(CHART), strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report["errors"]]
    for message in report["messages"]:
        print(f"lint: {message}")
    if problems:
        print(f"helm lint failed: {problems}", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    chart = helm_python.Chart.load(str(CHART))
    variants = {
        "default.yaml": {"leaderElection": {"enabled": True}},
        "single-namespace.yaml": {"watchNamespace": "team-a", "crds": {"install": True},
                                  "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
                                  "podDisruptionBudget": {"enabled": True}, "fullnameOverride": "cs",
                                  "imagePullSecrets": [{"name": "registry"}],
                                  "serviceAccount": {"annotations": {"example.com/identity": "certshift"}}},
        # CRDs templated and left to go with the release (tests/tests/chart.rs).
        "crds-not-kept.yaml": {"crds": {"install": True, "keep": False}},
        # The test node's release: the image hack/images.sh imports, the
        # member pods' ServiceAccount bound to the agent's role.
        "node.yaml": {"leaderElection": {"enabled": True}, "replicaCount": 2,
                      "image": {"repository": "docker.io/local/certshift", "tag": "1", "pullPolicy": "Never"},
                      "agent": {"rbac": {"events": True,
                                         "bindings": [{"namespace": "node-members", "serviceAccount": "member"}]}}},
    }
    # Values that cannot work are refused when rendering.
    try:
        chart.render({"replicaCount": 2}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    except Exception as err:  # the engine's error names the template and the reason
        if "needs leaderElection.enabled" not in str(err):
            raise
    else:
        print("replicaCount 2 without leader election rendered", file=sys.stderr)
        return 1
    # values.schema.json: Helm refuses values that do not fit it, naming them.
    for wrong, named in [({"replicaCount": "two"}, "replicaCount"), ({"logFormat": "xml"}, "logFormat"),
                         ({"leaderElecton": {"enabled": True}}, "leaderElecton"),
                         ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
                         ({"watchNamespace": "team-a,team-b"}, "watchNamespace"),
                         ({"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
                          "needs metrics.service.enabled")]:
        try:
            chart.render(wrong, name=RELEASE, namespace=NAMESPACE, is_install=True)
        except Exception as err:
            if named not in str(err):
                print(f"values {wrong} refused without naming {named}: {err}", file=sys.stderr)
                return 1
            print(f"refused as it should be: {wrong}: {str(err).splitlines()[0][:160]}")
        else:
            print(f"values {wrong} rendered: values.schema.json does not refuse them", file=sys.stderr)
            return 1
    for file, values in variants.items():
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        documents = [text.strip() for path, text in sorted(rendered.items())
                     if path.endswith(".yaml") and text.strip()]
        (out / file).write_text("\n---\n".join(documents) + "\n")
        print(f"rendered {len(documents)} templates into {out / file}")
    return 0


if __name__ == "__main__":
    sys.exit(main(pathlib.Path(sys.argv[1])))
