"""Runs one Helm action on charts/certshift against a cluster, with Helm's own
engine (helm-python-sdk, the virtualenv hack/chart.sh installs): what
`helm install|upgrade|uninstall` do. For the end-to-end tests.

Usage: helm-release.py KUBECONFIG install|upgrade|uninstall RELEASE NAMESPACE [VALUES_JSON]
Prints the release's status as JSON.
"""
import json
import pathlib
import sys

import helm_python

CHART = pathlib.Path(__file__).resolve().parent.parent / "charts" / "certshift"


def main(kubeconfig: str, action: str, release: str, namespace: str, values: str = "{}") -> int:
    config = helm_python.Config(kubeconfig_path=kubeconfig, namespace=namespace)
    if action == "uninstall":
        outcome = config.uninstall(release)
    else:
        chart = helm_python.Chart.load(str(CHART))
        run = config.install if action == "install" else config.upgrade
        outcome = run(chart, release, json.loads(values), namespace=namespace)
    print(json.dumps({"action": action, "info": outcome.get("info") if isinstance(outcome, dict) else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
