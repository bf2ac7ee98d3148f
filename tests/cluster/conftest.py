"""The cluster lane's modules (marker `cluster_lane`) start real multi-node Ray clusters, so they
run only when selected with `-m cluster_lane` (scripts/test_cluster_lane.sh) and are skipped as a
whole, before any cluster starts, otherwise."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", autouse=True)
def cluster_lane_opt_in(request):
    selected = "cluster_lane" in (request.config.getoption("markexpr") or "")
    if request.node.get_closest_marker("cluster_lane") and not selected:
        pytest.skip("cluster lane: run with -m cluster_lane (scripts/test_cluster_lane.sh)")
